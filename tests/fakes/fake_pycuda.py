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
  on was synchronized, or the events themselves), as cuEventElapsedTime does;
- streams are asynchronous: work queued on a stream (copies, event records, an engine's enqueue, a
  kernel) runs only when the stream, an event recorded after it, or the context is synchronized, or
  when memory is freed (cuMemFree synchronizes); until then a device-to-host copy's destination holds
  its stale bytes and a host-to-device copy reads its source when it runs, as on a GPU;
- device pointers are 512-byte aligned as cuMemAlloc's are (`misalign` shifts the next ones, for tests);
  an allocation beyond the device's free memory (or the `fail_allocation_after`-th from now) fails with
  CUDA_ERROR_OUT_OF_MEMORY; `device_bytes_in_use` counts every live allocation, a TensorRT execution
  context's activation memory included.
It records the order of stream operations and tracks every allocation, so tests can check that
H2D precedes execute precedes D2H on one stream and that everything is freed.

pycuda has no CUDA graph API, so the project calls the driver's through ctypes; `FakeLibcuda`
stands in for `libcuda.so.1` (its seven functions, with cuda.h's prototypes; ctypes arguments are
checked) on the same machine, as strict as CUDA's stream-capture rules where our code depends on them:
- capture only on a stream made here, never the legacy default stream (handle 0), not twice, ended
  from the thread that began it (thread-local and global modes);
- work on the legacy default stream (any thread) while a blocking stream (flags 0) captures fails with
  CUDA_ERROR_STREAM_CAPTURE_IMPLICIT and invalidates the capture; a non-blocking stream's capture survives;
- while a thread captures, a synchronizing or allocating call from it (stream, context or event
  synchronize, mem_alloc, pagelocked_empty, frees) fails with CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
  and invalidates the capture, whose end then returns CUDA_ERROR_STREAM_CAPTURE_INVALIDATED and no graph;
- work queued on a capturing stream (async copies, event records, an engine's enqueue, a kernel via
  `Recorder.launch`) is recorded, not run; launching the instantiated graph replays it in order,
  reading host and device memory at launch time, as a real graph does.
