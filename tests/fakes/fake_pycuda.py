"""A recording fake of `pycuda.driver`: device memory is numpy arrays keyed by pointer.

It records the order of stream operations and tracks every allocation (device and page-locked
host), so tests can check that H2D precedes execute precedes D2H on one stream and that
everything is freed. As in CUDA, the context stack is per thread and allocations, copies, streams
and events need a current context; async copies need page-locked host memory.
"""

from __future__ import annotations

import sys
import threading
import types

import numpy as np


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []
        self.memory: dict[int, np.ndarray] = {}
        self.freed: set[int] = set()
        self.pinned: list = []
        self.next_pointer = 0x1000
        self.depth: dict[int, int] = {}
        self.clock_ms = 0.0

    @property
    def context_depth(self) -> int:
        """Contexts pushed and not popped, over all threads."""
        return sum(self.depth.values())

    def pinned_alive(self) -> int:
        return sum(not h.freed for h in self.pinned)

    def require_context(self, what: str) -> None:
        if not self.depth.get(threading.get_ident()):
            raise RuntimeError(f"fake pycuda: {what} without a current CUDA context in this thread")


def make_fake_pycuda(device_name: str = "NVIDIA Jetson AGX Orin", compute_capability=(8, 7)):
    rec = Recorder()
    driver = types.ModuleType("pycuda.driver")

    def init():
        rec.calls.append(("init",))

    class Context:
        def push(self):
            thread = threading.get_ident()
            rec.depth[thread] = rec.depth.get(thread, 0) + 1
            rec.calls.append(("push",))

        @staticmethod
        def pop():
            thread = threading.get_ident()
            if not rec.depth.get(thread):
                raise RuntimeError("fake pycuda: Context.pop() with no context pushed in this thread")
            rec.depth[thread] -= 1
            rec.calls.append(("pop",))

        def detach(self):
            rec.calls.append(("detach",))

    class Device:
        def __init__(self, index):
            self.index = index

        @staticmethod
        def count():
            return 1

        def name(self):
            return device_name

        def compute_capability(self):
            return compute_capability

        def retain_primary_context(self):
            return Context()

    class DeviceAllocation:
        def __init__(self, nbytes):
            self.pointer = rec.next_pointer
            rec.next_pointer += max(nbytes, 1) + 256
            rec.memory[self.pointer] = np.zeros(nbytes, np.uint8)

        def __int__(self):
            return self.pointer

        def free(self):
            rec.require_context("DeviceAllocation.free")
            if self.pointer in rec.freed:
                raise RuntimeError(f"fake pycuda: device memory {self.pointer:#x} freed twice")
            rec.freed.add(self.pointer)
            rec.calls.append(("free", self.pointer))

    class HostAllocation(bytearray):
        """Page-locked host memory: the `base` of the arrays pagelocked_empty returns, as in pycuda."""

        freed = False

        def free(self):
            rec.require_context("HostAllocation.free")
            if self.freed:
                raise RuntimeError("fake pycuda: page-locked memory freed twice")
            self.freed = True
            rec.calls.append(("free_host", len(self)))

    class Stream:
        def __init__(self):
            rec.require_context("Stream()")
            self.handle = 0xABC

        def synchronize(self):
            rec.calls.append(("synchronize", self.handle))

    class Event:
        def __init__(self):
            rec.require_context("Event()")
            self.time = None

        def record(self, stream=None):
            rec.clock_ms += 0.25
            self.time = rec.clock_ms
            rec.calls.append(("event", stream.handle if stream else None))

        def time_since(self, other):
            return self.time - other.time

    def pagelocked_empty(shape, dtype):
        rec.require_context("pagelocked_empty")
        dtype = np.dtype(dtype)
        allocation = HostAllocation(int(np.prod(shape)) * dtype.itemsize)
        rec.pinned.append(allocation)
        return np.ndarray(shape, dtype, buffer=allocation)

    def mem_alloc(nbytes):
        rec.require_context("mem_alloc")
        return DeviceAllocation(nbytes)

    def _check_pinned(array):
        base = array
        while isinstance(base, np.ndarray):
            base = base.base
        assert isinstance(base, HostAllocation) and not base.freed, "async copy with memory that is not page-locked"

    def _check_device(pointer):
        assert pointer in rec.memory and pointer not in rec.freed, f"device memory {pointer:#x} is not allocated"

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
                            pagelocked_empty=pagelocked_empty, mem_alloc=mem_alloc,
                            memcpy_htod_async=memcpy_htod_async, memcpy_dtoh_async=memcpy_dtoh_async).items():
        setattr(driver, name, value)
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package, driver, rec


def install(monkeypatch, **kwargs):
    package, driver, rec = make_fake_pycuda(**kwargs)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    return rec
