"""CUDA graphs of the engine's enqueue (trtexec `--useCudaGraph`), through the CUDA driver API.

pycuda has no graph API: neither 2025.1.2 (the sdist in tools/gpu_smoke) nor upstream pycuda up to
2026.1 wrap cuStreamBeginCapture or cuGraph* (the pull requests that tried were never merged). So the
seven driver functions below are called through ctypes on `libcuda.so.1`, the driver library pycuda
itself links, with the stream handle pycuda gives (`Stream.handle` is the CUstream). Their argument
types are those of cuda.h (CUDA 12 and 13; `tests/test_fakes_match_real.py` compiles them against the
header where one is installed); the public names `cuStreamBeginCapture` and `cuGraphInstantiate` are
macros for the `_v2` / `WithFlags` symbols called here.

`CudaGraphs` follows trtexec (samples/common/sampleInference.cpp, `TrtCudaGraph` in sampleDevice.h):
for each new batch shape run the work once as a warm-up (TensorRT sets itself up on the first
enqueue after a shape change, which a capture forbids: TensorRT issue 2603), synchronize, capture
the same work in thread-local mode, instantiate it; later calls with that shape launch the graph. Where capture is not possible (no driver symbol, an engine with operations a capture forbids)
it says so once and runs without graphs from then on, as trtexec does.
"""

from __future__ import annotations

import ctypes
from typing import Any, Callable

from resnet_deploy.errors import ResnetDeployError

LIBRARY = "libcuda.so.1"
SUCCESS = 0
CAPTURE_INVALIDATED = 901  # CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
CAPTURE_MODE_THREAD_LOCAL = 1  # CU_STREAM_CAPTURE_MODE_THREAD_LOCAL, trtexec's mode

# Driver symbol -> its parameters' C types, as cuda.h declares them.
SIGNATURES: dict[str, tuple[str, ...]] = {
    "cuStreamBeginCapture_v2": ("CUstream", "CUstreamCaptureMode"),
    "cuStreamEndCapture": ("CUstream", "CUgraph *"),
    "cuGraphInstantiateWithFlags": ("CUgraphExec *", "CUgraph", "unsigned long long"),
    "cuGraphLaunch": ("CUgraphExec", "CUstream"),
    "cuGraphExecDestroy": ("CUgraphExec",),
    "cuGraphDestroy": ("CUgraph",),
    "cuGetErrorName": ("CUresult", "const char **"),
}
# C type -> ctypes type (handles are opaque pointers, enums and CUresult are C ints).
CTYPES = {
    "CUstream": ctypes.c_void_p,
    "CUgraph": ctypes.c_void_p,
    "CUgraphExec": ctypes.c_void_p,
    "CUgraph *": ctypes.POINTER(ctypes.c_void_p),
    "CUgraphExec *": ctypes.POINTER(ctypes.c_void_p),
    "CUstreamCaptureMode": ctypes.c_int,
    "CUresult": ctypes.c_int,
    "unsigned long long": ctypes.c_ulonglong,
    "const char **": ctypes.POINTER(ctypes.c_char_p),
}


class CudaGraphError(ResnetDeployError):
    """A driver call of the graph API failed; `code` is its CUresult."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class GraphsUnavailable(ResnetDeployError):
    """The driver library or one of its graph functions cannot be loaded here."""


def cuda_library() -> Any:
    """The CUDA driver library (the test fakes replace this function)."""
    return ctypes.CDLL(LIBRARY)


class GraphAPI:
    """The driver's stream-capture and graph functions with their C signatures."""

    def __init__(self, library: Any):
        self._functions = {}
        for name, parameters in SIGNATURES.items():
            try:
                function = getattr(library, name)
            except AttributeError as exc:
                raise GraphsUnavailable(f"the CUDA driver has no {name} (CUDA 11.4 or later needed)") from exc
            function.argtypes = [CTYPES[p] for p in parameters]
            function.restype = ctypes.c_int
            self._functions[name] = function

    def _call(self, name: str, *args) -> None:
        code = self._functions[name](*args)
        if code != SUCCESS:
            raise CudaGraphError(f"{name} failed: {self.error_name(code)} ({code})", code)

    def error_name(self, code: int) -> str:
        text = ctypes.c_char_p()
        if self._functions["cuGetErrorName"](ctypes.c_int(code), ctypes.byref(text)) != SUCCESS or not text.value:
            return "unknown CUDA error"
        return text.value.decode()

    def begin_capture(self, stream_handle: int) -> None:
        self._call("cuStreamBeginCapture_v2", ctypes.c_void_p(stream_handle), ctypes.c_int(CAPTURE_MODE_THREAD_LOCAL))

    def end_capture(self, stream_handle: int) -> int | None:
        """The captured graph; raises `CudaGraphError` (its graph destroyed) when the capture was invalidated."""
        graph = ctypes.c_void_p()
        code = self._functions["cuStreamEndCapture"](ctypes.c_void_p(stream_handle), ctypes.byref(graph))
        if code != SUCCESS:
            if graph.value:
                self.destroy_graph(graph.value)
            raise CudaGraphError(f"cuStreamEndCapture failed: {self.error_name(code)} ({code})", code)
        return graph.value

    def instantiate(self, graph: int) -> int:
        executable = ctypes.c_void_p()
        self._call(
            "cuGraphInstantiateWithFlags", ctypes.byref(executable), ctypes.c_void_p(graph), ctypes.c_ulonglong(0)
        )
        assert executable.value is not None  # a successful cuGraphInstantiate writes the executable's handle
        return executable.value

    def launch(self, executable: int, stream_handle: int) -> None:
        self._call("cuGraphLaunch", ctypes.c_void_p(executable), ctypes.c_void_p(stream_handle))

    def destroy_graph(self, graph: int) -> None:
        self._call("cuGraphDestroy", ctypes.c_void_p(graph))

    def destroy_executable(self, executable: int) -> None:
        self._call("cuGraphExecDestroy", ctypes.c_void_p(executable))


