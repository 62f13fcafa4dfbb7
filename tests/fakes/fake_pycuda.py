"""A recording fake of `pycuda.driver`: device memory is numpy arrays keyed by pointer.

It records the order of stream operations and tracks every allocation, so tests can check that
H2D precedes execute precedes D2H on one stream, and that everything is freed.
"""

from __future__ import annotations

import sys
import types

import numpy as np


class Recorder:
    def __init__(self):
        self.calls: list[tuple] = []
        self.memory: dict[int, np.ndarray] = {}
        self.pinned: list[np.ndarray] = []
        self.freed: set[int] = set()
        self.next_pointer = 0x1000
        self.context_depth = 0
        self.clock_ms = 0.0


def make_fake_pycuda(device_name: str = "NVIDIA Jetson AGX Orin", compute_capability=(8, 7)):
    rec = Recorder()
    driver = types.ModuleType("pycuda.driver")

    def init():
        rec.calls.append(("init",))

    class Context:
        def push(self):
            rec.context_depth += 1
            rec.calls.append(("push",))

        @staticmethod
        def pop():
            rec.context_depth -= 1
            rec.calls.append(("pop",))

        def detach(self):
            rec.calls.append(("detach",))

    class Device:
        def __init__(self, index):
            self.index = index

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
            rec.freed.add(self.pointer)
            rec.calls.append(("free", self.pointer))

    class Stream:
        def __init__(self):
            self.handle = 0xABC

        def synchronize(self):
            rec.calls.append(("synchronize", self.handle))

    class Event:
        def __init__(self):
            self.time = None

        def record(self, stream=None):
            rec.clock_ms += 0.25
            self.time = rec.clock_ms
            rec.calls.append(("event", stream.handle if stream else None))

        def time_since(self, other):
            return self.time - other.time

    def pagelocked_empty(shape, dtype):
        array = np.empty(shape, dtype)
        rec.pinned.append(array)
        return array

    def mem_alloc(nbytes):
        return DeviceAllocation(nbytes)

    def _check_pinned(array):
        base = array
        while getattr(base, "base", None) is not None and not any(base is p for p in rec.pinned):
            base = base.base
        assert any(base is p for p in rec.pinned), "async copy from memory that is not page-locked"

    def memcpy_htod_async(dest, src, stream):
        _check_pinned(src)
        raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
        rec.memory[int(dest)][: raw.size] = raw
        rec.calls.append(("htod", int(dest), stream.handle))

    def memcpy_dtoh_async(dest, src, stream):
        _check_pinned(dest)
        flat = dest.reshape(-1).view(np.uint8)
        flat[:] = rec.memory[int(src)][: flat.size]
        rec.calls.append(("dtoh", int(src), stream.handle))

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
