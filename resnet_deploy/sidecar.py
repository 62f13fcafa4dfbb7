"""Engine sidecars: the JSON beside every engine, its file-name scheme and the compatibility check.

An engine only runs on the TensorRT version that built it (unless built version-compatible, then
on that version or any later one) and on GPUs of its compute capability (unless built
hardware-compatible for Ampere and later). The check reads the sidecar and refuses a mismatch with
a clear message before anything is deserialized, because TensorRT's own failure is a bare
"magic tag does not match" or a crash.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_json

REQUIRED_FIELDS = ("tensorrt_version", "compute_capability", "precision")
HARDWARE_LEVEL_TAGS = {"ampere_plus": "hwc-ampere+", "same_compute_capability": "hwc-samecc"}


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.+]+", "-", text.lower()).strip("-")


def variant_tags(*, legacy_calibrator: bool = False, strongly_typed: bool = True, dla_core: int | None = None,
                 hardware_compatibility: str | None = None, version_compatible: bool = False) -> list[str]:
    """Name parts for settings that change what an engine is or where it runs (none for the defaults)."""
    tags = ["legacy-calib"] if legacy_calibrator else ([] if strongly_typed else ["weak"])
    if dla_core is not None:
        tags.append(f"dla{dla_core}")
    if hardware_compatibility and hardware_compatibility != "none":
        tags.append(HARDWARE_LEVEL_TAGS[hardware_compatibility])
    if version_compatible:
        tags.append("vc")
    return tags


def engine_file_name(model: str, precision: str, max_batch: int, gpu_name: str, compute_capability: str,
                     trt_version: str, tags: list[str] | tuple[str, ...] = ()) -> str:
    """One scheme for every engine: model, precision (+ variant tags), max batch, GPU and TensorRT version.

    Example: resnet18-w0.25_int8_b256_sm86-nvidia-rtx-a4000_trt10.3.0.engine
    """
    sm = compute_capability.replace(".", "")
    kind = "-".join([precision, *tags])
    return f"{_slug(model)}_{kind}_b{max_batch}_sm{sm}-{_slug(gpu_name)}_trt{trt_version}.engine"


def write_sidecar(engine_path: str | Path, metadata: dict[str, Any]) -> Path:
    return atomic_write_json(sidecar_path(engine_path), metadata)


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The sidecar of `engine_path`; missing, malformed or incomplete sidecars raise `ArtifactError`."""
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ArtifactError(f"{engine_path}: no sidecar {path.name}; engines are only run with the metadata "
                            "written when they were built")
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: malformed JSON: {exc}") from exc
    if not isinstance(sidecar, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(sidecar).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in sidecar]
    if missing:
        raise ArtifactError(f"{path}: sidecar lacks {', '.join(missing)}")
    return sidecar


def _numbers(version: str, parts: int) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1) for parts=3; non-numeric parts end the tuple."""
    numbers = []
    for part in version.split(".")[:parts]:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def _same_version(built: str, runtime: str) -> bool:
    """Same release: '10.3.0' (JetPack's spelling) equals '10.3.0.30'; the build number must match if both give it."""
    a, b = built.split("."), runtime.split(".")
    return a[:len(b)] == b[:len(a)] and len(a) >= 3 and len(b) >= 3


def check_compatible(sidecar: dict[str, Any], runtime_trt_version: str, device_cc: str,
                     device_name: str | None = None, engine_path: str | Path = "engine") -> list[str]:
    """Refuse an engine built for another TensorRT version or compute capability; return warnings.

    A GPU of the same compute capability but another model is a warning, as TensorRT itself says.
    """
    built = str(sidecar["tensorrt_version"])
    if not _same_version(built, runtime_trt_version):
        forward = _numbers(runtime_trt_version, 3) >= _numbers(built, 3) >= (8, 6)
        if not (sidecar.get("version_compatible") and forward):
            hint = ("a version-compatible engine runs only on the TensorRT that built it or a later one"
                    if sidecar.get("version_compatible") else "or build it --version-compatible")
            raise ArtifactError(
                f"{engine_path}: built with TensorRT {built}, this runtime is TensorRT {runtime_trt_version}; "
                f"rebuild it here with `resnet-deploy build` ({hint})")
    built_cc = str(sidecar["compute_capability"])
    level = str(sidecar.get("hardware_compatibility") or "none").lower()
    if _numbers(built_cc, 2) != _numbers(device_cc, 2):
        if not (level == "ampere_plus" and _numbers(device_cc, 2) >= (8, 0)):
            raise ArtifactError(
                f"{engine_path}: built for compute capability {built_cc} ({sidecar.get('gpu_name', '?')}), "
                f"this GPU has {device_cc}; rebuild it on this GPU (or, for Ampere and later GPUs, build it "
                "--hardware-compatibility ampere_plus)")
        return []
    built_name = sidecar.get("gpu_name")
    if device_name and built_name and built_name != device_name and level == "none":
        return [f"{engine_path}: built on {built_name}, running on {device_name} (same compute capability "
                f"{device_cc}); TensorRT supports this but tactics were timed on the other GPU"]
    return []
