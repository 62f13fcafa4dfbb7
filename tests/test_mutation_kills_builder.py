"""The TensorRT builder's exact behaviour on the strict fakes, with a five-node ONNX graph built by hand (no torch,
milliseconds): which builder calls each precision, typing, TensorRT version and DLA/compatibility setting makes,
with which values, and every refusal's whole message. Written to kill the mutants tools/mutation.sh makes in
resnet_deploy/trt/builder.py; tests/test_engine.py covers the same builder on exported ResNets."""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.fileio import sha256_file
from resnet_deploy.quantize.fallback import LAYER_PRECISIONS_FORMAT, LayerPrecisions
from resnet_deploy.trt import builder
from resnet_deploy.trt.builder import build_engine, planned_engine_path
from resnet_deploy.trt.compat import DLA_RELEASES, TensorRTMissing, capabilities, trt_logger
from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.sidecar import read_sidecar
from tests import fakes
from tests.classifier_graphs import write_classifier
from tests.fakes.fake_pycuda import H100, ORIN, FakeDevice

pytestmark = pytest.mark.runtime

T4 = FakeDevice("Tesla T4", (7, 5), integrated=False, dla_cores=0)
A100 = FakeDevice("NVIDIA A100", (8, 0), integrated=False, dla_cores=0)
MIB = 1 << 20


@pytest.fixture(autouse=True)
def surfaces(monkeypatch):
    """The fakes' TensorRT API surfaces (../shared/tensorrt-api beside the repository), found from a copy of the
    tests too (tools/mutation.sh runs them in mutants-work/<module>/mutants/)."""
    from tests.fakes import fake_tensorrt

    if not fake_tensorrt.SURFACES.is_dir():
        found = next(p / "shared" / "tensorrt-api" for p in Path(__file__).resolve().parents
                     if (p / "shared" / "tensorrt-api").is_dir())
        monkeypatch.setattr(fake_tensorrt, "SURFACES", found)


