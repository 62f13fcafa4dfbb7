"""An INT8 graph for ONNX Runtime on CPUs (hosts without a GPU).

TensorRT-style symmetric Q/DQ runs slower than FP32 on ONNX Runtime's CPU provider; this graph
uses what its kernels are fast at: uint8 asymmetric activations and int8 symmetric per-channel
weights in QDQ format, which ONNX Runtime fuses into integer convolutions. Calibrated with
ONNX Runtime's own calibrator on the same train-split images.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.fileio import atomic_path, sha256_file


class ImageReader:
    """onnxruntime.quantization.CalibrationDataReader over normalized images."""

    def __init__(self, input_name: str, images: np.ndarray, batch_size: int = 64):
        self._batches = iter([{input_name: images[i : i + batch_size]} for i in range(0, len(images), batch_size)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._batches, None)


def quantize_for_cpu(
    fp32_onnx: str | Path, out_path: str | Path, images: np.ndarray, method: str = "minmax"
) -> dict[str, Any]:
    """Write the ONNX Runtime CPU INT8 graph of `fp32_onnx` to `out_path`."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    started = time.perf_counter()
    input_name = ort.InferenceSession(str(fp32_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name
    with tempfile.TemporaryDirectory() as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(fp32_onnx), str(prepared), skip_symbolic_shape=True)
        with atomic_path(out_path) as tmp:
            quantize_static(
                str(prepared),
                str(tmp),
                ImageReader(input_name, images),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=methods[method],
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
    return {
        "onnx": str(out_path),
        "sha256": sha256_file(out_path),
        "source_onnx_sha256": sha256_file(fp32_onnx),
        "scheme": "QDQ: uint8 asymmetric activations, int8 symmetric per-channel weights (ONNX Runtime CPU)",
        "calibration": method,
        "images": int(len(images)),
        "seconds": round(time.perf_counter() - started, 3),
    }