"""

from __future__ import annotations

import ctypes
import itertools
import sys
import threading
import types
from dataclasses import dataclass, field
from typing import Callable

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


CAPTURE_UNSUPPORTED, CAPTURE_INVALIDATED, CAPTURE_WRONG_THREAD = 900, 901, 908
NON_BLOCKING = 1  # CU_STREAM_NON_BLOCKING
ERROR_NAMES = {0: "CUDA_SUCCESS", 1: "CUDA_ERROR_INVALID_VALUE", 201: "CUDA_ERROR_INVALID_CONTEXT",
               400: "CUDA_ERROR_INVALID_HANDLE", 401: "CUDA_ERROR_ILLEGAL_STATE",
               CAPTURE_UNSUPPORTED: "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED",
               CAPTURE_INVALIDATED: "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED",
               CAPTURE_WRONG_THREAD: "CUDA_ERROR_STREAM_CAPTURE_WRONG_THREAD"}
Op = Callable[[object], None]  # work queued on a stream; replayed with the stream a graph is launched on


@dataclass
class Capture:
    """A stream capture in progress: who began it, in which mode, what it recorded, why it broke."""

    thread: int
    mode: int
    ops: list = field(default_factory=list)
    invalidated: str | None = None


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
        self.streams: dict[int, object] = {}
        self.captures: dict[int, Capture] = {}   # stream handle -> capture in progress
        self.graphs: dict[int, list[Op]] = {}
        self.executables: dict[int, list[Op]] = {}
        self.libcuda = FakeLibcuda(self)
        self.misalign = 0                               # added to the next device pointers (tests)
        self.fail_allocation_after: int | None = None   # the allocation that many from now fails (tests)

    def capture_of(self, stream_handle: int) -> Capture | None:
        return self.captures.get(stream_handle)

    def run_or_record(self, stream, op: Op, what: str) -> None:
        """Queue `op` on `stream` (it runs when the stream is synchronized), or add it to the graph being
        captured there; without a stream (the legacy default stream) it runs now."""
        capture = self.capture_of(stream.handle) if stream is not None else None
        if capture is not None:
            capture.ops.append(op)
            self.calls.append(("captured", what, stream.handle))
        elif stream is None:
            self.legacy_stream_work(what)
            for other in list(self.streams.values()):  # the legacy stream waits for the blocking streams
                if not other.flags & NON_BLOCKING:
                    self.drain(other)
            op(stream)
        else:
            stream.queue.append(op)

    def legacy_stream_work(self, what: str) -> None:
        """Work on the legacy default stream waits for every blocking stream: CUDA refuses it while a blocking
        stream captures (CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) and invalidates that capture; a stream made with
        CU_STREAM_NON_BLOCKING (flags=1) does not synchronize with the legacy stream and keeps capturing."""
        blocking = [c for h, c in self.captures.items() if not self.streams[h].flags & NON_BLOCKING]
        if blocking:
            for capture in blocking:
                capture.invalidated = capture.invalidated or f"{what} on the legacy default stream"
            self.calls.append(("capture invalidated", f"{what} on the legacy default stream"))
            raise FakeCudaError(f"fake pycuda: {what} on the legacy default stream: CUDA_ERROR_STREAM_CAPTURE_IMPLICIT "
                                "(a blocking stream is capturing)")

    def drain(self, stream, until: Op | None = None) -> None:
        """Run `stream`'s queued work in order (up to and including `until`)."""
        while stream.queue:
            op = stream.queue.pop(0)
            op(stream)
            if op is until:
                return

    def drain_all(self) -> None:
        """Run every stream's queued work (a device-wide synchronization)."""
        for stream in list(self.streams.values()):
            self.drain(stream)

    def allocate(self, nbytes: int, device: int) -> int:
        """A device pointer of `nbytes` on `device` (512-byte aligned), or CUDA_ERROR_OUT_OF_MEMORY."""
        if self.fail_allocation_after is not None:
            self.fail_allocation_after -= 1
            if self.fail_allocation_after < 0:
                self.fail_allocation_after = None
                raise FakeCudaError("fake pycuda: cuMemAlloc failed: out of memory (CUDA_ERROR_OUT_OF_MEMORY)")
        if self.device_bytes_in_use(device) + nbytes > self.devices[device].total_memory:
            raise FakeCudaError("fake pycuda: cuMemAlloc failed: out of memory (CUDA_ERROR_OUT_OF_MEMORY)")
        pointer = self.next_pointer + self.misalign
        self.next_pointer += (max(nbytes, 1) + 1023) // 512 * 512
        self.memory[pointer] = np.zeros(nbytes, np.uint8)
        self.owner[pointer] = device
        self.calls.append(("alloc", pointer, nbytes))
        return pointer

    def release(self, pointer: int) -> None:
        """cuMemFree: synchronizes the device first, refuses a double free."""
        self.drain_all()
        if pointer in self.freed or pointer not in self.memory:
            raise FakeCudaError(f"fake pycuda: device memory {pointer:#x} freed twice")
        self.freed.add(pointer)
        self.calls.append(("free", pointer))

    def launch(self, stream, work: Callable[[], None]) -> None:
        """A kernel launch on `stream` (tests' stand-ins for CUDA kernels): runs, or is captured."""
        self.require_context("kernel launch")
        self.run_or_record(stream, lambda _: work(), "kernel")

    def refuse_during_capture(self, what: str) -> None:
        """A call that synchronizes or allocates: CUDA refuses it while this thread captures (thread-local or
        global mode) and invalidates the capture."""
        thread = threading.get_ident()
        breaking = [c for c in self.captures.values() if c.thread == thread or c.mode == 0]
        if breaking:
            for capture in breaking:
                capture.invalidated = capture.invalidated or what
            self.calls.append(("capture invalidated", what))
            raise FakeCudaError(f"fake pycuda: {what}: CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED (operation not "
                                "permitted when stream is capturing)")

    def stack(self) -> list:
        return self.stacks.setdefault(threading.get_ident(), [])

    @property
    def context_depth(self) -> int:
        """Contexts on any thread's stack (stale entries included)."""
        return sum(len(s) for s in self.stacks.values()) + len(self.stale)

    def pinned_alive(self) -> int:
        return sum(not h.freed for h in self.pinned)

    def device_bytes_in_use(self, device: int | None = None) -> int:
        return sum(a.size for p, a in self.memory.items()
                   if p not in self.freed and device in (None, self.owner[p]))

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
            rec.refuse_during_capture("Context.synchronize")
            rec.drain_all()

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
            self.pointer = rec.allocate(nbytes, device)

        def __int__(self):
            return self.pointer

        def free(self):
            rec.require_context("DeviceAllocation.free")
            rec.refuse_during_capture("DeviceAllocation.free")
            rec.release(self.pointer)

    class HostAllocation(bytearray):
        """Page-locked host memory: the `base` of the arrays pagelocked_empty returns, as in pycuda."""

        freed = False

        def free(self):
            rec.require_context("HostAllocation.free")
            rec.refuse_during_capture("HostAllocation.free")
            if self.freed:
                raise FakeCudaError("fake pycuda: page-locked memory freed twice")
            rec.drain_all()  # cuMemFreeHost synchronizes too
            self.freed = True
            rec.calls.append(("free_host", len(self)))

    class Event:
        def __init__(self):
            rec.require_context("Event()")
            self.time, self.stream, self.complete, self._op = None, None, False, None

        def record(self, stream=None):
            self.complete, self.stream = False, stream
            self._op = lambda queued: self._record(queued)
            rec.run_or_record(stream, self._op, "event")
            rec.calls.append(("event", stream.handle if stream else None))

        def _record(self, stream):
            """The event is reached: the work queued before it on its stream has run."""
            rec.clock_ms += 0.25
            self.time, self.stream, self.complete = rec.clock_ms, stream, True

        def synchronize(self):
            """Wait for the event: runs its stream's work up to the record."""
            rec.refuse_during_capture("Event.synchronize")
            if self.stream is not None and self._op in self.stream.queue:
                rec.drain(self.stream, until=self._op)

        def query(self):
            return self.complete

        def time_since(self, other):
            if not (self.complete and other.complete):
                raise FakeCudaError("fake pycuda: cuEventElapsedTime failed: device not ready "
                                    "(the events have not completed; synchronize first)")
            return self.time - other.time

    class Stream:
        def __init__(self, flags=0):
            rec.require_context("Stream()")
            self.handle = next(rec.handles)
            self.flags = flags
            self.queue: list[Op] = []
            rec.streams[self.handle] = self
            rec.calls.append(("stream", self.handle, flags))

        def synchronize(self):
            if rec.capture_of(self.handle) is not None:
                rec.refuse_during_capture("Stream.synchronize of the capturing stream")
            rec.drain(self)
            rec.calls.append(("synchronize", self.handle))

        def is_done(self):
            return not self.queue

    def pagelocked_empty(shape, dtype):
        rec.require_context("pagelocked_empty")
        rec.refuse_during_capture("pagelocked_empty")
        dtype = np.dtype(dtype)
        allocation = HostAllocation(int(np.prod(shape)) * dtype.itemsize)
        rec.pinned.append(allocation)
        return np.ndarray(shape, dtype, buffer=allocation)

    def mem_alloc(nbytes):
        device = rec.require_context("mem_alloc")
        rec.refuse_during_capture("mem_alloc")
        return DeviceAllocation(nbytes, device)

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

        def copy(_):
            raw = np.ascontiguousarray(src).view(np.uint8).reshape(-1)
            rec.memory[int(dest)][: raw.size] = raw

        rec.run_or_record(stream, copy, "htod")
        rec.calls.append(("htod", int(dest), stream.handle if stream else None))

    def memcpy_dtoh_async(dest, src, stream=None):
        rec.require_context("memcpy_dtoh_async")
        _check_pinned(dest)
        _check_device(int(src))

        def copy(_):
            flat = dest.reshape(-1).view(np.uint8)
            flat[:] = rec.memory[int(src)][: flat.size]

        rec.run_or_record(stream, copy, "dtoh")
        rec.calls.append(("dtoh", int(src), stream.handle if stream else None))

    for name, value in dict(init=init, Context=Context, Device=Device, Stream=Stream, Event=Event,
                            device_attribute=device_attribute, pagelocked_empty=pagelocked_empty,
                            mem_alloc=mem_alloc, mem_get_info=mem_get_info, memcpy_htod_async=memcpy_htod_async,
                            memcpy_dtoh_async=memcpy_dtoh_async, Error=FakeCudaError, LogicError=FakeCudaError).items():
        setattr(driver, name, value)
    package = types.ModuleType("pycuda")
    package.driver = driver
    return package, driver, rec


