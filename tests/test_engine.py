"""The TensorRT builder against recording fakes of TensorRT 10.3, 10.16 and 11.4 (unit tests of our adapter)."""

from __future__ import annotations

import json

import pytest
import torch

from resnet_deploy.cuda import DeviceInfo
from resnet_deploy.engine import build_engine, capabilities
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.export import export_onnx
from resnet_deploy.models import create_model
from resnet_deploy.quantize.calibrate import activation_tensors
from resnet_deploy.quantize.cache import write_calibration_cache
from resnet_deploy.quantize.fp16 import convert_to_fp16
from resnet_deploy.quantize.qdq import insert_qdq
from resnet_deploy.sidecar import read_sidecar
from tests.fakes import fake_pycuda, fake_tensorrt

ORIN = DeviceInfo(0, "NVIDIA Jetson AGX Orin", "8.7")
VERSIONS = ("10.3", "10.16", "11.4")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    """FP32, FP16 and Q/DQ graphs of a tiny model, plus a calibration cache."""
    import onnx

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("graphs")
    fp32 = folder / "tiny.onnx"
    export_onnx(create_model("resnet18", width=0.0625).eval(), fp32)
    convert_to_fp16(fp32, folder / "tiny.fp16.onnx")
    amax = {name: 4.0 for name in activation_tensors(onnx.load(str(fp32)))}
    insert_qdq(fp32, amax, folder / "tiny.int8.qdq.onnx")
    write_calibration_cache(folder / "tiny.cache", amax)
    return {"fp32": fp32, "fp16": folder / "tiny.fp16.onnx", "int8": folder / "tiny.int8.qdq.onnx",
            "cache": folder / "tiny.cache"}


def fake_build(monkeypatch, version, onnx_path, out_dir, precision, **kwargs):
    trt = fake_tensorrt.install(monkeypatch, version)
    info = build_engine(onnx_path, out_dir, precision=precision, device_info=ORIN, log=lambda _: None, **kwargs)
    return trt, info, json.loads(info.engine_path.read_bytes())


def calls_named(trt, name):
    return [c for c in trt.calls if c[1] == name]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_strongly_typed_build_sequence(monkeypatch, tmp_path, graphs, version, precision):
    trt, info, plan = fake_build(monkeypatch, version, graphs[precision], tmp_path, precision)
    strongly_typed_bit = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert calls_named(trt, "create_network") == [("Builder", "create_network", strongly_typed_bit)]
    assert plan["builder_flags"] == [] and plan["calibration_cache"] is None
    assert plan["profiles"] == {"input": [[1, 1, 28, 28], [32, 1, 28, 28], [256, 1, 28, 28]]}
    assert ("IBuilderConfig", "set_memory_pool_limit", "WORKSPACE", 1024 << 20) in trt.calls
    order = [c[1] for c in trt.calls]
    assert order.index("parse_from_file") < order.index("add_optimization_profile") < order.index("build_serialized_network")
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["tensorrt_version"] == trt.__version__ and sidecar["precision"] == precision
    assert sidecar["compute_capability"] == "8.7" and sidecar["gpu_name"] == ORIN.name
    assert sidecar["profile"]["max"] == [256, 1, 28, 28] and sidecar["inputs"][0]["name"] == "input"
    assert sidecar["outputs"][0]["name"] == "logits" and len(sidecar["source_onnx_sha256"]) == 64
    assert info.engine_path.name == f"tiny_{precision}_b256_sm87-nvidia-jetson-agx-orin_trt{trt.__version__}.engine"


def test_network_flag_values_differ_between_10_and_11(monkeypatch, tmp_path, graphs):
    flags = {}
    for version in ("10.3", "11.4"):
        trt, _, plan = fake_build(monkeypatch, version, graphs["fp32"], tmp_path / version, "fp32")
        flags[version] = plan["flags"]
    assert flags == {"10.3": 2, "11.4": 1}


