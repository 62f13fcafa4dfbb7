"""The `serve` extra and the Triton server's process environment."""

from __future__ import annotations

import os
import sysconfig

from resnet_deploy.errors import ResnetDeployError

NO_TENSOR_STORE = "PYTRITON_NO_TENSORSTORE"  # read by PyTriton 0.7 in the serving process and in each stub
INSTALL_HINT = 'pip install torch==2.13.0 -e ".[serve]"  (nvidia-pytriton 0.7.0, tritonclient 2.63.0, numpy<2)'


def require_serve_extra(server: bool = True) -> None:
    """Raise a one-line error naming the install command when PyTriton (server) or tritonclient is missing.

    PyTriton 0.7 is built against numpy 1.x; with numpy 2 its proxy fails at the first request, so
    that is refused here too.
    """
    import numpy

    modules = ["tritonclient.http", "tritonclient.grpc"] + (["pytriton.triton"] if server else [])
    for module in modules:
        try:
            __import__(module)
        except ImportError as exc:
            raise ResnetDeployError(
                f"{module} is not importable ({exc}); install the serve extra: {INSTALL_HINT}"
            ) from exc
    if server and int(numpy.__version__.split(".")[0]) >= 2:
        raise ResnetDeployError(
            f"PyTriton 0.7 needs numpy<2, this environment has numpy {numpy.__version__}; "
            f"use a separate environment: {INSTALL_HINT}"
        )


def python_library_dir() -> str:
    """The directory holding the running interpreter's libpython (empty for a static build)."""
    return sysconfig.get_config_var("LIBDIR") or ""


def put_python_library_first() -> str:
    """Put this interpreter's libpython directory first on LD_LIBRARY_PATH for the server and its stubs.

    The Python backend stub links `libpython3.X.so`; with two Pythons of the same minor version on a
    machine it can load the other one and fail on `'_thread.RLock' object has no attribute
    '_recursion_count'` (pytriton issue 51). Returns the new value.
    """
    first = python_library_dir()
    rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != first]
    value = os.pathsep.join([first, *rest] if first else rest)
    os.environ["LD_LIBRARY_PATH"] = value
    return value


def pass_tensors_inline() -> None:
    """Have PyTriton pass tensors between Triton's Python backend stub and this process inline (base64 in
    its ZMQ messages) unless PYTRITON_NO_TENSORSTORE is already set (empty: its tensor store).

    The tensor store puts each tensor in shared memory handed out by a separate manager process, one
    round trip to it per batch put and one per tensor released: for this project's tensors (3 KB in,
    48 B out per image) those round trips cost more than copying. Measured with
    benchmarks/serve_perf.py, resnet18-w0.25 at concurrency 16 over gRPC (2 idle cores): 923 vs 505
    inferences/s.
    """
    os.environ.setdefault(NO_TENSOR_STORE, "1")
