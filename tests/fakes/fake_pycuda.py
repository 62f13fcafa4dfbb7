"""A recording fake of `pycuda.driver`, as strict as pycuda and the CUDA driver where our code depends on it.

Device memory is numpy arrays keyed by pointer. The fake models what pycuda's src/cpp/cuda.hpp does:
- cuInit before any Device; name, compute capability and attributes need no context;
- one context stack per thread; `Context.pop()` pops this thread's top, and fails on an empty stack;
- `retain_primary_context()` adds a reference to the device's primary context (`retained` counts them);
  `detach()` of the current context releases it and pops it; `detach()` of a context that is not
  current, in its own thread, pushes it (cuCtxPushCurrent) and releases it without a pop, leaving
  a stale entry on the stack (`stale`); a detached context cannot be pushed or detached again;
- allocations, copies, streams and events need a current context; async copies need page-locked
  memory; an event's `time_since` fails until both events completed (the stream they were recorded
  on was synchronized, or the events themselves), as cuEventElapsedTime does.
It records the order of stream operations and tracks every allocation, so tests can check that
H2D precedes execute precedes D2H on one stream and that everything is freed.
"""

from __future__ import annotations

import itertools
import sys
import threading
import types
from dataclasses import dataclass

import numpy as np


@dataclass
class FakeDevice:
    name: str = "NVIDIA Jetson AGX Orin"
    compute_capability: tuple[int, int] = (8, 7)
    integrated: bool = True
    dla_cores: int = 2
    total_memory: int = 32 << 30


ORIN = FakeDevice()
H100 = FakeDevice("NVIDIA H100 80GB HBM3", (9, 0), integrated=False, dla_cores=0, total_memory=80 << 30)


class FakeCudaError(RuntimeError):
    """What pycuda raises as pycuda._driver.LogicError / Error."""


class Recorder:
    def __init__(self, devices: list[FakeDevice]):
        self.devices = devices
        self.initialized = False
        self.calls: list[tuple] = []
        self.memory: dict[int, np.ndarray] = {}
        self.owner: dict[int, int] = {}  # device pointer -> device index
        self.freed: set[int] = set()
        self.pinned: list = []
        self.next_pointer = 0x1000
        self.stacks: dict[int, list] = {}
        self.stale: list = []
        self.retained: dict[int, int] = {}
        self.clock_ms = 0.0
        self.handles = itertools.count(0xABC)

    def stack(self) -> list:
        return self.stacks.setdefault(threading.get_ident(), [])

    @property
    def context_depth(self) -> int:
        """Contexts on any thread's stack (stale entries included)."""
        return sum(len(s) for s in self.stacks.values()) + len(self.stale)

    def pinned_alive(self) -> int:
        return sum(not h.freed for h in self.pinned)

    def device_bytes_in_use(self) -> int:
        return sum(a.size for p, a in self.memory.items() if p not in self.freed)

    def current_device(self) -> int | None:
        """The device of this thread's current context (None without one)."""
        stack = self.stack()
        return stack[-1].device if stack else None

    def require_context(self, what: str) -> int:
        device = self.current_device()
        if device is None:
            raise FakeCudaError(f"fake pycuda: {what} without a current CUDA context in this thread")
        return device

    def require_init(self, what: str) -> None:
        if not self.initialized:
            raise FakeCudaError(f"fake pycuda: {what} before cuda.init() (cuInit has not been called)")


