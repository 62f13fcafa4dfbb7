"""The TensorRT builder against recording fakes of TensorRT 10.3, 10.16 and 11.4 (unit tests of our adapter).

The fakes carry each version's real classes, members and enum values, so a call to an API that a
version lacks (BuilderFlag.INT8 or config.int8_calibrator on 11) raises here as it would for real.
"""

from __future__ import annotations

import json

import pytest

from resnet_deploy import engine as engine_module
from resnet_deploy.engine import build_engine, calibration_version_code, capabilities, planned_engine_path
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.quantize.cache import read_calibration_cache
from resnet_deploy.sidecar import read_sidecar
from tests.fakes import fake_pycuda, fake_tensorrt
from tests.fakes.graphs import ORIN, tiny_graphs

pytestmark = pytest.mark.runtime

VERSIONS = ("10.3", "10.16", "11.4")


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tiny_graphs(tmp_path_factory.mktemp("graphs"))


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
    assert plan["builder_flags"] == [] and plan["scales"] is None
    assert plan["profiles"] == {"input": [[1, 1, 28, 28], [32, 1, 28, 28], [256, 1, 28, 28]]}
    assert ("IBuilderConfig", "set_memory_pool_limit", "WORKSPACE", 1024 << 20) in trt.calls
    order = [c[1] for c in trt.calls]
    assert order.index("parse_from_file") < order.index("add_optimization_profile") < order.index("build_serialized_network")
    assert info.engine_path.name == f"tiny_{precision}_b256_sm87-nvidia-jetson-agx-orin_trt{trt.__version__}.engine"
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["tensorrt_version"] == trt.__version__ and sidecar["precision"] == precision
    assert sidecar["calibration"]["method"] == ("qdq-graph" if precision == "int8" else None)


def test_network_flag_values_differ_between_10_and_11(monkeypatch, tmp_path, graphs):
    flags = {}
    for version in ("10.3", "11.4"):
        _, _, plan = fake_build(monkeypatch, version, graphs["fp32"], tmp_path / version, "fp32")
        flags[version] = plan["flags"]
    assert flags == {"10.3": 2, "11.4": 1}


@pytest.mark.parametrize("version, header", [("10.3", "TRT-100300-EntropyCalibration2"),
                                             ("10.16", "TRT-101601-EntropyCalibration2")])
def test_legacy_calibrator_on_tensorrt_10_serves_our_cache(monkeypatch, tmp_path, graphs, version, header):
    trt, info, plan = fake_build(monkeypatch, version, graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                                 calibration_cache=graphs["cache"])
    _, scales = read_calibration_cache(graphs["cache"])
    assert plan["flags"] == 0 and plan["builder_flags"] == ["FP16", "INT8"]
    assert set(plan["scales"]) == set(scales) and len(scales) > 10
    assert not calls_named(trt, "calibration cache ignored")
    assert ("IBuilderConfig", "set", "int8_calibrator") in [c[:3] for c in trt.calls]
    assert "_int8-legacy-calib_b256_" in info.engine_path.name
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["legacy_calibrator"] is True and sidecar["strongly_typed"] is False
    assert sidecar["calibration"]["method"] == "legacy-calibrator"
    assert sidecar["calibration"]["calibrator"] == "IInt8EntropyCalibrator2"
    cache = engine_module.load_legacy_cache(trt, capabilities(trt), graphs["cache"])
    assert cache.data.decode().splitlines()[0] == header


def test_a_cache_headed_for_another_version_would_be_ignored_and_the_build_fail(monkeypatch, tmp_path, graphs):
    """Why the builder re-heads the cache: with the TensorRT 8 numbering, TensorRT 10 ignores it."""
    monkeypatch.setattr(engine_module, "calibration_version_code", lambda v: 10300)
    with pytest.raises(ArtifactError, match="could not build an engine"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                   calibration_cache=graphs["cache"])
    assert calibration_version_code("8.6.1") == 8601 and calibration_version_code("10.3.0") == 100300


