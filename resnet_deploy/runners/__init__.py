"""Inference runners, one per backend, behind `BaseRunner`; `load_runner` picks one for a file."""

from __future__ import annotations

from pathlib import Path

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, RunnerStateError, TensorMeta

BACKENDS = ("torch", "onnxruntime", "tensorrt")
SUFFIX_BACKENDS = {".pt": "torch", ".pth": "torch", ".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt"}

__all__ = ["BACKENDS", "BaseRunner", "RunnerStateError", "TensorMeta", "backend_for", "load_runner"]


def backend_for(artifact: str | Path, backend: str = "auto") -> str:
    """The backend that runs `artifact`: by suffix unless given."""
    if backend != "auto":
        if backend not in BACKENDS:
            raise ResnetDeployError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return backend
    suffix = Path(artifact).suffix.lower()
    if suffix not in SUFFIX_BACKENDS:
        raise ResnetDeployError(f"{artifact}: cannot tell the backend from suffix {suffix!r}; pass --backend")
    return SUFFIX_BACKENDS[suffix]


def load_runner(artifact: str | Path, backend: str = "auto", **options) -> BaseRunner:
    """A runner for a checkpoint (.pt), ONNX file (.onnx) or TensorRT engine (.engine/.plan)."""
    chosen = backend_for(artifact, backend)
    if chosen == "torch":
        from resnet_deploy.runners.torch_runner import TorchRunner

        return TorchRunner(artifact, **options)
    if chosen == "onnxruntime":
        from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

        return OnnxRuntimeRunner(artifact, **options)
    from resnet_deploy.trt.runner import TensorRTRunner

    return TensorRTRunner(artifact, **options)
