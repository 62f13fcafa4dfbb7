"""OpenVINO runner: an ONNX file compiled for the CPU by OpenVINO (the `openvino` extra).

On the CPU, OpenVINO runs the Q/DQ graph of `calibrate --cpu-int8` (and the TensorRT-style one) as INT8
convolutions; the FP32 graph stays FP32 (`INFERENCE_PRECISION_HINT f32`: no silent bf16 on CPUs that
have it). `benchmarks/inference.py` puts it beside ONNX Runtime in one run.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resnet_deploy.errors import ArtifactError, EnvironmentFailure
from resnet_deploy.runners.base import BaseRunner, TensorMeta, first_line


def _openvino() -> Any:
    try:
        import openvino
    except ImportError as exc:
        raise EnvironmentFailure("the openvino backend needs OpenVINO: pip install 'resnet-deploy[openvino]'") from exc
    return openvino


class OpenVinoRunner(BaseRunner):
    """Compiles an ONNX file for OpenVINO's CPU device on `activate()` (latency hint, FP32 precision)."""

    backend = "openvino"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, name: str | None = None):
        super().__init__(name or Path(onnx_path).name)
        self.onnx_path = Path(onnx_path)
        self.threads = threads
        self._compiled: Any = None  # an openvino.CompiledModel while active
        self._request: Any = None

    def _activate(self) -> None:
        ov = _openvino()
        config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
        if self.threads:
            config["INFERENCE_NUM_THREADS"] = self.threads
        try:
            self._compiled = ov.Core().compile_model(str(self.onnx_path), "CPU", config)
        except RuntimeError as exc:  # OpenVINO reports bad graphs as RuntimeError
            raise ArtifactError(
                f"{self.onnx_path}: OpenVINO cannot compile it: {first_line(exc, 'unknown error')}"
            ) from exc
        self._request = self._compiled.create_infer_request()

    def _deactivate(self) -> None:
        self._request = None
        self._compiled = None

    def bytes_per_image(self) -> int:
        """Input plus the live activations of one image, from the graph's shapes."""
        from resnet_deploy.onnx_io import live_activation_bytes

        return self.input_bytes_per_image() + live_activation_bytes(self.onnx_path)

    def _input_metadata(self) -> list[TensorMeta]:
        return [
            TensorMeta(
                port.get_any_name(),
                np.dtype(port.get_element_type().to_dtype()),
                tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape()),
            )
            for port in self._compiled.inputs
        ]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        inputs = (
            list(feed.values()) if len(feed) == 1 else [feed[port.get_any_name()] for port in self._compiled.inputs]
        )
        try:
            results = self._request.infer([np.ascontiguousarray(array) for array in inputs])
        except RuntimeError as exc:
            raise ArtifactError(
                f"{self.onnx_path}: OpenVINO failed to run it: {first_line(exc, 'unknown error')}"
            ) from exc
        return {port.get_any_name(): np.array(results[port]) for port in self._compiled.outputs}