P = ctypes.POINTER
# cuda.h's prototypes (CUDA 13.0; unchanged since 11.4) of the driver functions the project calls.
PROTOTYPES = {
    "cuStreamBeginCapture_v2": (ctypes.c_void_p, ctypes.c_int),
    "cuStreamEndCapture": (ctypes.c_void_p, P(ctypes.c_void_p)),
    "cuGraphInstantiateWithFlags": (P(ctypes.c_void_p), ctypes.c_void_p, ctypes.c_ulonglong),
    "cuGraphLaunch": (ctypes.c_void_p, ctypes.c_void_p),
    "cuGraphExecDestroy": (ctypes.c_void_p,),
    "cuGraphDestroy": (ctypes.c_void_p,),
    "cuGetErrorName": (ctypes.c_int, P(ctypes.c_char_p)),
}
_BYREF = type(ctypes.byref(ctypes.c_int()))


def _check_argument(name: str, index: int, expected, value) -> None:
    """The ctypes object our code passes must be what the prototype takes (a pointer: `byref` of its target)."""
    if hasattr(expected, "_type_") and issubclass(expected, ctypes._Pointer):
        ok = isinstance(value, _BYREF) and isinstance(value._obj, expected._type_)
    else:
        ok = isinstance(value, expected)
    if not ok:
        raise ctypes.ArgumentError(f"fake libcuda: {name} argument {index + 1}: expected {expected.__name__}, "
                                   f"got {type(value).__name__}")


