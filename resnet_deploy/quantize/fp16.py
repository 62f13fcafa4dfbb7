"""FP16 ONNX graph for TensorRT's strongly typed build, I/O kept FP32.

TensorRT 11 has no FP16 builder flag: the precision must be in the graph. onnxconverter-common
casts weights and activations to float16 and inserts Casts at the FP32 input and output, a graph
that ONNX Runtime also runs on the CPU, so its accuracy is measured here before any engine exists.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

from resnet_deploy.fileio import atomic_path, sha256_file


def convert_to_fp16(fp32_onnx: str | Path, fp16_onnx: str | Path) -> dict[str, Any]:
    """Write the FP16 graph of `fp32_onnx` to `fp16_onnx` atomically; returns a summary."""
    import onnx
    from onnxconverter_common import float16

    from resnet_deploy.onnx_io import load_onnx

    started = time.perf_counter()
    model = load_onnx(fp32_onnx)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        converted = float16.convert_float_to_float16(model, keep_io_types=True)
    onnx.checker.check_model(converted)
    with atomic_path(fp16_onnx) as tmp:
        onnx.save(converted, str(tmp))
    return {
        "onnx": str(fp16_onnx),
        "sha256": sha256_file(fp16_onnx),
        "source_onnx_sha256": sha256_file(fp32_onnx),
        "converter": "onnxconverter_common.float16.convert_float_to_float16(keep_io_types=True)",
        "values_clamped_to_fp16_range": sum("truncated" in str(w.message) for w in caught),
        "seconds": round(time.perf_counter() - started, 3),
    }
