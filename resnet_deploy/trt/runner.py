"""TensorRT runner: one engine, one execution context, one CUDA stream, pinned host buffers.

Per batch: set the input shape and every tensor address, then `cuda.StreamLoop`: copy into pinned
memory, async H2D, `execute_async_v3`, async D2H, synchronize; CUDA events around each phase report
H2D, compute and D2H apart, and the host time of the enqueue call is reported as `enqueue`. An
execution context is not thread-safe (TensorRT's threading rules), so `infer` holds a lock; with
`thread_safe=False` there is no lock and a call from any thread but the one that activated the
runner is refused. Imports no torch, so it runs on a Jetson with only TensorRT, pycuda and numpy.

With `cuda_graph=True` the enqueue of each batch shape is captured once into a CUDA graph and
replayed (`cudagraph.CudaGraphs`), for at most `max_graph_shapes` shapes (later shapes run without
a graph, with one notice). A graph keeps the shape, tensor addresses and execution-context state of
its capture, so each captured shape gets an execution context of its own, bound once. Every context
of the runner shares one activation block (TensorRT's user-managed context memory,
`ExecutionContextAllocationStrategy.USER_MANAGED` + `set_device_memory`, sized `device_memory_size_v2`):
they run one at a time on one stream, so a second shape costs no second block (Jetson's GPU memory
is the CPU's). The stream is non-blocking, so work on the legacy default stream from another thread
cannot invalidate a capture. The H2D and D2H copies stay outside the graph, as in trtexec, so the
phases are timed as without graphs. A DLA engine runs without graphs (trtexec: "CUDA graphs and DLA
offloading are not simultaneously supported"), with one notice.

A fixed-shape engine (profile min = opt = max, as DLA requires) gets every batch split into chunks
of its batch and the last chunk padded with zeros; the padding's outputs are dropped. A dynamic
engine's batch below the profile's min is padded the same way.
"""

from __future__ import annotations

import threading
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, RunnerStateError, TensorMeta
from resnet_deploy.trt.compat import import_tensorrt, require, trt_logger
from resnet_deploy.trt.cuda import HostDeviceBuffer, StreamLoop, device_info, driver, pushed
from resnet_deploy.trt.cudagraph import CudaGraphs
from resnet_deploy.trt.sidecar import check_compatible, read_sidecar

DEFAULT_MAX_GRAPH_SHAPES = 4
DLA_NO_GRAPHS = (
    "CUDA graphs and DLA offloading are not simultaneously supported (as trtexec says); running this "
    "DLA engine without CUDA graphs"
)


