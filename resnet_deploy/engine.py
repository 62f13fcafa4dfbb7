"""TensorRT engine builds for TensorRT 10.x and 11.x: the only module that knows TensorRT versions.

One path for both: the precision is in the ONNX graph (FP32, FP16 graph, Q/DQ graph) and the
network is strongly typed. Capabilities are detected by feature (does `BuilderFlag` have `INT8`?
does `NetworkDefinitionCreationFlag` have `STRONGLY_TYPED`?), not by version string. TensorRT 10
(Jetson) also offers the legacy path: FP32 ONNX + FP16/INT8 builder flags + a calibrator serving
our calibration cache; TensorRT 11 removed it and says so here.
"""

from __future__ import annotations

import importlib.util


def tensorrt_available() -> bool:
    """True when the `tensorrt` module can be imported (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None