def test_legacy_calibrator_on_tensorrt_10_serves_our_cache(monkeypatch, tmp_path, graphs):
    trt, info, plan = fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                                 calibration_cache=graphs["cache"])
    assert plan["flags"] == 0
    assert plan["builder_flags"] == ["FP16", "INT8"]
    assert plan["calibration_cache"] == graphs["cache"].read_text()
    assert ("IBuilderConfig", "set", "int8_calibrator") in [c[:3] for c in trt.calls]
    assert read_sidecar(info.engine_path)["legacy_calibrator"] is True


def test_legacy_calibrator_is_refused_on_tensorrt_11(monkeypatch, tmp_path, graphs):
    with pytest.raises(ResnetDeployError, match="needs TensorRT <= 10; TensorRT 11.4.0.106 removed"):
        fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                   calibration_cache=graphs["cache"])


def test_weakly_typed_qdq_needs_the_int8_flag_on_10_and_is_impossible_on_11(monkeypatch, tmp_path, graphs):
    _, _, plan = fake_build(monkeypatch, "10.16", graphs["int8"], tmp_path, "int8", strongly_typed=False)
    assert "INT8" in plan["builder_flags"] and plan["flags"] == 0
    with pytest.raises(ResnetDeployError, match="removed weak typing"):
        fake_build(monkeypatch, "11.4", graphs["int8"], tmp_path, "int8", strongly_typed=False)


def test_the_tensorrt_11_fake_rejects_removed_apis(monkeypatch):
    trt = fake_tensorrt.install(monkeypatch, "11.4")
    assert not hasattr(trt.BuilderFlag, "INT8") and not hasattr(trt.BuilderFlag, "FP16")
    assert not hasattr(trt, "IInt8EntropyCalibrator2")
    assert not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    config = trt.IBuilderConfig()
    with pytest.raises(AttributeError, match="int8_calibrator"):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError, match="does not exist in TensorRT 11"):
        config.set_quantization_flag
    caps = capabilities(trt)
    assert caps.strongly_typed and not caps.precision_flags and not caps.legacy_calibrator


def test_profile_dla_hardware_and_version_compatibility(monkeypatch, tmp_path, graphs):
    trt, info, plan = fake_build(monkeypatch, "10.16", graphs["fp16"], tmp_path, "fp16", min_batch=2, opt_batch=8,
                                 max_batch=64, dla_core=1, hardware_compatibility="same_compute_capability",
                                 version_compatible=True)
    assert plan["profiles"]["input"] == [[2, 1, 28, 28], [8, 1, 28, 28], [64, 1, 28, 28]]
    assert set(plan["builder_flags"]) == {"GPU_FALLBACK", "VERSION_COMPATIBLE"}
    sets = {c[2]: c[3] for c in trt.calls if c[1] == "set"}
    assert sets["DLA_core"] == 1 and sets["default_device_type"] == trt.DeviceType.DLA
    assert sets["hardware_compatibility_level"] == trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    assert "_b64_" in info.engine_path.name


def test_hardware_level_missing_in_10_3_is_a_clear_error(monkeypatch, tmp_path, graphs):
    with pytest.raises(ResnetDeployError, match="no hardware-compatibility level 'same_compute_capability'"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp32", hardware_compatibility="same_compute_capability")


def test_timing_cache_is_saved_and_reused(monkeypatch, tmp_path, graphs):
    cache = tmp_path / "timing.cache"
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32", timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache")[0][2] == b"" and cache.read_bytes() == b"|timed"
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32", timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache")[0][2] == b"|timed"


def test_parser_errors_are_reported_with_the_file(monkeypatch, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match="broken.onnx: TensorRT's ONNX parser failed"):
        fake_build(monkeypatch, "10.3", broken, tmp_path, "fp32")


def test_bad_profile_is_refused(monkeypatch, tmp_path, graphs):
    with pytest.raises(ResnetDeployError, match="min <= opt <= max"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp32", opt_batch=512)


def test_build_uses_the_fake_pycuda_device_when_none_is_given(monkeypatch, tmp_path, graphs):
    rec = fake_pycuda.install(monkeypatch, device_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))
    fake_tensorrt.install(monkeypatch, "11.4")
    info = build_engine(graphs["fp32"], tmp_path, precision="fp32", log=lambda _: None)
    assert "_sm90-nvidia-h100-80gb-hbm3_" in info.engine_path.name
    assert ("detach",) in rec.calls
