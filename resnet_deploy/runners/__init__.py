"""Inference runners, one per backend, behind `BaseRunner`; `load_runner` is the one place that makes
a runner from a file and options, for every command and library caller."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.fileio import require_file
from resnet_deploy.runners.base import BaseRunner, RunnerStateError, TensorMeta

BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
SUFFIX_BACKENDS = {
    **dict.fromkeys(CHECKPOINT_SUFFIXES, "torch"),
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
}

__all__ = ["BACKENDS", "BaseRunner", "RunnerStateError", "TensorMeta", "artifact_labels", "backend_for", "load_runner"]


def backend_for(artifact: str | Path, backend: str = "auto") -> str:
    """The backend that runs `artifact`: a checkpoint (.pt, .pth) always runs on torch; any other
    file on `backend`, or by its suffix when that is "auto"."""
    suffix = Path(artifact).suffix.lower()
    if suffix in CHECKPOINT_SUFFIXES:
        return "torch"
    if backend != "auto":
        if backend not in BACKENDS:
            raise ResnetDeployError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        return backend
    if suffix not in SUFFIX_BACKENDS:
        raise ResnetDeployError(f"{artifact}: cannot tell the backend from suffix {suffix!r}; pass --backend")
    return SUFFIX_BACKENDS[suffix]


def artifact_labels(paths: Sequence[str | Path]) -> list[str]:
    """A distinct report label per artifact: its file name, or its whole path where names repeat.

    Baselines key on these labels. A file given twice is refused: it would be measured twice under
    one label.
    """
    files = [Path(p) for p in paths]
    repeated = sorted({str(p) for p in files if files.count(p) > 1})
    if repeated:
        raise ResnetDeployError(f"{', '.join(repeated)}: given more than once")
    return [p.name if sum(q.name == p.name for q in files) == 1 else str(p) for p in files]


def load_runner(artifact: str | Path, backend: str = "auto", *, threads: int = 0, **options) -> BaseRunner:
    """A runner for a checkpoint (.pt, .pth), an ONNX file or a TensorRT engine (.engine, .plan).

    The file must exist; an ONNX file is checked against the I/O contract here, before anything
    runs. `threads` (0: the library's default) sets torch's CPU threads, ONNX Runtime's intra-op
    threads or OpenVINO's inference threads; TensorRT has no such setting. Other `options` go to the runner's constructor.
    """
    path = require_file(artifact)
    chosen = backend_for(path, backend)
    if chosen == "torch":
        from resnet_deploy.runners.torch_runner import TorchRunner

        return TorchRunner(path, threads=threads or None, **options)
    if chosen == "onnxruntime":
        from resnet_deploy.onnx_io import load_classifier
        from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

        load_classifier(path)
        return OnnxRuntimeRunner(path, intra_op_threads=threads or None, **options)
    if chosen == "openvino":
        from resnet_deploy.onnx_io import load_classifier
        from resnet_deploy.runners.openvino import OpenVinoRunner

        load_classifier(path)
        return OpenVinoRunner(path, threads=threads or None, **options)
    from resnet_deploy.trt.runner import TensorRTRunner

    return TensorRTRunner(path, **options)
