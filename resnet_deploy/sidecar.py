"""Engine sidecars: the JSON beside every engine, its file-name scheme and the compatibility check.

An engine only runs on the TensorRT version that built it (unless built version-compatible) and on
GPUs of its compute capability (unless built hardware-compatible). The check reads the sidecar and
refuses a mismatch with a clear message before anything is deserialized.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_json


def sidecar_path(engine_path: str | Path) -> Path:
    return Path(engine_path).with_suffix(".json")


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9.]+", "-", text.lower()).strip("-")


def engine_file_name(model: str, precision: str, max_batch: int, gpu_name: str, compute_capability: str,
                     trt_version: str) -> str:
    """One scheme for every engine: model, precision, max batch, GPU and TensorRT version."""
    sm = compute_capability.replace(".", "")
    return f"{_slug(model)}_{precision}_b{max_batch}_sm{sm}-{_slug(gpu_name)}_trt{trt_version}.engine"


def write_sidecar(engine_path: str | Path, metadata: dict[str, Any]) -> Path:
    return atomic_write_json(sidecar_path(engine_path), metadata)


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    path = sidecar_path(engine_path)
    if not path.is_file():
        raise ArtifactError(f"{engine_path}: no sidecar {path.name}; engines are only run with the metadata "
                            "written when they were built")
    try:
        sidecar = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: malformed JSON: {exc}") from exc
    missing = [k for k in ("tensorrt_version", "compute_capability", "precision") if k not in sidecar]
    if missing:
        raise ArtifactError(f"{path}: sidecar lacks {', '.join(missing)}")
    return sidecar


def _major_minor(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split(".")[:2] if part.isdigit())


def check_compatible(sidecar: dict[str, Any], runtime_trt_version: str, compute_capability: str,
                     engine_path: str | Path = "engine") -> None:
    """Refuse an engine built for another TensorRT version or compute capability."""
    built = sidecar["tensorrt_version"]
    if built != runtime_trt_version:
        same_major = built.split(".")[0] == runtime_trt_version.split(".")[0]
        newer = _major_minor(runtime_trt_version) >= _major_minor(built)
        if not (sidecar.get("version_compatible") and same_major and newer):
            raise ArtifactError(
                f"{engine_path}: built with TensorRT {built}, this runtime is TensorRT {runtime_trt_version}; "
                "rebuild it here with `resnet-deploy build` (or build it --version-compatible)")
    built_cc = sidecar["compute_capability"]
    if built_cc != compute_capability:
        level = (sidecar.get("hardware_compatibility") or "none").lower()
        if not (level == "ampere_plus" and float(compute_capability) >= 8.0):
            raise ArtifactError(
                f"{engine_path}: built for compute capability {built_cc} ({sidecar.get('gpu_name', '?')}), "
                f"this GPU has {compute_capability}; rebuild it on this GPU (or build it --hardware-compatibility "
                "ampere_plus)")
