"""pycuda plumbing for the TensorRT runner: context, stream, pinned and device buffers, events.

No `pycuda.autoinit`: the runner retains the device's primary context and pushes it around its own
work, so it also runs from a worker thread. Everything allocated here is freed explicitly.
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
    """The primary context of one device, pushed on `__enter__` and popped on `__exit__`."""

    def __init__(self, device: int = 0):
        cuda = driver()
        cuda.init()
        self._device = cuda.Device(device)
        self.info = DeviceInfo(device, self._device.name(), "{}.{}".format(*self._device.compute_capability()))
        self._context = self._device.retain_primary_context()

    def __enter__(self) -> "CudaContext":
        self._context.push()
        return self

    def __exit__(self, *exc_info) -> None:
        driver().Context.pop()

    def release(self) -> None:
        if self._context is not None:
            self._context.detach()
            self._context = None


class HostDeviceBuffer:
    """A page-locked host array and a device allocation of the same size."""

    def __init__(self, shape: tuple[int, ...], dtype: np.dtype):
        cuda = driver()
        self.host = cuda.pagelocked_empty(shape, dtype)
        self.device = cuda.mem_alloc(self.host.nbytes)

    def host_view(self, shape: tuple[int, ...]) -> np.ndarray:
        """The first elements of the pinned buffer, shaped for the current batch."""
        count = int(np.prod(shape))
        return self.host.reshape(-1)[:count].reshape(shape)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
            self.device = None
        self.host = None


class EventTimer:
    """CUDA events around named phases on one stream; times in seconds after synchronizing."""

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