def test_legacy_fp16_sets_only_the_fp16_flag(monkeypatch, tmp_path, graphs):
    _, info, plan = fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp16", legacy_calibrator=True)
    assert plan["builder_flags"] == ["FP16"] and plan["scales"] is None


def test_legacy_calibrator_is_refused_on_tensorrt_11(monkeypatch, tmp_path, graphs):
    with pytest.raises(ResnetDeployError, match="needs TensorRT <= 10; TensorRT 11.4.0.106 removed"):
        fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                   calibration_cache=graphs["cache"])


def test_legacy_calibrator_needs_the_fp32_graph_and_a_cache(monkeypatch, tmp_path, graphs):
    with pytest.raises(ResnetDeployError, match="is an int8 graph; --legacy-calibrator needs the FP32 ONNX"):
        fake_build(monkeypatch, "10.3", graphs["int8"], tmp_path, "int8", legacy_calibrator=True,
                   calibration_cache=graphs["cache"])
    with pytest.raises(ResnetDeployError, match="needs a calibration cache"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True)


def test_weakly_typed_qdq_needs_the_int8_flag_on_10_and_is_impossible_on_11(monkeypatch, tmp_path, graphs):
    _, info, plan = fake_build(monkeypatch, "10.16", graphs["int8"], tmp_path, "int8", strongly_typed=False)
    assert "INT8" in plan["builder_flags"] and plan["flags"] == 0 and "_int8-weak_" in info.engine_path.name
    with pytest.raises(ResnetDeployError, match="removed weak typing"):
        fake_build(monkeypatch, "11.4", graphs["int8"], tmp_path, "int8", strongly_typed=False)


@pytest.mark.parametrize("graph, precision", [("fp32", "int8"), ("fp32", "fp16"), ("int8", "fp16")])
def test_a_graph_of_another_precision_is_refused(monkeypatch, tmp_path, graphs, graph, precision):
    with pytest.raises(ResnetDeployError, match=f"is an {graph} graph; a strongly typed --precision {precision}"):
        fake_build(monkeypatch, "11.4", graphs[graph], tmp_path, precision)


def test_the_fakes_reject_what_tensorrt_rejects(monkeypatch, graphs):
    """Precision flags on a strongly typed network, and APIs that TensorRT 11 removed."""
    trt10 = fake_tensorrt.install(monkeypatch, "10.16")
    builder = trt10.Builder(trt10.Logger(trt10.Logger.WARNING))
    network = builder.create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt10.OnnxParser(network, None).parse_from_file(str(graphs["fp16"]))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 1, 28, 28), (1, 1, 28, 28), (1, 1, 28, 28))
    config.add_optimization_profile(profile)
    config.set_flag(trt10.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    trt = fake_tensorrt.install(monkeypatch, "11.4")
    assert not hasattr(trt.BuilderFlag, "INT8") and not hasattr(trt.BuilderFlag, "FP16")
    assert not hasattr(trt, "IInt8EntropyCalibrator2") and not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    config = trt.IBuilderConfig()
    with pytest.raises(AttributeError, match="int8_calibrator"):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError, match="does not exist in TensorRT 11"):
        config.set_quantization_flag
    with pytest.raises(AttributeError, match="does not exist in TensorRT 11"):
        trt.Builder(None).platform_has_fast_fp16
    caps = capabilities(trt)
    assert caps.strongly_typed and not caps.precision_flags and not caps.legacy_calibrator and not caps.calibrators