def make_fake_pycuda(devices: list[FakeDevice] | None = None):
    """A fake pycuda with `devices` (default: one Jetson AGX Orin)."""
    rec = Recorder(list(devices or [ORIN]))
    driver = types.ModuleType("pycuda.driver")

    def init():
        rec.initialized = True
        rec.calls.append(("init",))

    device_attribute = type("device_attribute", (), {"INTEGRATED": "INTEGRATED",
                                                     "MULTIPROCESSOR_COUNT": "MULTIPROCESSOR_COUNT"})

    class Context:
        def __init__(self, device: int):
            self.device, self.valid, self.thread = device, True, threading.get_ident()

        def push(self):
            if not self.valid:
                raise FakeCudaError("fake pycuda: cannot push a detached context")
            rec.stack().append(self)
            rec.calls.append(("push",))

        @staticmethod
        def pop():
            stack = rec.stack()
            if not stack:
                raise FakeCudaError("fake pycuda: context::pop: cannot pop non-current context (empty stack)")
            stack.pop()
            rec.calls.append(("pop",))

        def detach(self):
            if not self.valid:
                raise FakeCudaError("fake pycuda: context::detach: cannot detach from invalid context")
            stack = rec.stack()
            if stack and stack[-1] is self:
                stack.pop()
            elif self.thread == threading.get_ident():
                rec.stale.append(self)  # cuCtxPushCurrent, release, no pop
            else:
                rec.calls.append(("detach-leaked",))
                self.valid = False
                return
            rec.retained[self.device] -= 1
            self.valid = False
            rec.calls.append(("detach",))

        @staticmethod
        def synchronize():
            rec.require_context("Context.synchronize")

    class Device:
        def __init__(self, index):
            rec.require_init("Device()")
            if not 0 <= index < len(rec.devices):
                raise FakeCudaError(f"fake pycuda: invalid device ordinal {index}")
            self.index = index

        @staticmethod
        def count():
            rec.require_init("Device.count()")
            return len(rec.devices)

        def name(self):
            return rec.devices[self.index].name

        def compute_capability(self):
            return rec.devices[self.index].compute_capability

        def get_attribute(self, attribute):
            if attribute == device_attribute.INTEGRATED:
                return int(rec.devices[self.index].integrated)
            return 0

        def total_memory(self):
            return rec.devices[self.index].total_memory

        def retain_primary_context(self):
            rec.retained[self.index] = rec.retained.get(self.index, 0) + 1
            rec.calls.append(("retain", self.index))
            return Context(self.index)

    class DeviceAllocation:
        def __init__(self, nbytes, device):
            self.pointer = rec.next_pointer
            rec.next_pointer += max(nbytes, 1) + 256
            rec.memory[self.pointer] = np.zeros(nbytes, np.uint8)
            rec.owner[self.pointer] = device

        def __int__(self):
            return self.pointer

        def free(self):
            rec.require_context("DeviceAllocation.free")
            if self.pointer in rec.freed:
                raise FakeCudaError(f"fake pycuda: device memory {self.pointer:#x} freed twice")
            rec.freed.add(self.pointer)
            rec.calls.append(("free", self.pointer))

    class HostAllocation(bytearray):
        """Page-locked host memory: the `base` of the arrays pagelocked_empty returns, as in pycuda."""

        freed = False

        def free(self):
            rec.require_context("HostAllocation.free")
            if self.freed:
                raise FakeCudaError("fake pycuda: page-locked memory freed twice")
            self.freed = True
            rec.calls.append(("free_host", len(self)))

    class Event:
        def __init__(self):
            rec.require_context("Event()")
            self.time, self.stream, self.complete = None, None, False

        def record(self, stream=None):
            rec.clock_ms += 0.25
            self.time, self.stream, self.complete = rec.clock_ms, stream, False
            if stream is not None:
                stream.pending.append(self)
            rec.calls.append(("event", stream.handle if stream else None))

        def synchronize(self):
            self.complete = self.time is not None

        def query(self):
            return self.complete

        def time_since(self, other):
            if not (self.complete and other.complete):
                raise FakeCudaError("fake pycuda: cuEventElapsedTime failed: device not ready "
                                    "(the events have not completed; synchronize first)")
            return self.time - other.time

    class Stream:
        def __init__(self):
            rec.require_context("Stream()")
            self.handle = next(rec.handles)
            self.pending: list[Event] = []

        def synchronize(self):
            for event in self.pending:
                event.complete = True
            self.pending.clear()
            rec.calls.append(("synchronize", self.handle))

    def pagelocked_empty(shape, dtype):
        rec.require_context("pagelocked_empty")
        dtype = np.dtype(dtype)
        allocation = HostAllocation(int(np.prod(shape)) * dtype.itemsize)
        rec.pinned.append(allocation)
        return np.ndarray(shape, dtype, buffer=allocation)

    def mem_alloc(nbytes):
        return DeviceAllocation(nbytes, rec.require_context("mem_alloc"))

    def mem_get_info():
        device = rec.require_context("mem_get_info")
        total = rec.devices[device].total_memory
        used = sum(a.size for p, a in rec.memory.items() if p not in rec.freed and rec.owner[p] == device)
        return total - used, total

    def _check_pinned(array):
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        if not (isinstance(base, HostAllocation) and not base.freed):
            raise FakeCudaError("fake pycuda: async copy with host memory that is not page-locked")

    def _check_device(pointer):
        if pointer not in rec.memory or pointer in rec.freed:
            raise FakeCudaError(f"fake pycuda: device memory {pointer:#x} is not allocated")

    def memcpy_htod_async(dest, src, stream=None):
        rec.require_context("memcpy_htod_async")
        _check_pinned(src)
        _check_device(int(dest))
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        rec.memory[int(dest)][: raw.size] = raw
        rec.calls.append(("htod", int(dest), stream.handle if stream else None))

    def memcpy_dtoh_async(dest, src, stream=None):
        rec.require_context("memcpy_dtoh_async")
        _check_pinned(dest)
        _check_device(int(src))
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = rec.memory[int(src)][: flat.size]
        rec.calls.append(("dtoh", int(src), stream.handle if stream else None))

    for name, value in dict(init=init, Context=Context, Device=Device, Stream=Stream, Event=Event,
                            device_attribute=device_attribute, pagelocked_empty=pagelocked_empty,
                            mem_alloc=mem_alloc, mem_get_info=mem_get_info, memcpy_htod_async=memcpy_htod_async,
                            memcpy_dtoh_async=memcpy_dtoh_async, Error=FakeCudaError, LogicError=FakeCudaError).items():
        setattr(driver, name, value)
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package, driver, rec


def install(monkeypatch, **kwargs) -> Recorder:
    package, driver, rec = make_fake_pycuda(**kwargs)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return rec