def conv_classifier(path, inputs=("input",), size=28):
    """input [batch,1,size,size] -> Conv 'conv' -> Relu 'relu' -> GlobalAveragePool 'pool' -> Flatten 'flatten' ->
    Gemm 'fc' -> logits [batch,10]; a second input is added to the Conv's output when asked."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv.weight"),
             numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "conv.bias"),
             numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "fc.weight"),
             numpy_helper.from_array(rng.standard_normal(10).astype(np.float32), "fc.bias")]
    nodes = [helper.make_node("Conv", [inputs[0], "conv.weight", "conv.bias"], ["conv_out"], name="conv",
                              pads=[1, 1, 1, 1])]
    relu_in = "conv_out"
    if len(inputs) > 1:
        nodes.append(helper.make_node("Add", ["conv_out", inputs[1]], ["sum"], name="add"))
        relu_in = "sum"
    nodes += [helper.make_node("Relu", [relu_in], ["relu_out"], name="relu"),
              helper.make_node("GlobalAveragePool", ["relu_out"], ["pooled"], name="pool"),
              helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
              helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    shapes = [["batch", 1, size, size], ["batch", 4, size, size]]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.FLOAT, shape)
                                              for n, shape in zip(inputs, shapes)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    from resnet_deploy.quantize.cache import write_calibration_cache
    from resnet_deploy.quantize.calibrate import activation_tensors
    from resnet_deploy.quantize.fp16 import convert_to_fp16
    from resnet_deploy.quantize.qdq import insert_qdq

    folder = tmp_path_factory.mktemp("graphs")
    fp32 = conv_classifier(folder / "tiny.onnx")
    convert_to_fp16(fp32, folder / "tiny.fp16.onnx")
    amax = {name: 4.0 for name in activation_tensors(onnx.load(str(fp32)))}
    insert_qdq(fp32, amax, folder / "tiny.int8.qdq.onnx")
    write_calibration_cache(folder / "tiny.cache", amax, trt_version="10.3.0")
    return {"fp32": fp32, "fp16": folder / "tiny.fp16.onnx", "int8": folder / "tiny.int8.qdq.onnx",
            "cache": folder / "tiny.cache", "two_inputs": conv_classifier(folder / "two.onnx", ("input", "bias_map")),
            "cpu_int8": write_classifier(folder / "cpu.onnx", zero_point=np.array(0, np.uint8))}


def settings(**changes):
    return EngineSettings(**{"precision": "fp32", "min_batch": 2, "opt_batch": 8, "max_batch": 16, **changes})


def build(monkeypatch, tmp_path, onnx_path, version="10.3", devices=None, cache=None, **changes):
    """Build on the fakes: (trt, EngineInfo, the fake plan, the lines logged)."""
    _, trt = fakes.install(monkeypatch, version, devices)
    lines: list[str] = []
    info = build_engine(onnx_path, settings(**changes), tmp_path / "engines", calibration_cache=cache,
                        log=lines.append)
    return trt, info, json.loads(info.engine_path.read_bytes()), lines


def refusal(monkeypatch, tmp_path, onnx_path, version="10.3", devices=None, cache=None, error=ResnetDeployError,
            **changes) -> str:
    _, trt = fakes.install(monkeypatch, version, devices)
    with pytest.raises(error) as raised:
        build_engine(onnx_path, settings(**changes), tmp_path / "engines", calibration_cache=cache,
                     log=lambda _: None)
    return str(raised.value)


def config_calls(trt):
    return [c[1:] for c in trt.calls if c[0] == "IBuilderConfig"]


def named(trt, owner, name):
    return [c[2:] for c in trt.calls if c[:2] == (owner, name)]


# -- the configuration of each kind of build, call by call ----------------------------------------------------


@pytest.mark.parametrize("version, bit", [("10.3", 2), ("11.4", 1)])
def test_strongly_typed_fp32_build_configures_exactly_this(monkeypatch, tmp_path, graphs, version, bit):
    trt, info, plan, lines = build(monkeypatch, tmp_path, graphs["fp32"], version, workspace_mib=3)
    assert named(trt, "Builder", "create_network") == [(bit,)]
    assert config_calls(trt) == [("set_memory_pool_limit", "WORKSPACE", 3 * MIB), ("add_optimization_profile",),
                                 ("clear_flag", "TF32"), ("create_timing_cache", b""), ("set_timing_cache", False)]
    assert named(trt, "IOptimizationProfile", "set_shape") == [("input", (2, 1, 28, 28), (8, 1, 28, 28),
                                                                 (16, 1, 28, 28))]
    assert plan["builder_flags"] == [] and plan["scales"] is None and plan["dla_core"] is None
    assert plan["profiles"] == {"input": [[2, 1, 28, 28], [8, 1, 28, 28], [16, 1, 28, 28]]}
    assert lines == [f"building fp32 engine from {graphs['fp32']} with TensorRT {trt.__version__} on NVIDIA Jetson "
                     "AGX Orin (strongly typed, batch 2/8/16)"]
    assert not named(trt, "Runtime", "init"), "only a DLA build deserializes its engine"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_strongly_typed_fp16_and_qdq_builds_set_no_precision_flag(monkeypatch, tmp_path, graphs, precision):
    trt, info, plan, lines = build(monkeypatch, tmp_path, graphs[precision], "10.3", precision=precision)
    assert [c for c in config_calls(trt) if c[0] in ("set_flag", "clear_flag")] == [("clear_flag", "TF32")]
    assert plan["flags"] == 2 and plan["builder_flags"] == []
    assert lines[0].endswith("(strongly typed, batch 2/8/16)") and lines[0].startswith(f"building {precision} ")


@pytest.mark.parametrize("graph, precision, flags", [("fp32", "fp16", ["FP16"]), ("fp16", "fp16", ["FP16"]),
                                                     ("fp32", "fp32", []), ("int8", "int8", ["FP16", "INT8"])])
def test_weakly_typed_builds_set_trtexecs_flags(monkeypatch, tmp_path, graphs, graph, precision, flags):
    trt, info, plan, lines = build(monkeypatch, tmp_path, graphs[graph], "10.3", precision=precision,
                                   strongly_typed=False)
    assert named(trt, "Builder", "create_network") == [(0,)] and plan["flags"] == 0
    assert [c for c in config_calls(trt) if c[0] == "set_flag"] == [("set_flag", f) for f in flags]
    assert plan["builder_flags"] == flags and plan["scales"] is None
    assert "(weakly typed, batch 2/8/16)" in lines[0]
    assert info.sidecar["strongly_typed"] is False and info.sidecar["legacy_calibrator"] is False


def test_tf32_asked_for_is_set_not_cleared(monkeypatch, tmp_path, graphs):
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], "11.4", tf32=True)
    assert [c for c in config_calls(trt) if c[0] in ("set_flag", "clear_flag")] == [("set_flag", "TF32")]
    assert plan["builder_flags"] == ["TF32"] and info.sidecar["tf32"] is True


def test_tf32_where_tensorrt_has_no_flag(monkeypatch):
    _, trt = fakes.install(monkeypatch, "10.3")
    caps = dataclasses.replace(capabilities(trt), tf32_flag=False)
    config = trt.IBuilderConfig()
    builder._tf32(trt, caps, config, False)
    assert config.get_flag(trt.BuilderFlag.TF32), "untouched: nothing to clear"
    with pytest.raises(ResnetDeployError) as raised:
        builder._tf32(trt, caps, config, True)
    assert str(raised.value) == "TensorRT 10.3.0 has no BuilderFlag.TF32; drop --tf32"


def test_network_flags_without_strongly_typed_networks(monkeypatch):
    _, trt = fakes.install(monkeypatch, "10.3")
    caps = dataclasses.replace(capabilities(trt), strongly_typed=False)
    assert builder._network_flags(trt, caps, False) == 0
    assert builder._network_flags(trt, capabilities(trt), True) == 2
    with pytest.raises(ResnetDeployError) as raised:
        builder._network_flags(trt, caps, True)
    assert str(raised.value) == "TensorRT 10.3.0 has no strongly typed networks; use --legacy-calibrator"


def test_weak_flag_names_per_precision_and_layer_precisions(tmp_path):
    fp16 = LayerPrecisions(tmp_path, "0" * 64, {"conv": "fp16", "fc": "fp32"})
    fp32 = LayerPrecisions(tmp_path, "0" * 64, {"conv": "fp32"})
    assert builder._weak_flag_names("fp32", None) == [] and builder._weak_flag_names("fp32", fp16) == []
    assert builder._weak_flag_names("fp16", None) == ["FP16"] and builder._weak_flag_names("fp16", fp16) == ["FP16"]
    assert builder._weak_flag_names("int8", None) == ["FP16", "INT8"]
    assert builder._weak_flag_names("int8", fp16) == ["FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS"]
    assert builder._weak_flag_names("int8", fp32) == ["INT8", "OBEY_PRECISION_CONSTRAINTS"]


def test_strongly_typed_network_per_dla_and_release(monkeypatch):
    _, trt = fakes.install(monkeypatch, "10.3")
    caps10 = capabilities(trt)
    caps11 = dataclasses.replace(caps10, precision_flags=False)
    dla = EngineSettings(precision="fp16", min_batch=4, opt_batch=4, max_batch=4, dla_core=0)
    assert builder.strongly_typed_network(caps10, settings()) is True
    assert builder.strongly_typed_network(caps10, dla) is False
    assert builder.strongly_typed_network(caps11, dla) is True
    assert builder.strongly_typed_network(caps10, settings(strongly_typed=False)) is False
    assert builder.strongly_typed_network(caps11, dla.replace(strongly_typed=False)) is False


# -- legacy calibrator ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version, code", [("10.3", "100300"), ("10.16", "101601")])
def test_legacy_int8_build_serves_the_re_headed_cache(monkeypatch, tmp_path, graphs, version, code):
    trt, info, plan, lines = build(monkeypatch, tmp_path, graphs["fp32"], version, cache=graphs["cache"],
                                   precision="int8", legacy_calibrator=True)
    calls = config_calls(trt)
    assert [c for c in calls if c[0] in ("set_flag", "clear_flag", "set_calibration_profile")] == [
        ("clear_flag", "TF32"), ("set_flag", "FP16"), ("set_flag", "INT8"), ("set_calibration_profile",)]
    assert plan["builder_flags"] == ["FP16", "INT8"] and plan["flags"] == 0
    assert plan["scales"] == {n: "3d010204" for n in ("input", "conv_out", "relu_out", "pooled", "flat", "logits")}
    assert "(weakly typed, batch 2/8/16)" in lines[0]
    cache = builder.load_legacy_cache(trt, capabilities(trt), graphs["cache"])
    body = graphs["cache"].read_text().split("\n", 1)[1]
    assert cache == builder.LegacyCache(graphs["cache"], f"TRT-{code}-EntropyCalibration2\n{body}".encode(),
                                        "EntropyCalibration2", "IInt8EntropyCalibrator2", 6)
    assert info.sidecar["calibration"] == {
        "method": "legacy-calibrator", "cache": str(graphs["cache"]), "cache_sha256": sha256_file(graphs["cache"]),
        "algorithm": "EntropyCalibration2", "calibrator": "IInt8EntropyCalibrator2", "tensors": 6}


def test_the_cache_calibrator_serves_the_cache_and_no_batches(monkeypatch, graphs):
    _, trt = fakes.install(monkeypatch, "10.3")
    cache = builder.LegacyCache(graphs["cache"], b"TRT-100300-MinMaxCalibration\nx: 3d010204\n", "MinMaxCalibration",
                                "IInt8MinMaxCalibrator", 1)
    calibrator = builder.make_cache_calibrator(trt, cache)
    assert isinstance(calibrator, trt.IInt8MinMaxCalibrator)
    assert calibrator.get_batch_size() == 1 and calibrator.get_batch(["input"]) is None
    assert calibrator.read_calibration_cache() == cache.data
    assert calibrator.write_calibration_cache(b"new") is None and calibrator._values == {}


def test_precision_flags_keep_the_calibrator_alive_and_need_the_calibration_profile(monkeypatch, graphs):
    _, trt = fakes.install(monkeypatch, "10.3")
    caps = capabilities(trt)
    cache = builder.load_legacy_cache(trt, caps, graphs["cache"])
    config = trt.IBuilderConfig()
    profile = trt.IOptimizationProfile()
    legacy = settings(precision="int8", legacy_calibrator=True)
    calibrator = builder._precision_flags(trt, caps, config, legacy, cache, None, profile, False)
    assert calibrator is config._values["int8_calibrator"] and config._calibration_profile is profile
    assert builder._precision_flags(trt, caps, config, legacy, None, None, profile, False) is None
    assert builder._precision_flags(trt, caps, config, legacy, cache, None, profile, True) is None
    monkeypatch.setattr(trt.IBuilderConfig, "set_calibration_profile", lambda self, profile: False)
    with pytest.raises(ArtifactError) as raised:
        builder._precision_flags(trt, caps, trt.IBuilderConfig(), legacy, cache, None, profile, False)
    assert str(raised.value) == "TensorRT refused the calibration profile (see its log above)"


def test_legacy_fp16_needs_no_cache_and_sets_only_fp16(monkeypatch, tmp_path, graphs):
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], precision="fp16", legacy_calibrator=True)
    assert plan["builder_flags"] == ["FP16"] and not named(trt, "IBuilderConfig", "set")
    assert info.sidecar["calibration"] == {"method": None} and info.sidecar["legacy_calibrator"] is True


def test_legacy_cache_refusals(monkeypatch, tmp_path, graphs):
    assert refusal(monkeypatch, tmp_path, graphs["fp32"], "11.4", cache=graphs["cache"], precision="int8",
                   legacy_calibrator=True) == (
        "--legacy-calibrator needs TensorRT <= 10; TensorRT 11.4.0.106 removed IInt8Calibrator and the INT8 builder "
        "flag. Build the Q/DQ graph instead.")
    assert refusal(monkeypatch, tmp_path, graphs["fp32"], precision="int8", legacy_calibrator=True) == (
        "--legacy-calibrator with int8 needs a calibration cache")
    assert refusal(monkeypatch, tmp_path, graphs["int8"], cache=graphs["cache"], precision="int8",
                   legacy_calibrator=True) == (
        f"{graphs['int8']}: is an int8 graph; --legacy-calibrator needs the FP32 ONNX")
    _, trt = fakes.install(monkeypatch, "10.3")
    caps = capabilities(trt)
    assert builder._legacy_cache(trt, caps, settings(precision="int8"), graphs["cache"]) is None
    assert builder._legacy_cache(trt, caps, settings(precision="fp16", legacy_calibrator=True), graphs["cache"]) is None


def test_a_cache_without_a_calibrator_or_scales_is_refused(monkeypatch, tmp_path):
    _, trt = fakes.install(monkeypatch, "10.3")
    caps = capabilities(trt)
    legacy = tmp_path / "legacy.cache"
    legacy.write_text("TRT-100300-LegacyCalibration\nx: 3d010204\n")
    with pytest.raises(ArtifactError) as raised:
        builder.load_legacy_cache(trt, caps, legacy)
    assert str(raised.value) == (f"{legacy}: calibration algorithm 'LegacyCalibration' has no calibrator in TensorRT "
                                 "10.3.0 (it has IInt8EntropyCalibrator2, IInt8EntropyCalibrator, IInt8MinMaxCalibrator)")
    minmax = tmp_path / "minmax.cache"
    minmax.write_text("TRT-100300-MinMaxCalibration\nx: 3d010204\n")
    with pytest.raises(ArtifactError) as raised:
        builder.load_legacy_cache(trt, dataclasses.replace(caps, calibrators=()), minmax)
    assert str(raised.value) == (f"{minmax}: calibration algorithm 'MinMaxCalibration' has no calibrator in TensorRT "
                                 "10.3.0 (it has none)")
    assert builder.load_legacy_cache(trt, caps, str(minmax)).calibrator_class == "IInt8MinMaxCalibrator"
    spaced = tmp_path / "spaced.cache"
    spaced.write_text("TRT-1-EntropyCalibration2\n\nx: 3d010204\n")
    assert builder.load_legacy_cache(trt, caps, spaced).data == b"TRT-100300-EntropyCalibration2\n\nx: 3d010204\n"
    empty = tmp_path / "empty.cache"
    empty.write_text("TRT-100300-EntropyCalibration2\n")
    with pytest.raises(ArtifactError) as raised:
        builder.load_legacy_cache(trt, caps, empty)
    assert str(raised.value) == f"{empty}: calibration cache has no tensor scales"


# -- layer precisions --------------------------------------------------------------------------------------------


def write_precisions(path, onnx_path, layers, sha=None):
    path.write_text(json.dumps({"format": LAYER_PRECISIONS_FORMAT, "source_onnx_sha256": sha or sha256_file(onnx_path),
                                "layers": [{"name": n, "precision": p} for n, p in layers.items()]}))
    return path


@pytest.mark.parametrize("layers, flags", [({"conv": "fp16", "fc": "fp32"}, ["FP16", "INT8"]),
                                           ({"relu": "fp32"}, ["INT8"])])
def test_layer_precisions_set_each_layer_and_its_outputs(monkeypatch, tmp_path, graphs, layers, flags):
    spec = write_precisions(tmp_path / "tiny.layer-precisions.json", graphs["fp32"], layers)
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], cache=graphs["cache"], precision="int8",
                               legacy_calibrator=True, layer_precisions=spec)
    types = {"fp16": "HALF", "fp32": "FLOAT"}
    assert plan["layer_precisions"] == {n: types[p] for n, p in layers.items()}
    assert plan["layer_output_types"] == {n: [types[p]] for n, p in layers.items()}
    assert named(trt, "ILayer", "set_output_type") == [(n, 0, types[p]) for n, p in layers.items()]
    assert plan["builder_flags"] == [*flags, "OBEY_PRECISION_CONSTRAINTS"]
    assert info.sidecar["calibration"]["layer_precisions"] == {"file": str(spec), "sha256": sha256_file(spec),
                                                               "layers": layers}


def test_layer_precisions_refusals(monkeypatch, tmp_path, graphs):
    other = write_precisions(tmp_path / "other.json", graphs["fp32"], {"conv": "fp16"}, sha="a" * 64)
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # checked before TensorRT is touched
    with pytest.raises(ArtifactError) as raised:
        build_engine(graphs["fp32"], settings(precision="int8", legacy_calibrator=True, layer_precisions=other),
                     tmp_path, calibration_cache=graphs["cache"])
    assert str(raised.value) == (f"{other}: made for another ONNX (its source_onnx_sha256 is not {graphs['fp32']}'s); "
                                 "run the INT8 fallback again on this graph")
    unknown = write_precisions(tmp_path / "unknown.json", graphs["fp32"], {"conv": "fp16", "x": "fp32", "y": "fp16"})
    assert refusal(monkeypatch, tmp_path, graphs["fp32"], cache=graphs["cache"], error=ArtifactError,
                   precision="int8", legacy_calibrator=True, layer_precisions=unknown) == (
        f"{unknown}: layers x, y are not in the network TensorRT parsed from {graphs['fp32']}")


def test_layers_with_two_outputs_get_both_output_types(monkeypatch, tmp_path):
    _, trt = fakes.install(monkeypatch, "10.3")
    network = trt.INetworkDefinition(0)
    network._layers = [trt.ILayer(network, "split", 2), trt.ILayer(network, "other", 1)]
    spec = LayerPrecisions(tmp_path, "0" * 64, {"split": "fp16"})
    builder._apply_layer_precisions(trt, network, spec, tmp_path)
    assert named(trt, "ILayer", "set_output_type") == [("split", 0, "HALF"), ("split", 1, "HALF")]
    assert network._layers[0].precision == trt.DataType.HALF and not network._layers[1].precision_is_set


# -- graphs and parser -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("graph, precision, strongly, given", [
    ("fp32", "fp16", True, "fp32"), ("fp32", "int8", True, "fp32"), ("fp16", "fp32", True, "fp16"),
    ("fp32", "int8", False, "fp32"), ("fp16", "fp32", False, "fp16"), ("int8", "fp16", False, "int8")])
def test_a_graph_of_another_precision_is_refused_in_full(monkeypatch, tmp_path, graphs, graph, precision, strongly,
                                                         given):
    typed = "strongly" if strongly else "weakly"
    assert refusal(monkeypatch, tmp_path, graphs[graph], precision=precision, strongly_typed=strongly) == (
        f"{graphs[graph]}: is an {given} graph; a {typed} typed --precision {precision} build needs the {precision} "
        "graph (Q/DQ for int8), or --legacy-calibrator with the FP32 graph on TensorRT 10")


def test_the_cpu_int8_graph_and_a_graph_with_two_inputs_are_refused(monkeypatch, tmp_path, graphs):
    with pytest.raises(ArtifactError) as raised:  # TensorRT's parser refuses it first (see the parser test)
        builder.graph_precision(graphs["cpu_int8"])
    assert str(raised.value) == (f"{graphs['cpu_int8']}: is the ONNX Runtime CPU INT8 graph (uint8 activations); "
                                 "TensorRT builds the Q/DQ graph (*.qdq.onnx)")
    assert refusal(monkeypatch, tmp_path, graphs["two_inputs"], error=ArtifactError) == (
        f"{graphs['two_inputs']}: expected one input, the graph has 2")
    assert builder.graph_precision(graphs["int8"]) == "int8" and builder.graph_precision(graphs["fp16"]) == "fp16"


def test_parser_errors_name_node_operator_code_and_description(monkeypatch, tmp_path):
    _, trt = fakes.install(monkeypatch, "10.3")
    assert builder._parser_error(trt.ParserError(3, "no importer", "UNSUPPORTED_NODE", "qconv", "QLinearConv")) == (
        "node 3 'qconv' (QLinearConv): UNSUPPORTED_NODE: no importer")
    assert builder._parser_error(trt.ParserError(-1, "bad file")) == "node -1: MODEL_DESERIALIZE_FAILED: bad file"
    assert builder._parser_error(trt.ParserError(2, "x", "INVALID_NODE", "", "Conv")) == "node 2 (Conv): INVALID_NODE: x"
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    message = refusal(monkeypatch, tmp_path, bad, error=ArtifactError)
    assert message.startswith(f"{bad}: TensorRT's ONNX parser failed: node -1: MODEL_DESERIALIZE_FAILED: ")
    uint8 = ("INVALID_NODE: zero point of type UINT8: TensorRT quantizes to INT8 only (symmetric, zero point 0 of "
             "type int8)")
    cpu = write_classifier(tmp_path / "cpu.onnx", zero_point=np.array(0, np.uint8))
    assert refusal(monkeypatch, tmp_path, cpu, error=ArtifactError, precision="int8") == (
        f"{cpu}: TensorRT's ONNX parser failed: node 0 (QuantizeLinear): {uint8}; node 1 (DequantizeLinear): {uint8}")
    monkeypatch.setattr(sys.modules["tensorrt"].OnnxParser, "parse_from_file", lambda self, model: False)
    with pytest.raises(ArtifactError) as raised:
        build_engine(graphs_fp32(tmp_path), settings(), tmp_path, log=lambda _: None)
    assert str(raised.value) == f"{tmp_path / 'fp32.onnx'}: TensorRT's ONNX parser failed: no details"


def graphs_fp32(folder):
    return conv_classifier(folder / "fp32.onnx")


def test_a_missing_onnx_is_refused_first(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(ArtifactError) as raised:
        build_engine(tmp_path / "none.onnx", settings(), tmp_path)
    assert str(raised.value) == f"{tmp_path / 'none.onnx'}: ONNX file not found"


def test_a_failed_build_says_so(monkeypatch, tmp_path, graphs):
    _, trt = fakes.install(monkeypatch, "10.3")
    monkeypatch.setattr(trt.Builder, "build_serialized_network", lambda self, network, config: None)
    with pytest.raises(ArtifactError) as raised:
        build_engine(graphs["fp32"], settings(timing_cache=tmp_path / "t.cache"), tmp_path, log=lambda _: None)
    assert str(raised.value) == f"{graphs['fp32']}: TensorRT could not build an engine (see the TensorRT log above)"
    assert not (tmp_path / "t.cache").exists() and not list(tmp_path.glob("*.engine"))


def test_tensorrt_11_refuses_weak_typing_in_full(monkeypatch, tmp_path, graphs):
    assert refusal(monkeypatch, tmp_path, graphs["fp32"], "11.4", strongly_typed=False) == (
        "TensorRT 11.4.0.106 removed weak typing (BuilderFlag.FP16/INT8 and calibrators): build the FP16 or Q/DQ "
        "graph strongly typed instead")


# -- timing cache ------------------------------------------------------------------------------------------------


def test_timing_cache_written_then_reused(monkeypatch, tmp_path, graphs):
    path = tmp_path / "timing.cache"
    trt, _, _, lines = build(monkeypatch, tmp_path, graphs["fp32"], timing_cache=path)
    assert path.read_bytes() == b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed"
    assert named(trt, "IBuilderConfig", "create_timing_cache") == [(b"",)] and len(lines) == 1
    trt, _, _, lines = build(monkeypatch, tmp_path, graphs["fp32"], timing_cache=path)
    assert named(trt, "IBuilderConfig", "create_timing_cache") == [(b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed",)]
    assert named(trt, "IBuilderConfig", "set_timing_cache") == [(False,)] and len(lines) == 1
    assert path.read_bytes() == b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed\ntimed"


def test_an_empty_timing_cache_file_starts_afresh_without_a_note(monkeypatch, tmp_path, graphs):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"")
    trt, _, _, lines = build(monkeypatch, tmp_path, graphs["fp32"], timing_cache=path)
    assert named(trt, "IBuilderConfig", "create_timing_cache") == [(b"",)] and len(lines) == 1
    assert path.read_bytes() == b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed"


@pytest.mark.parametrize("content", [b"\x00garbage", b"FAKE-TIMING-CACHE 10.16.1.11 8.7\ntimed"])
def test_an_unreadable_timing_cache_is_replaced_with_a_note(monkeypatch, tmp_path, graphs, content):
    path = tmp_path / "timing.cache"
    path.write_bytes(content)
    trt, _, _, lines = build(monkeypatch, tmp_path, graphs["fp32"], timing_cache=path)
    assert lines[0] == (f"note: timing cache {path} is unreadable (corrupt, or from another TensorRT); starting an "
                        "empty one")
    assert named(trt, "IBuilderConfig", "create_timing_cache") == [(content,), (b"",)]
    assert named(trt, "IBuilderConfig", "set_timing_cache") == [(False,)]
    assert path.read_bytes() == b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed"


def test_a_timing_cache_of_another_gpu_is_replaced_with_a_note(monkeypatch, tmp_path, graphs):
    path = tmp_path / "timing.cache"
    path.write_bytes(b"FAKE-TIMING-CACHE 10.3.0 9.0\ntimed\ntimed")
    trt, _, _, lines = build(monkeypatch, tmp_path, graphs["fp32"], timing_cache=path)
    assert lines[0] == f"note: timing cache {path} was made on another GPU or TensorRT; starting an empty one"
    assert named(trt, "IBuilderConfig", "set_timing_cache") == [(False,), (False,)]
    assert path.read_bytes() == b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed"


def test_no_empty_timing_cache_is_an_error(monkeypatch, tmp_path):
    _, trt = fakes.install(monkeypatch, "10.3")
    monkeypatch.setattr(trt.IBuilderConfig, "create_timing_cache", lambda self, data: None)
    with pytest.raises(ArtifactError) as raised:
        builder._load_timing_cache(trt.IBuilderConfig(), None, print)
    assert str(raised.value) == "TensorRT could not create an empty timing cache (see its log above)"


def test_create_timing_cache_errors_become_none(monkeypatch):
    _, trt = fakes.install(monkeypatch, "10.3")
    config = trt.IBuilderConfig()
    assert builder._create_timing_cache(config, b"FAKE-TIMING-CACHE 9.0.0 8.7") is None
    assert builder._create_timing_cache(config, b"FAKE-TIMING-CACHE 10.3.0 8.7")._capability == "8.7"


# -- DLA ---------------------------------------------------------------------------------------------------------


DLA = {"precision": "fp16", "min_batch": 4, "opt_batch": 4, "max_batch": 4}


def test_dla_build_configuration_and_placement(monkeypatch, tmp_path, graphs):
    trt, info, plan, lines = build(monkeypatch, tmp_path, graphs["fp32"], dla_core=1, **DLA)
    assert [c for c in config_calls(trt) if c[0] in ("set", "set_flag")] == [
        ("set_flag", "FP16"), ("set", "default_device_type", trt.DeviceType.DLA), ("set", "DLA_core", 1),
        ("set_flag", "GPU_FALLBACK")]
    assert named(trt, "IOptimizationProfile", "set_shape") == [("input", (4, 1, 28, 28), (4, 1, 28, 28), (4, 1, 28, 28))]
    assert plan["dla_core"] == 1 and plan["builder_flags"] == ["FP16", "GPU_FALLBACK"]
    assert named(trt, "Runtime", "set") == [("DLA_core", 1)]
    assert named(trt, "Runtime", "init") == named(trt, "Builder", "init") == [(id(trt_logger(trt)),)]
    assert info.sidecar["trtexec"] == (
        f"/usr/src/tensorrt/bin/trtexec --onnx={graphs['fp32']} --saveEngine={info.engine_path} --fp16 "
        "--minShapes=input:4x1x28x28 --optShapes=input:4x1x28x28 --maxShapes=input:4x1x28x28 "
        "--memPoolSize=workspace:1024M --useDLACore=1 --allowGPUFallback --noTF32")
    assert info.sidecar["dla_placement"] == {
        "network_layers": 5, "network_layers_on_dla": 3, "gpu_fallback_layers": ["pool", "flatten"],
        "engine_dla_layers": ["{ForeignNode[conv...relu]}", "{ForeignNode[fc...fc]}"],
        "engine_gpu_layers": ["pool", "flatten"]}
    assert lines == [f"building fp16 engine from {graphs['fp32']} with TensorRT 10.3.0 on NVIDIA Jetson AGX Orin "
                     "(weakly typed, batch 4/4/4)"]
    assert info.sidecar["strongly_typed"] is False and info.sidecar["dla_core"] == 1


def test_a_version_compatible_dla_engine_is_read_back_with_host_code_allowed(monkeypatch, tmp_path, graphs):
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], dla_core=0, version_compatible=True, **DLA)
    assert named(trt, "Runtime", "set") == [("DLA_core", 0), ("engine_host_code_allowed", True)]
    assert plan["builder_flags"] == ["FP16", "GPU_FALLBACK", "VERSION_COMPATIBLE"]


def test_dla_placement_reads_detailed_layers_and_drops_the_reformats(monkeypatch, tmp_path, graphs):
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], dla_core=0, **DLA)
    layers = [{"Name": "input to nvm"}, {"Name": "{ForeignNode[conv...fc]}"}, {"Name": "fc from nvm"},
              {"Name": "fc copy finish"}, {"Name": "pool"}, {"Other": 1}]
    monkeypatch.setattr(trt.EngineInspector, "get_engine_information",
                        lambda self, fmt: json.dumps({"Layers": layers}) if fmt == trt.LayerInformationFormat.JSON
                        else "")
    placement = builder.dla_placement(trt, info.engine_path.read_bytes(), settings(dla_core=0, **DLA),
                                      {"conv": True, "pool": False, "fc": True})
    assert placement == {"network_layers": 3, "network_layers_on_dla": 2, "gpu_fallback_layers": ["pool"],
                         "engine_dla_layers": ["{ForeignNode[conv...fc]}"], "engine_gpu_layers": ["pool", ""]}
    monkeypatch.setattr(trt.EngineInspector, "get_engine_information", lambda self, fmt: "{}")
    assert builder.dla_placement(trt, info.engine_path.read_bytes(), settings(dla_core=0, **DLA), {})[
        "engine_dla_layers"] == []
    monkeypatch.setattr(trt.Runtime, "deserialize_cuda_engine", lambda self, plan: None)
    with pytest.raises(ArtifactError) as raised:
        builder.dla_placement(trt, b"", settings(dla_core=0, **DLA), {})
    assert str(raised.value) == "TensorRT could not deserialize the DLA engine it built (see its log above)"


def test_layer_name_of_either_inspector_verbosity():
    assert builder._layer_name({"Name": "conv"}) == "conv" and builder._layer_name({}) == ""
    assert builder._layer_name("relu") == "relu"


def test_dla_warnings_and_their_boundary():
    placement = {"network_layers": 4, "network_layers_on_dla": 2, "engine_dla_layers": ["{ForeignNode[a...b]}"]}
    assert builder.dla_warning(placement, 0) is None
    assert builder.dla_warning({**placement, "network_layers_on_dla": 1}, 1) == (
        "warning: most layers of the dla1 engine fell back to the GPU (3 of 4 cannot run on the DLA); the DLA saves "
        "little here")
    assert builder.dla_warning({**placement, "network_layers": 5}, 2) == (
        "warning: most layers of the dla2 engine fell back to the GPU (3 of 5 cannot run on the DLA); the DLA saves "
        "little here")
    assert builder.dla_warning({**placement, "engine_dla_layers": []}, 0) == (
        "warning: the dla0 engine runs entirely on the GPU: no layer landed on the DLA")


def test_a_dla_build_that_fell_back_logs_the_warning(monkeypatch, tmp_path, graphs):
    monkeypatch.setattr("tests.fakes.fake_tensorrt.DLA_UNSUPPORTED_OPS", {"Conv", "Relu", "GlobalAveragePool",
                                                                       "Flatten"})
    _, info, _, lines = build(monkeypatch, tmp_path, graphs["fp32"], dla_core=0, **DLA)
    assert lines[1:] == ["warning: most layers of the dla0 engine fell back to the GPU (4 of 5 cannot run on the "
                         "DLA); the DLA saves little here"]
    assert info.sidecar["dla_placement"]["gpu_fallback_layers"] == ["conv", "relu", "pool", "flatten"]


@pytest.mark.parametrize("version, devices, core, message", [
    ("10.16", None, 0, f"--dla-core: TensorRT 10.16.1.11 has no DLA support ({DLA_RELEASES})"),
    ("10.3", [H100], 0, "--dla-core 0: this device has no DLA (builder.num_DLA_cores is 0)"),
    ("10.3", None, 2, "--dla-core 2: this device has 2 DLA cores (0..1)")])
def test_dla_refusals_in_full(monkeypatch, tmp_path, graphs, version, devices, core, message):
    assert refusal(monkeypatch, tmp_path, graphs["fp16"], version, devices, dla_core=core, **DLA) == message


def test_dla_int8_on_tensorrt_10_needs_the_legacy_calibrator(monkeypatch, tmp_path, graphs):
    assert refusal(monkeypatch, tmp_path, graphs["int8"], dla_core=0, **{**DLA, "precision": "int8"}) == (
        "--dla-core with int8 on TensorRT 10.3.0: NVIDIA's DLA flow is the FP32 graph with the INT8 flag and a "
        "calibration cache; add --legacy-calibrator (the Q/DQ graph is not built for DLA here)")
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], cache=graphs["cache"], dla_core=0,
                               legacy_calibrator=True, **{**DLA, "precision": "int8"})
    assert plan["builder_flags"] == ["FP16", "GPU_FALLBACK", "INT8"] and plan["dla_core"] == 0


# -- compatibility -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("version, level, member", [("10.3", "ampere_plus", "AMPERE_PLUS"),
                                                    ("10.16", "same_compute_capability", "SAME_COMPUTE_CAPABILITY")])
def test_hardware_compatibility_level_is_set(monkeypatch, tmp_path, graphs, version, level, member):
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], version, [A100], hardware_compatibility=level)
    assert named(trt, "IBuilderConfig", "set") == [("hardware_compatibility_level",
                                                    getattr(trt.HardwareCompatibilityLevel, member))]
    assert info.sidecar["hardware_compatibility"] == level


@pytest.mark.parametrize("version, devices, level, message", [
    ("10.3", [H100], "same_compute_capability",
     "TensorRT 10.3.0 has no hardware-compatibility level 'same_compute_capability'; it offers none, ampere_plus"),
    ("10.3", [ORIN], "ampere_plus", "hardware compatibility is not supported on Jetson (NVIDIA Jetson AGX Orin is an "
                                    "integrated GPU); build with --hardware-compatibility none"),
    ("10.3", [T4], "ampere_plus", "--hardware-compatibility ampere_plus is built on Ampere or later; Tesla T4 has "
                                  "compute capability 7.5")])
def test_hardware_compatibility_refusals_in_full(monkeypatch, tmp_path, graphs, version, devices, level, message):
    assert refusal(monkeypatch, tmp_path, graphs["fp32"], version, devices, hardware_compatibility=level) == message


def test_same_compute_capability_is_allowed_below_ampere(monkeypatch, tmp_path, graphs):
    trt, _, _, _ = build(monkeypatch, tmp_path, graphs["fp32"], "10.16", [T4],
                         hardware_compatibility="same_compute_capability")
    assert named(trt, "IBuilderConfig", "set")[0][0] == "hardware_compatibility_level"


def test_version_compatible_sets_its_flag(monkeypatch, tmp_path, graphs):
    trt, info, plan, _ = build(monkeypatch, tmp_path, graphs["fp32"], "10.3", [H100], version_compatible=True)
    assert [c for c in config_calls(trt) if c[0] == "set_flag"] == [("set_flag", "VERSION_COMPATIBLE")]
    assert info.sidecar["version_compatible"] is True and not named(trt, "IBuilderConfig", "set")


# -- what is written ---------------------------------------------------------------------------------------------


def test_engine_path_sidecar_and_device(monkeypatch, tmp_path, graphs):
    rec, trt = fakes.install(monkeypatch, "10.3", [ORIN, H100])
    info = build_engine(str(graphs["fp32"]), settings(device=1), tmp_path / "out", model_name="resnet18-w0.25",
                        extra_metadata={"checkpoint": "c.pt", "tf32": "overridden"}, log=lambda _: None)
    name = "resnet18-w0.25_fp32_b16_sm90-nvidia-h100-80gb-hbm3_trt10.3.0.engine"
    assert info.engine_path == tmp_path / "out" / name and info.sidecar_path == tmp_path / "out" / (name[:-7] + ".json")
    assert named(trt, "Builder", "build_serialized_network") == [(1,)]
    assert json.loads(info.engine_path.read_bytes())["device"]["name"] == "NVIDIA H100 80GB HBM3"
    sidecar = dict(info.sidecar)
    seconds = sidecar.pop("build_seconds")
    assert isinstance(seconds, float) and 0 <= seconds < 60 and seconds == round(seconds, 2)
    assert read_sidecar(info.engine_path) == info.sidecar
    assert sidecar == {
        "engine": name, "tensorrt_version": "10.3.0", "gpu_name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0",
        "integrated_gpu": False, "platform": sidecar["platform"], "precision": "fp32", "tf32": "overridden",
        "dla_core": None, "hardware_compatibility": "none", "version_compatible": False, "strongly_typed": True,
        "legacy_calibrator": False, "dla_placement": None,
        "profile": {"min": [2, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [16, 1, 28, 28]},
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}],
        "source_onnx": str(graphs["fp32"]), "source_onnx_sha256": sha256_file(graphs["fp32"]),
        "calibration": {"method": None}, "build_settings": settings(device=1).as_dict(),
        "trtexec": (f"/usr/src/tensorrt/bin/trtexec --onnx={graphs['fp32']} --saveEngine={info.engine_path} "
                    "--stronglyTyped --minShapes=input:2x1x28x28 --optShapes=input:8x1x28x28 "
                    "--maxShapes=input:16x1x28x28 --memPoolSize=workspace:1024M --noTF32 --device=1"),
        "normalization": {"mean": 0.286, "std": 0.353}, "class_names": sidecar["class_names"], "checkpoint": "c.pt"}
    assert sidecar["platform"] in ("x86_64", "aarch64") and len(sidecar["class_names"]) == 10
    assert planned_engine_path(graphs["fp32"], settings(device=1), tmp_path / "out", "resnet18-w0.25") == \
        info.engine_path
    assert planned_engine_path(graphs["fp32"], settings()).as_posix() == \
        "engines/tiny_fp32_b16_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine"


def test_qdq_and_legacy_sidecars_name_their_calibration_and_trtexec_line(monkeypatch, tmp_path, graphs):
    _, info, _, _ = build(monkeypatch, tmp_path, graphs["int8"], precision="int8")
    assert info.sidecar["calibration"] == {"method": "qdq-graph"}
    assert info.engine_path.name == "tiny_int8_b16_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine"
    _, info, _, _ = build(monkeypatch, tmp_path, graphs["fp32"], cache=graphs["cache"], precision="int8",
                          legacy_calibrator=True, tf32=True, timing_cache=tmp_path / "t.cache")
    assert info.sidecar["trtexec"] == (
        f"/usr/src/tensorrt/bin/trtexec --onnx={graphs['fp32']} --saveEngine={info.engine_path} --int8 --fp16 "
        f"--calib={graphs['cache']} --minShapes=input:2x1x28x28 --optShapes=input:8x1x28x28 "
        f"--maxShapes=input:16x1x28x28 --memPoolSize=workspace:1024M --timingCacheFile={tmp_path / 't.cache'}")
    assert info.engine_path.name == "tiny_int8-legacy-calib-tf32_b16_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine"


def test_fp16_engine_metadata_uses_the_networks_dtypes(monkeypatch, tmp_path, graphs):
    _, info, _, _ = build(monkeypatch, tmp_path, graphs["fp16"], precision="fp16")
    model = onnx.load(str(graphs["fp16"]))
    dtype = {TensorProto.FLOAT: "float32", TensorProto.FLOAT16: "float16"}
    assert info.sidecar["inputs"] == [{"name": "input", "dtype": dtype[model.graph.input[0].type.tensor_type.elem_type],
                                       "shape": [-1, 1, 28, 28]}]
    assert info.sidecar["outputs"][0]["dtype"] == dtype[model.graph.output[0].type.tensor_type.elem_type]


def test_another_input_name_and_size_is_followed_everywhere(monkeypatch, tmp_path):
    images = conv_classifier(tmp_path / "images.onnx", ("images",), size=32)
    trt, info, plan, _ = build(monkeypatch, tmp_path, images)
    assert named(trt, "IOptimizationProfile", "set_shape") == [("images", (2, 1, 32, 32), (8, 1, 32, 32),
                                                                  (16, 1, 32, 32))]
    assert info.sidecar["inputs"] == [{"name": "images", "dtype": "float32", "shape": [-1, 1, 32, 32]}]
    assert info.sidecar["profile"] == {"min": [2, 1, 32, 32], "opt": [8, 1, 32, 32], "max": [16, 1, 32, 32]}
    assert "--minShapes=images:2x1x32x32 --optShapes=images:8x1x32x32 --maxShapes=images:16x1x32x32" in \
        info.sidecar["trtexec"]


def test_planning_an_engine_path_without_tensorrt_says_so(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTMissing) as raised:
        planned_engine_path(tmp_path / "m.onnx", settings())
    assert str(raised.value).startswith("planning an engine needs tensorrt, not installed here: tensorrt: ")


def test_builder_and_parser_log_through_the_process_logger(monkeypatch, tmp_path, graphs):
    _, trt = fakes.install(monkeypatch, "11.4")
    loggers = []
    init = trt.OnnxParser.__init__

    def parser_init(self, network, logger):
        loggers.append(logger)
        init(self, network, logger)

    monkeypatch.setattr(trt.OnnxParser, "__init__", parser_init)
    build_engine(graphs["fp32"], settings(), tmp_path, log=lambda _: None)
    assert loggers == [trt_logger(trt)] and named(trt, "Builder", "init") == [(id(trt_logger(trt)),)]


def test_building_without_tensorrt_says_so_and_engines_go_to_engines_by_default(monkeypatch, tmp_path, graphs):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(TensorRTMissing) as raised:
        build_engine(graphs["fp32"], settings(), tmp_path)
    assert str(raised.value).startswith("building an engine needs tensorrt, not installed here: tensorrt: ")
    fakes.install(monkeypatch, "10.3")
    monkeypatch.chdir(tmp_path)
    info = build_engine(graphs["fp32"], settings(), log=lambda _: None)
    assert info.engine_path.as_posix() == "engines/tiny_fp32_b16_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine"
    assert (tmp_path / info.engine_path).is_file()
