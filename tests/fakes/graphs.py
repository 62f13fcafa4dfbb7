"""Tiny ONNX graphs (FP32, FP16, Q/DQ) and a calibration cache for the builder and runner tests."""

from __future__ import annotations

from pathlib import Path

from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION


def tiny_graphs(folder: Path, trt_version: str = DEFAULT_TRT_VERSION) -> dict[str, Path]:
    """An untrained resnet18 at width 1/16 exported three ways, plus a cache headed for `trt_version`."""
    import onnx

    from resnet_deploy.quantize.cache import write_calibration_cache
    from resnet_deploy.quantize.calibrate import activation_tensors
    from resnet_deploy.quantize.fp16 import convert_to_fp16
    from resnet_deploy.quantize.qdq import insert_qdq
    from tests.exported import untrained_onnx

    fp32 = untrained_onnx("resnet18-w0.0625", folder / "tiny.onnx")
    convert_to_fp16(fp32, folder / "tiny.fp16.onnx")
    amax = {name: 4.0 for name in activation_tensors(onnx.load(str(fp32)))}
    insert_qdq(fp32, amax, folder / "tiny.int8.qdq.onnx")
    write_calibration_cache(folder / "tiny.cache", amax, trt_version=trt_version)
    return {"fp32": fp32, "fp16": folder / "tiny.fp16.onnx", "int8": folder / "tiny.int8.qdq.onnx",
            "cache": folder / "tiny.cache"}