class FakeFunction:
    """A driver function as ctypes exposes it: `argtypes`/`restype` must be set to the prototype's."""

    def __init__(self, name: str, implementation):
        self.name, self.implementation = name, implementation
        self.argtypes, self.restype = None, ctypes.c_int

    def __call__(self, *args):
        prototype = PROTOTYPES[self.name]
        if self.argtypes != list(prototype) or self.restype is not ctypes.c_int:
            raise ctypes.ArgumentError(f"fake libcuda: {self.name} called with argtypes {self.argtypes}, "
                                       f"cuda.h declares {list(prototype)}")
        if len(args) != len(prototype):
            raise TypeError(f"fake libcuda: {self.name} takes {len(prototype)} arguments ({len(args)} given)")
        for index, (expected, value) in enumerate(zip(prototype, args)):
            _check_argument(self.name, index, expected, value)
        return self.implementation(*args)


class FakeLibcuda:
    """`libcuda.so.1`'s stream-capture and graph functions on the fake machine; return CUresult codes."""

    def __init__(self, rec: Recorder):
        self._rec = rec
        self._handles = itertools.count(0x6000)
        for name in PROTOTYPES:
            setattr(self, name, FakeFunction(name, getattr(self, "_" + name)))

    def _no_context(self) -> bool:
        return self._rec.current_device() is None

    def _cuStreamBeginCapture_v2(self, stream, mode):
        rec = self._rec
        rec.calls.append(("begin_capture", stream.value or 0, mode.value))
        if self._no_context():
            return 201
        if not stream.value:
            return CAPTURE_UNSUPPORTED  # capture may not be initiated on the legacy default stream
        if stream.value not in rec.streams or mode.value not in (0, 1, 2):
            return 1
        if rec.capture_of(stream.value) is not None:
            return 401
        rec.captures[stream.value] = Capture(threading.get_ident(), mode.value)
        return 0

    def _cuStreamEndCapture(self, stream, graph):
        rec = self._rec
        rec.calls.append(("end_capture", stream.value or 0))
        capture = rec.capture_of(stream.value or 0)
        if capture is None:
            return 401
        if capture.mode != 2 and capture.thread != threading.get_ident():
            return CAPTURE_WRONG_THREAD
        del rec.captures[stream.value]
        if capture.invalidated:
            graph._obj.value = None
            return CAPTURE_INVALIDATED
        handle = next(self._handles)
        rec.graphs[handle] = list(capture.ops)
        graph._obj.value = handle
        return 0

    def _cuGraphInstantiateWithFlags(self, executable, graph, flags):
        rec = self._rec
        rec.calls.append(("instantiate", graph.value))
        if self._no_context():
            return 201
        if graph.value not in rec.graphs or flags.value != 0:
            return 400 if graph.value not in rec.graphs else 1
        handle = next(self._handles)
        rec.executables[handle] = list(rec.graphs[graph.value])
        executable._obj.value = handle
        return 0

    def _cuGraphLaunch(self, executable, stream):
        rec = self._rec
        rec.calls.append(("graph_launch", executable.value, stream.value or 0))
        if self._no_context():
            return 201
        if executable.value not in rec.executables:
            return 400
        target = rec.streams.get(stream.value) if stream.value else None
        for op in rec.executables[executable.value]:
            rec.run_or_record(target, op, "graph node")
        return 0

    def _cuGraphExecDestroy(self, executable):
        self._rec.calls.append(("graph_exec_destroy", executable.value))
        return 0 if self._rec.executables.pop(executable.value, None) is not None else 400

    def _cuGraphDestroy(self, graph):
        self._rec.calls.append(("graph_destroy", graph.value))
        return 0 if self._rec.graphs.pop(graph.value, None) is not None else 400

    def _cuGetErrorName(self, code, text):
        name = ERROR_NAMES.get(code.value)
        text._obj.value = name.encode() if name else None
        return 0 if name else 1


def install(monkeypatch, **kwargs) -> Recorder:
    package, driver, rec = make_fake_pycuda(**kwargs)
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    monkeypatch.setattr("resnet_deploy.trt.cudagraph.cuda_library", lambda: rec.libcuda)
    return rec
