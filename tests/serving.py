"""Skip the serve tests where the serve extra is not installed."""

from __future__ import annotations

import pytest


def require_serving() -> None:
    """Skip where the serve extra (PyTriton with numpy<2, tritonclient) is not installed."""
    import numpy

    pytest.importorskip("pytriton.triton", reason="serve extra not installed (pip install -e '.[serve]')")
    pytest.importorskip("tritonclient.grpc", reason="serve extra not installed (pip install -e '.[serve]')")
    if int(numpy.__version__.split(".")[0]) >= 2:
        pytest.skip("PyTriton 0.7 needs numpy<2 (the serve extra's environment)")
