"""pycuda plumbing: each device's primary context, pinned and device buffers, and the per-batch stream loop.

Contexts follow `pycuda/autoprimaryctx.py`: a device's primary context (the one TensorRT and the
CUDA runtime use) is retained once and kept for the life of the process. Work pushes it and pops it
again (`with pushed(device):`), so the loop also runs from a worker thread. It is never detached:
pycuda's `context::detach` (src/cpp/cuda.hpp) on a context that is not current pushes it with
cuCtxPushCurrent and releases it without a pop, leaving a stale entry on the thread's context stack.
GPU name, compute capability and "integrated" come from `cuda.Device(i)`, which needs cuInit and no
context. Everything allocated here is freed explicitly while the context is current, not whenever
the garbage collector runs (possibly with no context, which pycuda reports as a failed free).
"""

from __future__ import annotations

import platform
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.trt.compat import import_cuda_driver

PHASES = ("h2d", "compute", "d2h")
STREAM_NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING (cuda.h): no implicit synchronization with the legacy stream
MACHINES = {"amd64": "x86_64", "x86_64": "x86_64", "arm64": "aarch64", "aarch64": "aarch64"}


def driver():
    """pycuda.driver, imported on first use."""
    return import_cuda_driver("the TensorRT engine runtime")


def host_platform() -> str:
    """x86_64 or aarch64 (engines are not portable across platforms)."""
    machine = platform.machine()
    return MACHINES.get(machine.lower(), machine)


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str
    integrated: bool = False
    platform: str = "x86_64"


def device_info(index: int = 0) -> DeviceInfo:
    """Name, compute capability and kind of GPU `index`, read from the device without making a context."""
    cuda = driver()
    cuda.init()
    count = cuda.Device.count()
    if not 0 <= index < count:
        raise ResnetDeployError(f"no CUDA device {index}: this machine has {count}")
    device = cuda.Device(index)
    integrated = bool(device.get_attribute(cuda.device_attribute.INTEGRATED))
    return DeviceInfo(index, device.name(), "{}.{}".format(*device.compute_capability()), integrated, host_platform())


_contexts_lock = threading.Lock()
_contexts: dict[int, Any] = {}
_contexts_driver: Any = None


def primary_context(index: int = 0):
    """Device `index`'s primary context, retained on first use and kept until the process ends."""
    global _contexts_driver
    cuda = driver()
    with _contexts_lock:
        if _contexts_driver is not cuda:  # another pycuda module (the test fakes): its own contexts
            _contexts.clear()
            _contexts_driver = cuda
        if index not in _contexts:
            cuda.init()
            _contexts[index] = cuda.Device(index).retain_primary_context()
        return _contexts[index]


@contextmanager
def pushed(index: int = 0) -> Iterator[Any]:
    """Make device `index`'s primary context current in this thread for the block."""
    context = primary_context(index)
    context.push()
    try:
        yield context
    finally:
        driver().Context.pop()


class HostDeviceBuffer:
    """A page-locked host array and a device allocation of the same size; free() releases both."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        cuda = driver()
        self.device: Any = None  # a pycuda DeviceAllocation once allocated
        self.host = cuda.pagelocked_empty(shape, dtype)
        try:
            self.device = cuda.mem_alloc(self.host.nbytes)
        except BaseException:
            self.free()  # no pinned memory left behind when the device allocation fails
            raise

    def host_view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The first elements of the pinned buffer, shaped for the current batch."""
        count = int(np.prod(shape))
        return self.host.reshape(-1)[:count].reshape(shape)

    def free(self) -> None:
        """Free device then pinned host memory now (the context must be current)."""
        if self.device is not None:
            self.device.free()
            self.device = None
        if self.host is not None:
            self.host.base.free()
            self.host = None


class EventTimer:
    """CUDA events around named phases on one stream; read them only after the stream is synchronized."""

    def __init__(self, stream: Any, phases: tuple[str, ...]):
        cuda = driver()
        self._stream = stream
        self._events = {phase: (cuda.Event(), cuda.Event()) for phase in phases}

    def start(self, phase: str) -> None:
        self._events[phase][0].record(self._stream)

    def stop(self, phase: str) -> None:
        self._events[phase][1].record(self._stream)

    def seconds(self) -> dict[str, float]:
        """Elapsed time per phase (cuEventElapsedTime fails while an event is still pending)."""
        return {phase: end.time_since(begin) / 1000.0 for phase, (begin, end) in self._events.items()}


class StreamLoop:
    """One CUDA stream, its events and the buffers of every I/O tensor: copy in, enqueue, copy out.

    NVIDIA's loop (`_do_inference_base` in samples/python/common_runtime.py): async H2D from pinned
    memory, enqueue on the stream, async D2H into pinned memory, synchronize. The TensorRT runner enqueues an engine; the
    GPU smoke script (tools/gpu_smoke) enqueues a CUDA kernel through the same code. Use it with the
    owning context current. The stream is non-blocking (CU_STREAM_NON_BLOCKING): work another
    thread puts on the legacy default stream neither waits for it nor breaks a CUDA-graph capture on it.
    Outputs are read only after the stream is synchronized (the copies are asynchronous).
    """

    def __init__(self, buffers: dict[str, HostDeviceBuffer]):
        self.buffers = buffers
        self.stream = driver().Stream(flags=STREAM_NON_BLOCKING)
        self._timer: EventTimer | None = EventTimer(self.stream, PHASES)
        self.last_timings: dict[str, float] = {}

    def run(
        self,
        inputs: Mapping[str, np.ndarray],
        output_shapes: Mapping[str, tuple[int, ...]],
        enqueue: Callable[[Any], None],
    ) -> dict[str, np.ndarray]:
        """One batch: `enqueue(stream)` must queue the work on `stream` (and raise if it cannot)."""
        timer = self._timer
        assert timer is not None, "StreamLoop.run() after free()"
        cuda = driver()
        staged = {}
        for name, array in inputs.items():
            staged[name] = self.buffers[name].host_view(array.shape)
            np.copyto(staged[name], array, casting="same_kind")
        timer.start("h2d")
        for name, host in staged.items():
            cuda.memcpy_htod_async(self.buffers[name].device, host, self.stream)
        timer.stop("h2d")
        timer.start("compute")
        started = time.perf_counter()
        enqueue(self.stream)
        enqueue_seconds = time.perf_counter() - started
        timer.stop("compute")
        outputs = {name: self.buffers[name].host_view(shape) for name, shape in output_shapes.items()}
        timer.start("d2h")
        for name, host in outputs.items():
            cuda.memcpy_dtoh_async(host, self.buffers[name].device, self.stream)
        timer.stop("d2h")
        self.stream.synchronize()
        self.last_timings = {**timer.seconds(), "enqueue": enqueue_seconds}
        return {name: host.copy() for name, host in outputs.items()}

    def free(self) -> None:
        """Free every buffer, then the events and the stream (the context must be current)."""
        for buffer in self.buffers.values():
            buffer.free()
        self.buffers = {}
        self._timer = self.stream = None
