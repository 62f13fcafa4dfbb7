"""ONNX Runtime runner: CUDA execution provider when present, else CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import numpy as np

from resnet_deploy.errors import ArtifactError
from resnet_deploy.runners.base import BaseRunner, TensorMeta, first_line

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64}


def default_providers() -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def cpu_session(model: bytes, *, optimize: bool = True, threads: int = 0):
    """A quiet ONNX Runtime CPU session of a serialized graph; `optimize=False` keeps every tensor as the
    graph names it (for exposed intermediate outputs); `threads` 0 is ONNX Runtime's default."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if not optimize:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = threads
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


GRAPH_OPTIMIZATIONS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


class OnnxRuntimeRunner(BaseRunner):
    """Runs an ONNX file in an `onnxruntime.InferenceSession` created on `activate()`.

    `simulate_qdq` sets `session.disable_quant_qdq` for TensorRT-style Q/DQ graphs (INT8 activations). ONNX
    Runtime on x86 has no kernels for those and simulates the quantization in FP32 either way; by default it
    also dequantizes every weight at every run and leaves its NCHWc convolutions out, while with the flag it
    folds the weights into constants: the same simulation about 2x faster on the CPU, with different FP32
    rounding at the margins (the default model's predictions agree on 99.65% of 2,000 validation images).

    Session settings (benchmarks/batch1.py measures them at batch 1): `allow_spinning` sets
    `session.intra_op.allow_spinning` (None: ONNX Runtime's default, spin-waiting worker threads; off, they
    sleep, which keeps p99 down when other processes want the cores); `graph_optimization` is "basic",
    "extended" or "all" (the default). `profile_prefix` turns on ONNX Runtime's profiler;
    `end_profiling()` stops it and returns the JSON trace.
    """

    backend = "onnxruntime"

    def __init__(
        self,
        onnx_path: str | Path,
        providers: list[str] | None = None,
        intra_op_threads: int | None = None,
        name: str | None = None,
        simulate_qdq: bool = False,
        *,
        allow_spinning: bool | None = None,
        graph_optimization: str = "all",
        profile_prefix: str | Path | None = None,
    ):
        super().__init__(name or Path(onnx_path).name)
        if graph_optimization not in GRAPH_OPTIMIZATIONS:
            raise ValueError(f"graph_optimization {graph_optimization!r}: use one of {', '.join(GRAPH_OPTIMIZATIONS)}")
        self.onnx_path = Path(onnx_path)
        self.providers = providers
        self.intra_op_threads = intra_op_threads
        self.simulate_qdq = simulate_qdq
        self.allow_spinning = allow_spinning
        self.graph_optimization = graph_optimization
        self.profile_prefix = profile_prefix
        self._session: Any = None  # an onnxruntime.InferenceSession while active
        self._input_names: list[str] = []
        self._output_names: list[str] = []

    def _activate(self) -> None:
        import onnxruntime as ort

        if not self.onnx_path.is_file():
            raise ArtifactError(f"{self.onnx_path}: ONNX file not found")
        try:
            self._session = ort.InferenceSession(
                str(self.onnx_path), self._options(), providers=self.providers or default_providers()
            )
        except Exception as exc:  # ORT raises its own exception types for bad files
            raise ArtifactError(f"{self.onnx_path}: ONNX Runtime cannot load it: {exc}") from exc
        self._input_names = [i.name for i in self._session.get_inputs()]
        self._output_names = [o.name for o in self._session.get_outputs()]

    def _options(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if self.intra_op_threads:
            options.intra_op_num_threads = self.intra_op_threads
        options.log_severity_level = 3
        options.graph_optimization_level = getattr(
            ort.GraphOptimizationLevel, GRAPH_OPTIMIZATIONS[self.graph_optimization]
        )
        if self.simulate_qdq:
            options.add_session_config_entry("session.disable_quant_qdq", "1")
        if self.allow_spinning is not None:
            options.add_session_config_entry("session.intra_op.allow_spinning", "1" if self.allow_spinning else "0")
        if self.profile_prefix:
            options.enable_profiling, options.profile_file_prefix = True, str(self.profile_prefix)
        return options

    def _deactivate(self) -> None:
        self._session = None

    def end_profiling(self) -> Path:
        """Stop ONNX Runtime's profiler (`profile_prefix`) and return its JSON trace."""
        self._require_active("end_profiling")
        return Path(self._session.end_profiling())

    def bytes_per_image(self) -> int:
        """Input plus the live activations of one image, from the graph's shapes."""
        from resnet_deploy.onnx_io import live_activation_bytes

        return self.input_bytes_per_image() + live_activation_bytes(self.onnx_path)

    def _input_metadata(self) -> list[TensorMeta]:
        return [
            TensorMeta(
                i.name,
                np.dtype(ORT_TYPES.get(i.type, np.float32)),
                tuple(d if isinstance(d, int) else -1 for d in i.shape),
            )
            for i in self._session.get_inputs()
        ]

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if len(feed) == 1 and next(iter(feed)) not in self._input_names:
            feed = {self._input_names[0]: next(iter(feed.values()))}
        try:
            outputs = self._session.run(self._output_names, dict(feed))
        except MemoryError:
            raise
        except Exception as exc:  # ONNX Runtime raises its own exception types (Fail, InvalidArgument, ...)
            raise ArtifactError(f"{self.onnx_path}: ONNX Runtime failed to run it: {first_line(exc)}") from exc
        return dict(zip(self._output_names, outputs))
