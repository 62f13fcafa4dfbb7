"""TensorRT runner: one engine, one execution context, one CUDA stream, pinned host buffers.

Per batch: set the input shape and every tensor address, then `cuda.StreamLoop`: copy into pinned
memory, async H2D, `execute_async_v3`, async D2H, synchronize; CUDA events around each phase report
H2D, compute and D2H apart, and the host time of the enqueue call is reported as `enqueue`. An
execution context is not thread-safe (TensorRT's threading rules), so `infer` holds a lock; with
`thread_safe=False` there is no lock and a call from any thread but the one that activated the
runner is refused. Imports no torch, so it runs on a Jetson with only TensorRT, pycuda and numpy.

With `cuda_graph=True` the enqueue of each batch shape is captured once into a CUDA graph and
replayed (`cudagraph.CudaGraphs`). A graph keeps the shape, tensor addresses and execution-context
state of its capture, so each captured shape gets an execution context of its own, bound once
(TensorRT allocates activation memory per context); the H2D and D2H copies stay outside the graph,
as in trtexec, so the phases are timed as without graphs.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

import numpy as np

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, RunnerStateError, TensorMeta
from resnet_deploy.trt.compat import import_tensorrt, require, trt_logger
from resnet_deploy.trt.cuda import HostDeviceBuffer, StreamLoop, device_info, pushed
from resnet_deploy.trt.cudagraph import CudaGraphs
from resnet_deploy.trt.sidecar import check_compatible, read_sidecar


class TensorRTRunner(BaseRunner):
    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, device: int = 0, name: str | None = None, thread_safe: bool = True,
                 cuda_graph: bool = False, notice: Callable[[str], None] | None = None):
        super().__init__(name or Path(engine_path).name)
        require(f"{Path(engine_path).name}: running a TensorRT engine")
        self.engine_path = Path(engine_path)
        self.device = device
        self.thread_safe = thread_safe
        self.cuda_graph = cuda_graph
        self._notice = notice or _warn
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._runtime = self._engine = self._execution = self._loop = self._graphs = None
        self._graph_contexts: dict[tuple[int, ...], tuple] = {}
        self._owner: int | None = None
        self._inputs: list[TensorMeta] = []
        self._outputs: list[TensorMeta] = []
        self.sidecar: dict = {}
        self.max_batch = 0

    def _activate(self) -> None:
        trt = import_tensorrt(f"{self.engine_path.name}: running a TensorRT engine")
        self.sidecar = read_sidecar(self.engine_path)
        here = device_info(self.device)
        for warning in check_compatible(self.sidecar, trt.__version__, here, self.engine_path):
            warnings.warn(warning, stacklevel=3)
        try:
            with pushed(self.device):
                self._load(trt)
        except BaseException:
            self._deactivate()
            raise
        self._owner = threading.get_ident()

    def _load(self, trt) -> None:
        self._runtime = trt.Runtime(trt_logger(trt))
        dla_core = self.sidecar.get("dla_core")
        if dla_core is not None:
            cores = self._runtime.num_DLA_cores
            if dla_core >= cores:
                raise ArtifactError(f"{self.engine_path}: built for DLA core {dla_core}; this device has "
                                    f"{cores} DLA cores")
            # trtexec sets the runtime's DLA core before deserializing (samples/common/sampleEngines.cpp).
            self._runtime.DLA_core = dla_core
        if self.sidecar.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{self.engine_path}: TensorRT could not deserialize the engine (see its log above)")
        self._execution = self._engine.create_execution_context()
        if self._execution is None:
            raise ArtifactError(f"{self.engine_path}: TensorRT could not create an execution context")
        self._loop = StreamLoop(self._allocate(trt))
        if self.cuda_graph:
            self._graphs = CudaGraphs(lambda message: self._notice(f"{self.engine_path.name}: {message}"))

    def _allocate(self, trt) -> dict[str, HostDeviceBuffer]:
        """Pinned and device buffers for every I/O tensor, of the engine's dtypes, sized for the max batch."""
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ArtifactError(f"{self.engine_path}: expected one input tensor, the engine has {len(inputs)}")
        self.max_batch = int(tuple(engine.get_tensor_profile_shape(inputs[0], 0)[2])[0])
        buffers = {}
        for name in names:
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
            shape = tuple(engine.get_tensor_shape(name))
            (self._inputs if name in inputs else self._outputs).append(TensorMeta(name, dtype, shape))
            buffers[name] = HostDeviceBuffer(tuple(self.max_batch if d < 0 else d for d in shape), dtype)
        return buffers

    def _deactivate(self) -> None:
        """Free buffers, stream, execution context, engine and runtime in that order, the context current."""
        with self._lock:
            if self._runtime is not None:
                with pushed(self.device):
                    if self._graphs is not None:
                        self._graphs.free()
                    self._graph_contexts = {}
                    if self._loop is not None:
                        self._loop.free()
                    self._execution = None
                    self._engine = None
                    self._runtime = None
            self._reset()

    @property
    def cuda_graphs(self) -> dict | None:
        """None without `cuda_graph`; else the shapes captured so far and why graphs are off, if they are."""
        return self._graphs.status() if self._graphs is not None else None

    @property
    def io_bytes(self) -> int:
        """Device bytes of this activation's I/O buffers (as many again are pinned on the host)."""
        return sum(buffer.host.nbytes for buffer in self._loop.buffers.values()) if self._loop else 0

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

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The lock (thread_safe) or a refusal of every thread but the activating one (not thread_safe)."""
        if self.thread_safe:
            with self._lock:
                yield
            return
        if threading.get_ident() != self._owner:
            raise RunnerStateError(f"runner {self.name!r} was made with thread_safe=False and is used from another "
                                   "thread than the one that activated it; use one runner per thread")
        yield

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._exclusive():
            if self._loop is None:
                raise RunnerStateError(f"infer() called on inactive runner {self.name!r}")
            batch = self._batch(feed)
            inputs = {self._inputs[0].name: batch}
            with pushed(self.device):
                if self._graphs is not None and self._graphs.active:
                    outputs = self._run_graphed(inputs, batch.shape)
                else:
                    shapes = self._bind(self._execution, batch.shape)
                    outputs = self._loop.run(inputs, shapes, lambda stream: self._enqueue(self._execution, stream))
                self.last_timings = dict(self._loop.last_timings)
            return outputs

    def _bind(self, execution, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Set the input shape and every tensor address on `execution`; returns the output shapes."""
        (input_meta,) = self._inputs
        if not execution.set_input_shape(input_meta.name, shape):
            raise ResnetDeployError(f"{self.engine_path.name}: TensorRT rejected input shape {shape}")
        for name, buffer in self._loop.buffers.items():
            execution.set_tensor_address(name, int(buffer.device))
        return {m.name: tuple(execution.get_tensor_shape(m.name)) for m in self._outputs}

    def _run_graphed(self, inputs: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """One batch through the CUDA graph of its shape (captured on first sight, in an execution context
        of its own); after a failed capture the graphs are gone and later batches use the main context."""
        if shape not in self._graph_contexts:
            execution = self._engine.create_execution_context()
            if execution is None:
                raise ArtifactError(f"{self.engine_path}: TensorRT could not create an execution context")
            self._graph_contexts[shape] = execution, self._bind(execution, shape)
        execution, shapes = self._graph_contexts[shape]
        outputs = self._loop.run(inputs, shapes, lambda stream: self._graphs.run(
            shape, stream, lambda capturing: self._enqueue(execution, capturing)))
        if not self._graphs.active:
            self._graph_contexts = {}
        return outputs

    def _enqueue(self, execution, stream) -> None:
        if not execution.execute_async_v3(stream.handle):
            raise ResnetDeployError(f"{self.engine_path.name}: execute_async_v3 failed (see the TensorRT log)")


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)