class TensorRTRunner(BaseRunner):
    backend = "tensorrt"

    def __init__(
        self,
        engine_path: str | Path,
        device: int = 0,
        name: str | None = None,
        thread_safe: bool = True,
        cuda_graph: bool = False,
        notice: Callable[[str], None] | None = None,
        max_graph_shapes: int = DEFAULT_MAX_GRAPH_SHAPES,
    ):
        super().__init__(name or Path(engine_path).name)
        require(f"{Path(engine_path).name}: running a TensorRT engine")
        self.engine_path = Path(engine_path)
        self.device = device
        self.thread_safe = thread_safe
        self.cuda_graph = cuda_graph
        if max_graph_shapes < 1:
            raise ResnetDeployError(f"max_graph_shapes must be at least 1, got {max_graph_shapes}")
        self.max_graph_shapes = max_graph_shapes
        self._notice = notice or _warn
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._runtime: Any = None  # tensorrt objects (the module is imported lazily)
        self._engine: Any = None
        self._execution: Any = None
        self._loop: StreamLoop | None = None
        self._graphs: CudaGraphs | None = None
        self._activation: Any = None  # the device block every execution context of this runner shares
        self._activation_bytes = 0
        self._strategy: Any = None
        self._graph_contexts: dict[tuple[int, ...], tuple] = {}
        self._capped = False
        self._owner: int | None = None
        self._inputs: list[TensorMeta] = []
        self._outputs: list[TensorMeta] = []
        self.sidecar: dict = {}
        self.min_batch = self.max_batch = 0

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
                raise ArtifactError(
                    f"{self.engine_path}: built for DLA core {dla_core}; this device has {cores} DLA cores"
                )
            # trtexec sets the runtime's DLA core before deserializing (samples/common/sampleEngines.cpp).
            self._runtime.DLA_core = dla_core
        if self.sidecar.get("version_compatible"):
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"{self.engine_path}: TensorRT could not deserialize the engine (see its log above)")
        self._loop = StreamLoop(self._allocate(trt))
        self._share_activation_memory(trt)
        self._execution = self._new_context()
        if self.cuda_graph:
            self._graphs = CudaGraphs(self._named_notice, DLA_NO_GRAPHS if dla_core is not None else None)

    def _named_notice(self, message: str) -> None:
        self._notice(f"{self.engine_path.name}: {message}")

    def _share_activation_memory(self, trt) -> None:
        """One activation block for every context (user-managed context memory, TensorRT 10.1 and later);
        an older TensorRT lets each context allocate its own."""
        strategies = getattr(trt, "ExecutionContextAllocationStrategy", None)
        if strategies is None or not hasattr(strategies, "USER_MANAGED"):
            return
        self._strategy = strategies.USER_MANAGED
        self._activation_bytes = int(self._engine.device_memory_size_v2)
        self._activation = driver().mem_alloc(max(self._activation_bytes, 1))

    def _new_context(self):
        """An execution context on the shared activation block (or with its own memory where there is none)."""
        if self._strategy is None:
            execution = self._engine.create_execution_context()
        else:
            execution = self._engine.create_execution_context(self._strategy)
        if execution is None:
            raise ArtifactError(f"{self.engine_path}: TensorRT could not create an execution context")
        if self._activation is not None:
            execution.set_device_memory(int(self._activation), self._activation_bytes)
        return execution

    def _allocate(self, trt) -> dict[str, HostDeviceBuffer]:
        """Pinned and device buffers for every I/O tensor, of the engine's dtypes, sized for the max batch."""
        engine = self._engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise ArtifactError(f"{self.engine_path}: expected one input tensor, the engine has {len(inputs)}")
        low, _, high = (tuple(s) for s in engine.get_tensor_profile_shape(inputs[0], 0))
        self.min_batch, self.max_batch = int(low[0]), int(high[0])
        buffers: dict[str, HostDeviceBuffer] = {}
        try:
            for name in names:
                dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
                shape = tuple(engine.get_tensor_shape(name))
                (self._inputs if name in inputs else self._outputs).append(TensorMeta(name, dtype, shape))
                buffers[name] = HostDeviceBuffer(tuple(self.max_batch if d < 0 else d for d in shape), dtype)
        except BaseException:
            for buffer in buffers.values():  # an allocation failed halfway: free what was taken
                buffer.free()
            raise
        return buffers

    @property
    def fixed_batch(self) -> bool:
        """The engine takes one batch size only (profile min = max, as a DLA engine)."""
        return self.min_batch == self.max_batch

    def _deactivate(self) -> None:
        """Free buffers, stream, execution context, engine and runtime in that order, the context current."""
        with self._lock:
            if self._runtime is not None:
                with pushed(self.device):
                    if self._graphs is not None:
                        self._graphs.free()
                    self._graph_contexts = {}
                    self._execution = None
                    if self._loop is not None:
                        self._loop.free()
                    if self._activation is not None:
                        self._activation.free()
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

    @property
    def activation_bytes(self) -> int:
        """Device bytes of the activation block all this runner's execution contexts share (0: none shared)."""
        return self._activation_bytes if self._activation is not None else 0

    @property
    def _active_loop(self) -> StreamLoop:
        """The stream loop of the active runner."""
        if self._loop is None:
            raise RunnerStateError(f"infer() called on inactive runner {self.name!r}")
        return self._loop

    def _input_metadata(self) -> list[TensorMeta]:
        return list(self._inputs)

    def _batch(self, feed: Mapping[str, np.ndarray]) -> np.ndarray:
        (meta,) = self._inputs
        if meta.name in feed:
            batch = feed[meta.name]
        elif len(feed) == 1:
            batch = next(iter(feed.values()))
        else:
            raise ResnetDeployError(
                f"{self.engine_path.name}: feed has {sorted(feed)}, the engine's input is {meta.name!r}"
            )
        batch = np.asarray(batch)
        if batch.ndim != len(meta.shape) or batch.shape[1:] != meta.shape[1:]:
            raise ResnetDeployError(f"{self.engine_path.name}: input shape {batch.shape} does not fit {meta.shape}")
        if batch.shape[0] < 1 or (batch.shape[0] > self.max_batch and not self.fixed_batch):
            raise ResnetDeployError(
                f"{self.engine_path.name}: batch {batch.shape[0]} is outside the engine's "
                f"profile 1..{self.max_batch}; rebuild with a larger --max-batch"
            )
        return batch

    def _chunks(self, batch: np.ndarray) -> Iterator[tuple[np.ndarray, int]]:
        """(chunk, real rows): chunks of at most max_batch (a fixed-shape engine's batch), each padded with zeros
        to the profile's min."""
        for start in range(0, len(batch), self.max_batch):
            chunk = batch[start : start + self.max_batch]
            rows = len(chunk)
            if rows < self.min_batch:
                padded = np.zeros((self.min_batch, *chunk.shape[1:]), chunk.dtype)
                padded[:rows] = chunk
                chunk = padded
            yield chunk, rows

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        """The lock (thread_safe) or a refusal of every thread but the activating one (not thread_safe)."""
        if self.thread_safe:
            with self._lock:
                yield
            return
        if threading.get_ident() != self._owner:
            raise RunnerStateError(
                f"runner {self.name!r} was made with thread_safe=False and is used from another "
                "thread than the one that activated it; use one runner per thread"
            )
        yield

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._exclusive():
            if self._loop is None:
                raise RunnerStateError(f"infer() called on inactive runner {self.name!r}")
            batch = self._batch(feed)
            parts: list[dict[str, np.ndarray]] = []
            timings: dict[str, float] = {}
            with pushed(self.device):
                for chunk, rows in self._chunks(batch):
                    outputs = self._run_one(chunk)
                    parts.append({name: value[:rows] for name, value in outputs.items()})
                    for phase, seconds in self._loop.last_timings.items():
                        timings[phase] = timings.get(phase, 0.0) + seconds
            self.last_timings = timings
            if len(parts) == 1:
                return parts[0]
            return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    def _run_one(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        """One batch the profile accepts, through its CUDA graph or a plain enqueue on the main context."""
        inputs = {self._inputs[0].name: batch}
        if self._graphs is not None and self._graphs.active and self._graph_slot(batch.shape):
            return self._run_graphed(inputs, batch.shape)
        shapes = self._bind(self._execution, batch.shape)
        return self._active_loop.run(inputs, shapes, lambda stream: self._enqueue(self._execution, stream))

    def _graph_slot(self, shape: tuple[int, ...]) -> bool:
        """Whether `shape` has (or may get) a CUDA graph: at most `max_graph_shapes` are captured."""
        if shape in self._graph_contexts or len(self._graph_contexts) < self.max_graph_shapes:
            return True
        if not self._capped:
            self._capped = True
            self._notice(
                f"{self.engine_path.name}: {self.max_graph_shapes} batch shapes have CUDA graphs (the cap, "
                f"max_graph_shapes); batch shape {shape} and other new shapes run without a graph"
            )
        return False

    def _bind(self, execution, shape: tuple[int, ...]) -> dict[str, tuple[int, ...]]:
        """Set the input shape and every tensor address on `execution`; returns the output shapes."""
        (input_meta,) = self._inputs
        if not execution.set_input_shape(input_meta.name, shape):
            raise ResnetDeployError(f"{self.engine_path.name}: TensorRT rejected input shape {shape}")
        for name, buffer in self._active_loop.buffers.items():
            address = int(buffer.device)
            if not execution.set_tensor_address(name, address):
                raise ResnetDeployError(
                    f"{self.engine_path.name}: TensorRT refused address {address:#x} for tensor "
                    f"{name!r} (null or not 256-byte aligned; see the TensorRT log)"
                )
        return {m.name: tuple(execution.get_tensor_shape(m.name)) for m in self._outputs}

    def _run_graphed(self, inputs: dict[str, np.ndarray], shape: tuple[int, ...]) -> dict[str, np.ndarray]:
        """One batch through the CUDA graph of its shape (captured on first sight, in an execution context
        of its own); after a failed capture the graphs are gone and later batches use the main context."""
        if shape not in self._graph_contexts:
            execution = self._new_context()
            self._graph_contexts[shape] = execution, self._bind(execution, shape)
        graphs = self._graphs
        assert graphs is not None  # _run_one sends a batch here only with CUDA graphs on
        execution, shapes = self._graph_contexts[shape]
        outputs = self._active_loop.run(
            inputs,
            shapes,
            lambda stream: graphs.run(shape, stream, lambda capturing: self._enqueue(execution, capturing)),
        )
        if not graphs.active:
            self._graph_contexts = {}
        return outputs

    def _enqueue(self, execution, stream) -> None:
        if not execution.execute_async_v3(stream.handle):
            raise ResnetDeployError(f"{self.engine_path.name}: execute_async_v3 failed (see the TensorRT log)")


def _warn(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=4)
