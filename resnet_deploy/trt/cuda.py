"""pycuda plumbing for the TensorRT runner: context, stream, pinned and device buffers, events.

No `pycuda.autoinit`: the runner retains the device's primary context (the one TensorRT and the
CUDA runtime use) and pushes it around its own work, so it also runs from a worker thread.
Everything allocated here is freed explicitly, while the context is current, instead of whenever
the garbage collector runs (possibly with no context, which pycuda reports as a failed free).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


def driver():
    """pycuda.driver, imported on first use."""
    import pycuda.driver as cuda

    return cuda


@dataclass(frozen=True)
class DeviceInfo:
    index: int
    name: str
    compute_capability: str


class CudaContext:
    """The primary context of one device: `with context:` pushes it and pops it again."""

    def __init__(self, device: int = 0):
        cuda = driver()
        cuda.init()
        self._device = cuda.Device(device)
        self.info = DeviceInfo(device, self._device.name(), "{}.{}".format(*self._device.compute_capability()))
        self._context = self._device.retain_primary_context()

    def __enter__(self) -> "CudaContext":
        if self._context is None:
            raise RuntimeError("CUDA context already released")
        self._context.push()
        return self

    def __exit__(self, *exc_info) -> None:
        driver().Context.pop()

    def release(self) -> None:
        """Drop our reference to the primary context (idempotent)."""
        if self._context is not None:
            self._context.detach()
            self._context = None


def device_info(device: int = 0) -> DeviceInfo:
    """Name and compute capability of `device`, without keeping a context."""
    context = CudaContext(device)
    try:
        return context.info
    finally:
        context.release()


class HostDeviceBuffer:
    """A page-locked host array and a device allocation of the same size; free() releases both."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        cuda = driver()
        self.host = cuda.pagelocked_empty(shape, dtype)
        self.device = cuda.mem_alloc(self.host.nbytes)

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
    """CUDA events around named phases on one stream; times in seconds once the stream is synchronized."""

    def __init__(self, stream: Any, phases: tuple[str, ...]):
        cuda = driver()
        self._stream = stream
        self._events = {phase: (cuda.Event(), cuda.Event()) for phase in phases}

    def start(self, phase: str) -> None:
        self._events[phase][0].record(self._stream)

    def stop(self, phase: str) -> None:
        self._events[phase][1].record(self._stream)

    def seconds(self) -> dict[str, float]:
        return {phase: end.time_since(begin) / 1000.0 for phase, (begin, end) in self._events.items()}
