"""TensorRT runner: one engine, one execution context, one CUDA stream, pinned host buffers.

Per batch: copy into pinned memory, set the input shape, set every tensor address, async H2D,
`execute_async_v3`, async D2H, synchronize. CUDA events around each phase report H2D, compute and
D2H apart; the host time of the enqueue call is reported as `enqueue`. Imports no torch, so it
runs on a Jetson with only TensorRT, pycuda and numpy.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Mapping

import numpy as np

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, TensorMeta
from resnet_deploy.trt.sidecar import check_compatible, read_sidecar

PHASES = ("h2d", "compute", "d2h")


class TensorRTRunner(BaseRunner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, device: int = 0, name: str | None = None):
        super().__init__(name or Path(engine_path).name)
        self.engine_path = Path(engine_path)
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self._cuda = self._runtime = self._engine = self._execution = None
        self._stream = self._timer = None
        self._buffers: dict = {}
        self._inputs: list[TensorMeta] = []
        self._outputs: list[TensorMeta] = []
        self.sidecar: dict = {}
        self.max_batch = 0

    def _activate(self) -> None:
        import tensorrt as trt

        from resnet_deploy.trt.cuda import CudaContext

        self.sidecar = read_sidecar(self.engine_path)
        self._cuda = CudaContext(self.device)
        try:
            info = self._cuda.info
            for warning in check_compatible(self.sidecar, trt.__version__, info.compute_capability, info.name,
                                            self.engine_path):
                warnings.warn(warning, stacklevel=3)
            with self._cuda:
                self._load(trt)
        except BaseException:
            self._deactivate()
            raise

    def _load(self, trt) -> None:
        from resnet_deploy.trt.cuda import EventTimer, driver

        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        if self.sidecar.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{self.engine_path}: TensorRT could not deserialize the engine (see its log above)")
        self._execution = self._engine.create_execution_context()
        if self._execution is None:
            raise ArtifactError(f"{self.engine_path}: TensorRT could not create an execution context")
        self._stream = driver().Stream()
        self._timer = EventTimer(self._stream, PHASES)
        self._allocate(trt)

    def _allocate(self, trt) -> None:
        """Pinned and device buffers for every I/O tensor, sized for the profile's max batch."""
        from resnet_deploy.trt.cuda import HostDeviceBuffer

        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ArtifactError(f"{self.engine_path}: expected one input tensor, the engine has {len(inputs)}")
        self.max_batch = int(tuple(engine.get_tensor_profile_shape(inputs[0], 0)[2])[0])
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(engine.get_tensor_shape(name))
            meta = TensorMeta(name, dtype, shape)
            (self._inputs if name in inputs else self._outputs).append(meta)
            max_shape = tuple(self.max_batch if d < 0 else d for d in shape)
            self._buffers[name] = HostDeviceBuffer(max_shape, dtype)

    def _deactivate(self) -> None:
        """Free buffers, context, engine and runtime in that order, with the CUDA context current."""
        if self._cuda is not None:
            with self._cuda:
                for buffer in self._buffers.values():
                    buffer.free()
                self._timer = self._stream = None
                self._execution = None
                self._engine = None
                self._runtime = None
            self._cuda.release()
        self._reset()

    def _input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs)

    def _batch(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        (meta,) = self._inputs
        if meta.name in feed:
            batch = feed[meta.name]
        elif len(feed) == 1:
            batch = next(iter(feed.values()))
        else:
            raise ResnetDeployError(f"{self.engine_path.name}: feed has {sorted(feed)}, the engine's input is {meta.name!r}")
        batch = np.asarray(batch)
        if batch.ndim != len(meta.shape) or batch.shape[1:] != meta.shape[1:]:
            raise ResnetDeployError(f"{self.engine_path.name}: input shape {batch.shape} does not fit {meta.shape}")
        if not 1 <= batch.shape[0] <= self.max_batch:
            raise ResnetDeployError(f"{self.engine_path.name}: batch {batch.shape[0]} is outside the engine's "
                                    f"profile 1..{self.max_batch}; rebuild with a larger --max-batch")
        return batch

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        from resnet_deploy.trt.cuda import driver

        cuda = driver()
        batch = self._batch(feed)
        (input_meta,) = self._inputs
        input_buffer = self._buffers[input_meta.name]
        with self._cuda:
            host_in = input_buffer.host_view(batch.shape)
            np.copyto(host_in, batch, casting="same_kind")
            if not self._execution.set_input_shape(input_meta.name, batch.shape):
                raise ResnetDeployError(f"{self.engine_path.name}: TensorRT rejected input shape {batch.shape}")
            for name, buffer in self._buffers.items():
                self._execution.set_tensor_address(name, int(buffer.device))
            self._timer.start("h2d")
            cuda.memcpy_htod_async(input_buffer.device, host_in, self._stream)
            self._timer.stop("h2d")
            self._timer.start("compute")
            enqueue_started = time.perf_counter()
            if not self._execution.execute_async_v3(self._stream.handle):
                raise ResnetDeployError(f"{self.engine_path.name}: execute_async_v3 failed (see the TensorRT log)")
            enqueue = time.perf_counter() - enqueue_started
            self._timer.stop("compute")
            self._timer.start("d2h")
            outputs = {}
            for meta in self._outputs:
                host_out = self._buffers[meta.name].host_view(tuple(self._execution.get_tensor_shape(meta.name)))
                cuda.memcpy_dtoh_async(host_out, self._buffers[meta.name].device, self._stream)
                outputs[meta.name] = host_out
            self._timer.stop("d2h")
            self._stream.synchronize()
            self.last_timings = {**self._timer.seconds(), "enqueue": enqueue}
        return {name: array.copy() for name, array in outputs.items()}
