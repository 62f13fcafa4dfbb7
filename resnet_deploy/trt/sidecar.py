"""Engine sidecars: the JSON beside every engine, its file-name scheme and the compatibility check.

An engine runs only on the TensorRT release that built it (a version-compatible one also on the
later releases NVIDIA allows: `compat.version_compatible_runs`), only on the platform that built it
("serialized engines are not portable across platforms": x86_64 or aarch64, discrete GPU or Jetson's
integrated one), and only on GPUs of its compute capability unless built hardware-compatible for
Ampere and later. The check reads the sidecar and refuses a mismatch with a clear message before
anything is deserialized, because TensorRT's own failure is a bare "magic tag does not match" or a crash.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_json
from resnet_deploy.trt.compat import same_release, version_compatible_rule, version_compatible_runs, version_numbers
from resnet_deploy.trt.cuda import DeviceInfo

REQUIRED_FIELDS = ("tensorrt_version", "compute_capability", "precision", "platform", "integrated_gpu")


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.+]+", "-", text.lower()).strip("-")


def engine_file_name(
    model: str,
    precision: str,
    max_batch: int,
    gpu_name: str,
    compute_capability: str,
    trt_version: str,
    tags: list[str] | tuple[str, ...] = (),
) -> str:
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
        raise ArtifactError(
            f"{engine_path}: no sidecar {path.name}; engines are only run with the metadata "
            "written when they were built"
        )
    try:
        sidecar = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: malformed JSON: {exc}") from exc
    if not isinstance(sidecar, dict):
        raise ArtifactError(f"{path}: expected a JSON object, got {type(sidecar).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in sidecar]
    if missing:
        raise ArtifactError(
            f"{path}: sidecar lacks {', '.join(missing)}; rebuild the engine with `resnet-deploy build`"
        )
    return sidecar


def _gpu_kind(integrated: bool) -> str:
    return "an integrated GPU (Jetson)" if integrated else "a discrete GPU"


def check_compatible(
    sidecar: dict[str, Any], runtime_trt_version: str, device: DeviceInfo, engine_path: str | Path = "engine"
) -> list[str]:
    """Refuse an engine built for another TensorRT, platform or compute capability; return warnings.

    A GPU of the same compute capability but another model is a warning, as TensorRT itself says.
    """
    built = str(sidecar["tensorrt_version"])
    if not same_release(built, runtime_trt_version):
        if not (sidecar.get("version_compatible") and version_compatible_runs(built, runtime_trt_version)):
            hint = (
                version_compatible_rule(built)
                if sidecar.get("version_compatible")
                else "or build it --version-compatible"
            )
            raise ArtifactError(
                f"{engine_path}: built with TensorRT {built}, this runtime is TensorRT {runtime_trt_version}; "
                f"rebuild it here with `resnet-deploy build` ({hint})"
            )
    if sidecar["platform"] != device.platform or bool(sidecar["integrated_gpu"]) != device.integrated:
        raise ArtifactError(
            f"{engine_path}: built on {sidecar['platform']} with {_gpu_kind(bool(sidecar['integrated_gpu']))}, this "
            f"is {device.platform} with {_gpu_kind(device.integrated)}; engines are not portable across platforms "
            "(hardware compatibility included): rebuild it here with `resnet-deploy build`"
        )
    built_cc = str(sidecar["compute_capability"])
    level = str(sidecar.get("hardware_compatibility") or "none").lower()
    if version_numbers(built_cc, 2) != version_numbers(device.compute_capability, 2):
        if not (level == "ampere_plus" and version_numbers(device.compute_capability, 2) >= (8, 0)):
            raise ArtifactError(
                f"{engine_path}: built for compute capability {built_cc} ({sidecar.get('gpu_name', '?')}), "
                f"this GPU has {device.compute_capability}; rebuild it on this GPU (or, for Ampere and later GPUs, "
                "build it --hardware-compatibility ampere_plus)"
            )
        return []
    built_name = sidecar.get("gpu_name")
    if built_name and built_name != device.name and level == "none":
        return [
            f"{engine_path}: built on {built_name}, running on {device.name} (same compute capability "
            f"{device.compute_capability}); TensorRT supports this but tactics were timed on the other GPU"
        ]
    return []


def check_runs_here(engine_path: str | Path, sidecar: dict[str, Any], device: int = 0) -> tuple[list[str], str]:
    """Check the engine against this machine's TensorRT and GPU `device`: (warnings, a one-line summary).

    Raises `TensorRTMissing` where TensorRT or pycuda is not installed, `ArtifactError` on a mismatch.
    """
    from resnet_deploy.trt.compat import import_tensorrt, require
    from resnet_deploy.trt.cuda import device_info

    require(f"{Path(engine_path).name}: checking that the engine runs here")
    trt = import_tensorrt()
    here = device_info(device)
    warnings = check_compatible(sidecar, trt.__version__, here, engine_path)
    return warnings, f"runs here: TensorRT {trt.__version__} on {here.name} (sm {here.compute_capability})"