def load_graph_api() -> GraphAPI:
    """The graph API of this machine's CUDA driver, or `GraphsUnavailable` saying why not."""
    try:
        library = cuda_library()
    except OSError as exc:
        raise GraphsUnavailable(f"{LIBRARY} cannot be loaded: {exc}") from exc
    return GraphAPI(library)


Enqueue = Callable[[Any], None]
Shape = tuple[int, ...]


class CudaGraphs:
    """One CUDA graph per batch shape, captured from `enqueue` after a warm-up run and launched on later calls.

    Use with the owning CUDA context current. `notice` receives the one-line reason when graphs are
    not used (`unavailable`: the caller's reason, e.g. a DLA engine; the driver lacks them; a capture
    failed); from then on `run` calls `enqueue` directly. The capture stream must be non-blocking
    (CU_STREAM_NON_BLOCKING): legacy-default-stream work from another thread would invalidate the
    capture of a blocking one.
    """

    def __init__(self, notice: Callable[[str], None], unavailable: str | None = None):
        self._notice = notice
        self._executables: dict[Shape, int] = {}
        self.fallback: str | None = None
        self._api: GraphAPI | None = None
        if unavailable is not None:
            self._fall_back(unavailable)
            return
        try:
            self._api = load_graph_api()
        except GraphsUnavailable as exc:
            self._fall_back(f"CUDA graphs are not available here ({exc}); running without them")

    @property
    def active(self) -> bool:
        return self._api is not None and self.fallback is None

    def run(self, shape: Shape, stream: Any, enqueue: Enqueue) -> None:
        """Queue the work of batch `shape` on `stream`: launch its graph, or run `enqueue` (the first time as
        the warm-up whose results this call returns, then capture it)."""
        if not self.active:
            enqueue(stream)
            return
        api = self._api
        assert api is not None  # active: the graph API is loaded
        executable = self._executables.get(shape)
        if executable is not None:
            api.launch(executable, stream.handle)
            return
        enqueue(stream)
        stream.synchronize()
        try:
            self._executables[shape] = self._capture(stream, enqueue)
        except ResnetDeployError as exc:
            self.free()
            self._fall_back(
                f"CUDA graph capture failed for batch shape {shape}: {exc}; running without CUDA graphs "
                "(as trtexec does)"
            )

    def _capture(self, stream: Any, enqueue: Enqueue) -> int:
        """Capture `enqueue` on `stream` (nothing runs) and instantiate it; ends a failed capture cleanly."""
        api = self._api
        assert api is not None  # only `run` captures, while active
        api.begin_capture(stream.handle)
        try:
            enqueue(stream)
        except BaseException:
            try:
                graph = api.end_capture(stream.handle)
            except CudaGraphError:
                graph = None
            if graph:
                api.destroy_graph(graph)
            raise
        graph = api.end_capture(stream.handle)
        assert graph is not None  # a successful cuStreamEndCapture returns a graph
        try:
            return api.instantiate(graph)
        finally:
            api.destroy_graph(graph)

    def _fall_back(self, reason: str) -> None:
        self.fallback = reason
        self._notice(reason)

    def free(self) -> None:
        """Destroy every instantiated graph (the owning context must be current)."""
        executables, self._executables = self._executables, {}
        if self._api is None:
            return
        for executable in executables.values():
            self._api.destroy_executable(executable)

    def status(self) -> dict[str, Any]:
        return {"requested": True, "captured": [list(shape) for shape in self._executables], "fallback": self.fallback}