def test_profile_dla_hardware_and_version_compatibility(monkeypatch, tmp_path, graphs):
    trt, info, plan = fake_build(monkeypatch, "10.16", graphs["fp16"], tmp_path, "fp16", min_batch=2, opt_batch=8,
                                 max_batch=64, dla_core=1, version_compatible=True)
    assert plan["profiles"]["input"] == [[2, 1, 28, 28], [8, 1, 28, 28], [64, 1, 28, 28]]
    assert set(plan["builder_flags"]) == {"GPU_FALLBACK", "VERSION_COMPATIBLE"}
    sets = {c[2]: c[3] for c in trt.calls if c[1] == "set"}
    assert sets["DLA_core"] == 1 and sets["default_device_type"] == trt.DeviceType.DLA
    assert info.engine_path.name.startswith("tiny_fp16-dla1-vc_b64_")
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["profile"] == {"min": [2, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [64, 1, 28, 28]}
    assert sidecar["version_compatible"] is True and sidecar["build_settings"]["dla_core"] == 1


def test_hardware_compatibility_level(monkeypatch, tmp_path, graphs):
    trt, info, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32",
                              hardware_compatibility="same_compute_capability")
    sets = {c[2]: c[3] for c in trt.calls if c[1] == "set"}
    assert sets["hardware_compatibility_level"] == trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    assert "_fp32-hwc-samecc_" in info.engine_path.name
    assert read_sidecar(info.engine_path)["hardware_compatibility"] == "same_compute_capability"
    with pytest.raises(ResnetDeployError, match="no hardware-compatibility level 'same_compute_capability'"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp32", hardware_compatibility="same_compute_capability")
    with pytest.raises(ResnetDeployError, match="GPU only; drop --dla-core"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp32", hardware_compatibility="ampere_plus",
                   dla_core=0)


def test_timing_cache_is_saved_and_reused_and_a_foreign_one_replaced(monkeypatch, tmp_path, graphs):
    cache = tmp_path / "timing.cache"
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32", timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache")[0][2] == b"" and cache.read_bytes() == b"|timed"
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32", timing_cache_path=cache)
    assert calls_named(trt, "create_timing_cache")[0][2] == b"|timed"
    assert cache.read_bytes() == b"|timed|timed"
    cache.write_bytes(b"|other-gpu")
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32", timing_cache_path=cache)
    assert [c[2] for c in calls_named(trt, "create_timing_cache")] == [b"|other-gpu", b""]
    assert cache.read_bytes() == b"|timed"


def test_parser_errors_are_reported_with_the_file_and_the_parser_message(monkeypatch, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match=r"broken.onnx: TensorRT's ONNX parser failed: node -1: "
                                            r"MODEL_DESERIALIZE_FAILED: DecodeError"):
        fake_build(monkeypatch, "10.3", broken, tmp_path, "fp32")


@pytest.mark.parametrize("settings, message", [
    ({"opt_batch": 512}, "min <= opt <= max"),
    ({"min_batch": 0}, "1 <= min"),
    ({"precision": "int4"}, "precision must be one of fp32, fp16, int8"),
])
def test_bad_settings_are_refused_before_tensorrt_is_touched(monkeypatch, tmp_path, graphs, settings, message):
    trt = fake_tensorrt.install(monkeypatch, "10.3")
    options = {"precision": "fp32", **settings}
    with pytest.raises(ResnetDeployError, match=message):
        build_engine(graphs["fp32"], tmp_path, device_info=ORIN, log=lambda _: None, **options)
    with pytest.raises(ArtifactError, match="missing.onnx: ONNX file not found"):
        build_engine(tmp_path / "missing.onnx", tmp_path, precision="fp32", device_info=ORIN)
    assert trt.calls == []


def test_build_asks_pycuda_for_the_gpu_and_the_planned_path_matches(monkeypatch, tmp_path, graphs):
    rec = fake_pycuda.install(monkeypatch, device_name="NVIDIA H100 80GB HBM3", compute_capability=(9, 0))
    fake_tensorrt.install(monkeypatch, "11.4")
    settings = {"max_batch": 64, "opt_batch": 16, "version_compatible": True, "hardware_compatibility": "ampere_plus"}
    info = build_engine(graphs["fp32"], tmp_path, precision="fp32", log=lambda _: None, **settings)
    assert info.engine_path.name == "tiny_fp32-hwc-ampere+-vc_b64_sm90-nvidia-h100-80gb-hbm3_trt11.4.0.106.engine"
    assert planned_engine_path(graphs["fp32"], tmp_path, "fp32", **settings) == info.engine_path
    assert ("detach",) in rec.calls and rec.context_depth == 0
