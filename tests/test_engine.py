"""The TensorRT builder against recording fakes of TensorRT 10.3, 10.16 and 11.4 (unit tests of our adapter).

The fakes carry each version's real classes, members and enum values, so a call to an API that a
version lacks (BuilderFlag.INT8 or config.int8_calibrator on 11) raises here as it would for real,
and they refuse what TensorRT refuses (see tests/fakes/fake_tensorrt.py).
"""

from __future__ import annotations

import json
import shlex

import pytest

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.quantize.cache import read_calibration_cache
from resnet_deploy.trt import builder as engine_module
from resnet_deploy.trt import compat
from resnet_deploy.trt.builder import build_engine, calibration_version_code, planned_engine_path
from resnet_deploy.trt.compat import capabilities
from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.sidecar import read_sidecar
from tests import fakes
from tests.fakes import fake_tensorrt
from tests.fakes.fake_pycuda import H100, ORIN, FakeDevice
from tests.fakes.graphs import tiny_graphs

pytestmark = pytest.mark.runtime

VERSIONS = ("10.3", "10.16", "11.4")
A4000 = FakeDevice("NVIDIA RTX A4000", (8, 6), integrated=False, dla_cores=0)
T4 = FakeDevice("Tesla T4", (7, 5), integrated=False, dla_cores=0)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tiny_graphs(tmp_path_factory.mktemp("graphs"))


def fake_build(monkeypatch, version, onnx_path, out_dir, precision="fp32", devices=None, calibration_cache=None,
               log=None, **settings):
    rec, trt = fakes.install(monkeypatch, version, devices)
    info = build_engine(onnx_path, EngineSettings(precision=precision, **settings), out_dir,
                        calibration_cache=calibration_cache, log=log or (lambda _: None))
    return trt, info, json.loads(info.engine_path.read_bytes())


def calls_named(trt, name):
    return [c for c in trt.calls if len(c) > 1 and c[1] == name]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_strongly_typed_build_sequence(monkeypatch, tmp_path, graphs, version, precision):
    trt, info, plan = fake_build(monkeypatch, version, graphs[precision], tmp_path, precision)
    strongly_typed_bit = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    assert calls_named(trt, "create_network") == [("Builder", "create_network", strongly_typed_bit)]
    assert plan["builder_flags"] == [] and plan["scales"] is None
    assert plan["profiles"] == {"input": [[1, 1, 28, 28], [32, 1, 28, 28], [256, 1, 28, 28]]}
    assert ("IBuilderConfig", "set_memory_pool_limit", "WORKSPACE", 1024 << 20) in trt.calls
    order = [c[1] for c in trt.calls if len(c) > 1]
    assert order.index("parse_from_file") < order.index("add_optimization_profile") < order.index("build_serialized_network")
    assert info.engine_path.name == f"tiny_{precision}_b256_sm87-nvidia-jetson-agx-orin_trt{trt.__version__}.engine"
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["tensorrt_version"] == trt.__version__ and sidecar["precision"] == precision
    assert sidecar["calibration"]["method"] == ("qdq-graph" if precision == "int8" else None)
    assert sidecar["build_settings"] == EngineSettings(precision=precision).as_dict()
    trtexec = shlex.split(sidecar["trtexec"])
    assert "--stronglyTyped" in trtexec and "--noTF32" in trtexec and "--optShapes=input:32x1x28x28" in trtexec


def test_network_flag_values_differ_between_10_and_11(monkeypatch, tmp_path, graphs):
    flags = {}
    for version in ("10.3", "11.4"):
        _, _, plan = fake_build(monkeypatch, version, graphs["fp32"], tmp_path / version)
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


def test_legacy_calibrator_on_a_dynamic_batch_sets_the_calibration_profile(monkeypatch, tmp_path, graphs):
    """NvInfer.h: a calibration profile must be set when a calibrator serves a network with runtime dimensions."""
    trt, _, _ = fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                           calibration_cache=graphs["cache"])
    order = [c[1] for c in trt.calls if len(c) > 1]
    assert order.index("set_calibration_profile") < order.index("build_serialized_network")
    config = trt.IBuilderConfig()
    builder = trt.Builder(trt.Logger())
    network = builder.create_network(0)
    assert trt.OnnxParser(network, None).parse_from_file(str(graphs["fp32"]))
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 1, 28, 28), (32, 1, 28, 28), (256, 1, 28, 28))
    config.add_optimization_profile(profile)
    config.set_flag(trt.BuilderFlag.INT8)
    cache = engine_module.load_legacy_cache(trt, capabilities(trt), graphs["cache"])
    config.int8_calibrator = engine_module.make_cache_calibrator(trt, cache)
    assert builder.build_serialized_network(network, config) is None
    assert "Calibration optimization profile must be set" in trt.calls[-1][2]


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


def write_layer_precisions(graphs, path, choice, source=None):
    """A `.layer-precisions.json` for the tiny FP32 graph: `choice` maps layer index -> fp16 or fp32."""
    import onnx

    from resnet_deploy.fileio import sha256_file
    from resnet_deploy.quantize.fallback import layer_precisions
    from resnet_deploy.quantize.qdq import quantizable_layers

    model = onnx.load(str(graphs["fp32"]))
    layers = quantizable_layers(model)
    spec = layer_precisions(model, {layers[i].node: precision for i, precision in choice.items()},
                            source_onnx=graphs["fp32"], source_sha256=sha256_file(source or graphs["fp32"]),
                            calibration_cache=graphs["cache"])
    path.write_text(json.dumps(spec))
    return {layers[i].node: precision for i, precision in choice.items()}


@pytest.mark.parametrize("version", ["10.3", "10.16"])
@pytest.mark.parametrize("choice, flags", [({0: "fp32", 5: "fp16", 20: "fp16"}, ["FP16", "INT8"]),
                                           ({0: "fp32", 20: "fp32"}, ["INT8"])])
def test_legacy_build_obeys_the_fallback_layer_precisions(monkeypatch, tmp_path, graphs, version, choice, flags):
    """As trtexec --int8 [--fp16] --precisionConstraints=obey --layerPrecisions=... --layerOutputTypes=...:
    exactly the listed layers get their precision and output types, FP16 only when a layer needs it."""
    spec = tmp_path / "tiny.int8-max.layer-precisions.json"
    chosen = write_layer_precisions(graphs, spec, choice)
    trt, info, plan = fake_build(monkeypatch, version, graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                                 layer_precisions=spec, calibration_cache=graphs["cache"])
    types = {"fp16": "HALF", "fp32": "FLOAT"}
    assert plan["layer_precisions"] == {node: types[p] for node, p in chosen.items()}
    assert plan["layer_output_types"] == {node: [types[p]] for node, p in chosen.items()}
    assert plan["builder_flags"] == [*flags, "OBEY_PRECISION_CONSTRAINTS"] and plan["flags"] == 0 and plan["scales"]
    assert not calls_named(trt, "error") and not calls_named(trt, "calibration cache ignored")
    assert "_int8-legacy-calib-fallback_b256_" in info.engine_path.name
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["calibration"]["layer_precisions"]["layers"] == chosen
    assert sidecar["build_settings"]["layer_precisions"] == str(spec)


def test_layer_precisions_of_another_graph_an_unknown_layer_or_a_malformed_file_are_refused(monkeypatch, tmp_path,
                                                                                            graphs):
    spec = tmp_path / "spec.json"
    write_layer_precisions(graphs, spec, {0: "fp16"}, source=graphs["fp16"])
    with pytest.raises(ArtifactError, match=rf"^{spec}: made for another ONNX \(its source_onnx_sha256 is not "):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                   layer_precisions=spec, calibration_cache=graphs["cache"])
    write_layer_precisions(graphs, spec, {0: "fp16"})
    content = json.loads(spec.read_text())
    content["layers"][0]["name"] = "layer9.conv"
    spec.write_text(json.dumps(content))
    with pytest.raises(ArtifactError, match=rf"^{spec}: layers layer9.conv are not in the network TensorRT parsed "):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                   layer_precisions=spec, calibration_cache=graphs["cache"])
    for text, why in [("not json", "Expecting value"), ('{"format": "resnet-deploy.layer-precisions/1"}',
                                                        "source_onnx_sha256")]:
        spec.write_text(text)
        with pytest.raises(ArtifactError, match=rf"^{spec}: not a layer-precisions file: .*{why}"):
            fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                       layer_precisions=spec, calibration_cache=graphs["cache"])
    assert not list(tmp_path.glob("*.engine"))


def test_layer_precisions_are_refused_where_the_network_is_strongly_typed(monkeypatch, tmp_path, graphs):
    """NvInfer.h 10.x: "Strongly-typed networks reject calls to method setPrecision"; TensorRT 11 has no
    weakly typed networks: the fallback Q/DQ graph is the path there."""
    spec = tmp_path / "spec.json"
    write_layer_precisions(graphs, spec, {0: "fp16"})
    for settings in [{"precision": "int8"}, {"precision": "int8", "strongly_typed": False},
                     {"precision": "fp16", "legacy_calibrator": True}]:
        with pytest.raises(ResnetDeployError, match=rf"^{spec}: layer precisions apply to TensorRT 10's weakly "
                                                    r"typed INT8 build only \(--precision int8 --legacy-calibrator\)"):
            EngineSettings(layer_precisions=spec, **settings)
    with pytest.raises(ResnetDeployError, match="--legacy-calibrator needs TensorRT <= 10; TensorRT 11.4.0.106"):
        fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "int8", legacy_calibrator=True,
                   layer_precisions=spec, calibration_cache=graphs["cache"])


def test_the_fake_parser_names_layers_after_onnx_nodes_and_strong_typing_rejects_layer_precisions(monkeypatch,
                                                                                                 graphs):
    import onnx

    nodes = [node.name for node in onnx.load(str(graphs["fp32"])).graph.node]
    _, trt = fakes.install(monkeypatch, "10.16")
    builder = trt.Builder(trt.Logger())
    strong = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt.OnnxParser(strong, None).parse_from_file(str(graphs["fp32"]))
    assert [strong.get_layer(i).name for i in range(strong.num_layers)] == nodes
    layer = strong.get_layer(0)
    layer.precision = trt.DataType.HALF
    layer.set_output_type(0, trt.DataType.HALF)
    assert not layer.precision_is_set and not layer.output_type_is_set(0)
    assert [c[2].split(": ", 1)[1] for c in calls_named(trt, "error")] == [
        "ILayer::setPrecision: Error Code 3: API Usage Error (strongly typed networks reject calls to setPrecision)",
        "ILayer::setOutputType: Error Code 3: API Usage Error (strongly typed networks reject calls to setOutputType)"]
    weak = builder.create_network(0)
    assert trt.OnnxParser(weak, None).parse_from_file(str(graphs["fp32"]))
    weak.get_layer(0).precision = trt.DataType.HALF
    assert weak.get_layer(0).precision == trt.DataType.HALF and weak.get_layer(0).precision_is_set
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", *[(1, 1, 28, 28)] * 3)
    config.add_optimization_profile(profile)
    assert builder.build_serialized_network(weak, config) is None
    assert "fp16 precision has been set for at least one layer or layer output, but fp16 is not configured" in \
        trt.calls[-1][2]
    config.set_flag(trt.BuilderFlag.FP16)
    assert json.loads(bytes(builder.build_serialized_network(weak, config)))["layer_precisions"] == {nodes[0]: "HALF"}
    trt11 = fake_tensorrt.make_fake_tensorrt("11.4")
    assert not hasattr(trt11.BuilderFlag, "OBEY_PRECISION_CONSTRAINTS")
    with pytest.raises(AttributeError, match="ILayer.precision is not a settable property in TensorRT 11"):
        trt11.ILayer(None, "conv", 1).precision = trt11.DataType.HALF
    with pytest.raises(AttributeError, match="ILayer.set_output_type does not exist in TensorRT 11"):
        trt11.ILayer(None, "conv", 1).set_output_type


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
    _, trt10 = fakes.install(monkeypatch, "10.16")
    builder = trt10.Builder(trt10.Logger(trt10.Logger.WARNING))
    network = builder.create_network(1 << int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    assert trt10.OnnxParser(network, None).parse_from_file(str(graphs["fp16"]))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    profile.set_shape("input", (1, 1, 28, 28), (1, 1, 28, 28), (1, 1, 28, 28))
    config.add_optimization_profile(profile)
    config.set_flag(trt10.BuilderFlag.FP16)
    assert builder.build_serialized_network(network, config) is None
    trt = fake_tensorrt.make_fake_tensorrt("11.4")
    assert not hasattr(trt.BuilderFlag, "INT8") and not hasattr(trt.BuilderFlag, "FP16")
    assert not hasattr(trt, "IInt8EntropyCalibrator2") and not hasattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH")
    config = trt.IBuilderConfig()
    with pytest.raises(AttributeError, match="int8_calibrator"):
        config.int8_calibrator = object()
    with pytest.raises(AttributeError, match="does not exist in TensorRT 11"):
        config.set_quantization_flag
    with pytest.raises(AttributeError, match="does not exist in TensorRT 11"):
        config.set_calibration_profile
    caps = capabilities(trt)
    assert caps.strongly_typed and not caps.precision_flags and not caps.legacy_calibrator and not caps.calibrators
    assert not caps.calibration_profile and caps.tf32_flag


@pytest.mark.parametrize("graph", ["cpu_int8", "qlinear"])
def test_the_fake_parser_refuses_graphs_tensorrt_cannot_import(monkeypatch, tmp_path, graphs, graph, data_dir):
    """The CPU-INT8 graph (uint8 activations with zero points) and QOperator graphs fail to parse, as in TensorRT."""
    from resnet_deploy import data
    from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu

    path = tmp_path / f"{graph}.onnx"
    if graph == "cpu_int8":
        quantize_for_cpu(graphs["fp32"], path, data.calibration_images(32, data_dir=data_dir))
        message = r"node \d+ ('.*' )?\((Quantize|Dequantize)Linear\): INVALID_NODE: .*(UINT8|symmetric)"
    else:
        _qlinear_graph(path)
        message = r"node 1 'conv' \(QLinearConv\): UNSUPPORTED_NODE: No importer registered for op: QLinearConv"
    with pytest.raises(ArtifactError, match=rf"{path.name}: TensorRT's ONNX parser failed: {message}"):
        fake_build(monkeypatch, "10.3", path, tmp_path, "int8")


def _qlinear_graph(path):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, dtype), name) for name, v, dtype in [
        ("xs", 0.1, np.float32), ("xz", 0, np.int8), ("w", np.ones((1, 1, 1, 1)), np.int8), ("ws", 0.1, np.float32),
        ("wz", 0, np.int8), ("ys", 0.1, np.float32), ("yz", 0, np.int8)]]
    nodes = [helper.make_node("QuantizeLinear", ["input", "xs", "xz"], ["q"]),
             helper.make_node("QLinearConv", ["q", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["qy"], name="conv"),
             helper.make_node("DequantizeLinear", ["qy", "ys", "yz"], ["logits"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 1, 28, 28])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(path))


def test_tf32_is_cleared_unless_asked_and_recorded(monkeypatch, tmp_path, graphs):
    """TensorRT turns TF32 on by default: an "fp32" engine must clear it, and --tf32 says so in name and sidecar."""
    trt, info, plan = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, "fp32")
    assert "TF32" not in plan["builder_flags"] and ("IBuilderConfig", "clear_flag", "TF32") in trt.calls
    assert read_sidecar(info.engine_path)["tf32"] is False
    _, info, plan = fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp32", tf32=True)
    assert "TF32" in plan["builder_flags"] and "_fp32-tf32_b256_" in info.engine_path.name
    assert read_sidecar(info.engine_path)["tf32"] is True


@pytest.mark.parametrize("version", VERSIONS)
def test_the_fake_config_starts_with_tf32_on_as_tensorrt_does(version):
    trt = fake_tensorrt.make_fake_tensorrt(version)
    assert trt.IBuilderConfig().get_flag(trt.BuilderFlag.TF32)


@pytest.mark.parametrize("graph", ["fp16", "fp32"])
def test_dla_build_on_jetson_follows_nvidias_tensorrt_10_flow(monkeypatch, tmp_path, graphs, graph):
    """TensorRT 10's DLA flow (trtexec --useDLACore=1 --fp16 --allowGPUFallback): a weakly typed network with the
    FP16 flag, whether the graph is FP16 or FP32; the fake refuses a strongly typed DLA network on 10.x."""
    notes = []
    trt, info, plan = fake_build(monkeypatch, "10.3", graphs[graph], tmp_path, "fp16", min_batch=8, opt_batch=8,
                                 max_batch=8, dla_core=1, version_compatible=True, log=notes.append)
    assert plan["profiles"]["input"] == [[8, 1, 28, 28]] * 3 and plan["dla_core"] == 1
    assert set(plan["builder_flags"]) == {"FP16", "GPU_FALLBACK", "VERSION_COMPATIBLE"} and plan["flags"] == 0
    sets = {c[2]: c[3] for c in calls_named(trt, "set")}
    assert sets["DLA_core"] == 1 and sets["default_device_type"] == trt.DeviceType.DLA
    assert info.engine_path.name.startswith("tiny_fp16-dla1-vc_b8_")
    sidecar = read_sidecar(info.engine_path)
    assert sidecar["profile"] == {"min": [8, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [8, 1, 28, 28]}
    assert sidecar["dla_core"] == 1 and sidecar["version_compatible"] is True and sidecar["integrated_gpu"] is True
    assert sidecar["strongly_typed"] is False and any("weakly typed" in n for n in notes)
    assert not [n for n in notes if n.startswith("warning:")]
    trtexec = shlex.split(sidecar["trtexec"])  # the same build by hand: weak FP16 flag, DLA with GPU fallback
    assert "--fp16" in trtexec and "--stronglyTyped" not in trtexec
    assert {"--useDLACore=1", "--allowGPUFallback", "--versionCompatible", "--minShapes=input:8x1x28x28",
            "--maxShapes=input:8x1x28x28", f"--onnx={graphs[graph]}", f"--saveEngine={info.engine_path}"} <= set(trtexec)


def test_dla_build_records_where_the_layers_landed_from_the_engine_inspector(monkeypatch, tmp_path, graphs):
    """can_run_on_DLA per network layer, then the engine inspector's layers: DLA subgraphs and GPU fallbacks."""
    import onnx

    trt, info, _ = fake_build(monkeypatch, "10.3", graphs["fp16"], tmp_path, "fp16", min_batch=8, opt_batch=8,
                              max_batch=8, dla_core=0)
    placement = read_sidecar(info.engine_path)["dla_placement"]
    nodes = [n for n in onnx.load(str(graphs["fp16"])).graph.node if n.op_type != "Constant"]
    on_gpu = [n.name for n in nodes if n.op_type in ("ReduceMean", "Reshape", "Cast")]
    assert placement["network_layers"] == len(nodes) and placement["gpu_fallback_layers"] == on_gpu
    assert placement["network_layers_on_dla"] == len(nodes) - len(on_gpu) > len(nodes) / 2
    assert placement["engine_dla_layers"] and all(n.startswith("{ForeignNode[") for n in placement["engine_dla_layers"])
    assert set(placement["engine_gpu_layers"]) == set(on_gpu)
    assert ("Runtime", "set", "DLA_core", 0) in trt.calls


def test_a_dla_build_that_mostly_fell_back_to_the_gpu_warns(monkeypatch, tmp_path, graphs):
    from tests.fakes import dla_layers

    monkeypatch.setattr(dla_layers, "DLA_UNSUPPORTED_OPS", {*dla_layers.DLA_UNSUPPORTED_OPS, "Conv", "Relu"})
    monkeypatch.setattr(fake_tensorrt, "DLA_UNSUPPORTED_OPS", dla_layers.DLA_UNSUPPORTED_OPS)
    notes = []
    _, info, _ = fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp16", min_batch=4, opt_batch=4,
                            max_batch=4, dla_core=0, log=notes.append)
    placement = read_sidecar(info.engine_path)["dla_placement"]
    (warning,) = [n for n in notes if n.startswith("warning:")]
    fell_back = placement["network_layers"] - placement["network_layers_on_dla"]
    assert warning == (f"warning: most layers of the dla0 engine fell back to the GPU ({fell_back} of "
                       f"{placement['network_layers']} cannot run on the DLA); the DLA saves little here")
    monkeypatch.setattr(dla_layers, "DLA_UNSUPPORTED_OPS", {"Conv", "Relu", "Add", "ReduceMean", "Reshape", "Gemm"})
    monkeypatch.setattr(fake_tensorrt, "DLA_UNSUPPORTED_OPS", dla_layers.DLA_UNSUPPORTED_OPS)
    notes.clear()
    fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "fp16", min_batch=4, opt_batch=4, max_batch=4,
               dla_core=0, log=notes.append)
    assert "warning: the dla0 engine runs entirely on the GPU: no layer landed on the DLA" in notes


def test_dla_int8_on_tensorrt_10_is_the_calibrated_fp32_graph(monkeypatch, tmp_path, graphs):
    """INT8 on DLA (10.x): FP32 graph + INT8/FP16 flags + a calibrator serving the cache; the Q/DQ graph is refused."""
    trt, info, plan = fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, "int8", min_batch=4, opt_batch=4,
                                 max_batch=4, dla_core=0, legacy_calibrator=True, calibration_cache=graphs["cache"])
    assert set(plan["builder_flags"]) == {"FP16", "INT8", "GPU_FALLBACK"} and plan["scales"] and plan["flags"] == 0
    with pytest.raises(ResnetDeployError, match=r"^--dla-core with int8 on TensorRT 10.3.0: NVIDIA's DLA flow is the "
                                                r"FP32 graph with the INT8 flag and a calibration cache; add "
                                                r"--legacy-calibrator \(the Q/DQ graph is not built for DLA here\)$"):
        fake_build(monkeypatch, "10.3", graphs["int8"], tmp_path, "int8", min_batch=4, opt_batch=4, max_batch=4,
                   dla_core=0)


@pytest.mark.parametrize("settings, message", [
    ({"precision": "fp16", "dla_core": 0}, r"DLA needs a fixed shape: --min-batch = --opt-batch = --max-batch, got 1/32/256"),
    ({"precision": "fp32", "dla_core": 0, "min_batch": 4, "opt_batch": 4, "max_batch": 4},
     "DLA runs FP16 or INT8 networks only"),
    ({"precision": "int8", "dla_core": 0, "min_batch": 4, "opt_batch": 4, "max_batch": 4,
      "hardware_compatibility": "ampere_plus"}, "GPU only; drop --dla-core"),
])
def test_dla_settings_that_tensorrt_would_refuse_are_refused_when_made(settings, message):
    with pytest.raises(ResnetDeployError, match=message):
        EngineSettings(**settings)


@pytest.mark.parametrize("version, devices, core, message", [
    ("10.16", [ORIN], 0, r"TensorRT 10.16.1.11 has no DLA support \(10.7 was the last 10.x release with DLA"),
    ("11.4", [ORIN], 0, "TensorRT 11.4.0.106 has no DLA support"),
    ("10.3", [A4000], 0, r"--dla-core 0: this device has no DLA \(builder.num_DLA_cores is 0\)"),
    ("10.3", [ORIN], 2, r"--dla-core 2: this device has 2 DLA cores \(0..1\)"),
])
def test_dla_refusals_say_which_rule_failed(monkeypatch, tmp_path, graphs, version, devices, core, message):
    with pytest.raises(ResnetDeployError, match=message):
        fake_build(monkeypatch, version, graphs["int8"], tmp_path, "int8", devices=devices, dla_core=core,
                   min_batch=4, opt_batch=4, max_batch=4)


def test_the_fake_builder_refuses_dla_as_tensorrt_does(monkeypatch, graphs):
    """No DLA cores on a release without DLA; a dynamic profile, no FP16/INT8 flag, a strongly typed network (10.x)
    or a layer DLA cannot run without GPU fallback fails to build."""
    _, trt = fakes.install(monkeypatch, "10.16")
    assert trt.Builder(trt.Logger()).num_DLA_cores == 0
    _, trt = fakes.install(monkeypatch, "10.3")
    builder = trt.Builder(trt.Logger())
    assert builder.num_DLA_cores == 2
    strong = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    for flags, batches, builder_flags, error in [
            (0, (1, 8, 8), ["FP16", "GPU_FALLBACK"], "static shapes"),
            (0, (8, 8, 8), ["GPU_FALLBACK"], "FP16 and INT8 only"),
            (strong, (8, 8, 8), ["GPU_FALLBACK"], "TensorRT 10 documents DLA builds weakly typed"),
            (0, (8, 8, 8), ["FP16"], "cannot run on DLA and GPU fallback is not enabled")]:
        network = builder.create_network(flags)
        assert trt.OnnxParser(network, None).parse_from_file(str(graphs["fp32"]))
        config = builder.create_builder_config()
        profile = builder.create_optimization_profile()
        profile.set_shape("input", *[(b, 1, 28, 28) for b in batches])
        config.add_optimization_profile(profile)
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = 0
        for name in builder_flags:
            config.set_flag(getattr(trt.BuilderFlag, name))
        assert builder.build_serialized_network(network, config) is None
        assert error in trt.calls[-1][2]


def test_hardware_compatibility_level(monkeypatch, tmp_path, graphs):
    trt, info, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, devices=[H100],
                              hardware_compatibility="same_compute_capability")
    sets = {c[2]: c[3] for c in calls_named(trt, "set")}
    assert sets["hardware_compatibility_level"] == trt.HardwareCompatibilityLevel.SAME_COMPUTE_CAPABILITY
    assert "_fp32-hwc-samecc_" in info.engine_path.name
    assert read_sidecar(info.engine_path)["hardware_compatibility"] == "same_compute_capability"
    with pytest.raises(ResnetDeployError, match="no hardware-compatibility level 'same_compute_capability'"):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, devices=[H100],
                   hardware_compatibility="same_compute_capability")


@pytest.mark.parametrize("devices, message", [
    ([ORIN], r"not supported on Jetson \(NVIDIA Jetson AGX Orin is an integrated GPU\)"),
    ([T4], "ampere_plus is built on Ampere or later; Tesla T4 has compute capability 7.5"),
])
def test_hardware_compatibility_where_tensorrt_has_none_is_refused(monkeypatch, tmp_path, graphs, devices, message):
    with pytest.raises(ResnetDeployError, match=message):
        fake_build(monkeypatch, "10.3", graphs["fp32"], tmp_path, devices=devices, hardware_compatibility="ampere_plus")


def test_timing_cache_is_saved_and_reused_and_one_of_another_gpu_replaced(monkeypatch, tmp_path, graphs):
    cache = tmp_path / "timing.cache"
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, timing_cache=cache)
    assert calls_named(trt, "create_timing_cache")[0][2] == b""
    assert cache.read_bytes().splitlines() == [b"FAKE-TIMING-CACHE 11.4.0.106 8.7", b"timed"]
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, timing_cache=cache)
    assert cache.read_bytes().count(b"timed") == 2
    notes = []
    trt, _, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, devices=[H100], timing_cache=cache,
                           log=notes.append)
    assert [c[2] for c in calls_named(trt, "set_timing_cache")] == [False, False]
    assert cache.read_bytes().splitlines() == [b"FAKE-TIMING-CACHE 11.4.0.106 9.0", b"timed"]
    assert any("was made on another GPU or TensorRT; starting an empty one" in n for n in notes)


@pytest.mark.parametrize("content, why", [(b"\x00garbage", "returns None"),
                                          (b"FAKE-TIMING-CACHE 10.3.0 8.7\ntimed", "raises")])
def test_an_unreadable_timing_cache_falls_back_to_an_empty_one(monkeypatch, tmp_path, graphs, content, why):
    """create_timing_cache returns None (corrupt data) or raises (another release): notice, empty cache, build."""
    cache = tmp_path / "timing.cache"
    cache.write_bytes(content)
    notes = []
    trt, info, _ = fake_build(monkeypatch, "11.4", graphs["fp32"], tmp_path, timing_cache=cache, log=notes.append)
    assert info.engine_path.is_file()
    assert [n for n in notes if n.startswith("note:")] == [
        f"note: timing cache {cache} is unreadable (corrupt, or from another TensorRT); starting an empty one"]
    assert [c[2] for c in calls_named(trt, "create_timing_cache")] == [content, b""]
    assert cache.read_bytes().splitlines() == [b"FAKE-TIMING-CACHE 11.4.0.106 8.7", b"timed"]


def test_the_fake_timing_cache_returns_none_or_raises_as_tensorrt_may(monkeypatch):
    _, trt = fakes.install(monkeypatch, "11.4")
    config = trt.Builder(trt.Logger()).create_builder_config()
    assert config.create_timing_cache(b"corrupt") is None
    with pytest.raises(RuntimeError, match="timing cache of TensorRT 10.3.0"):
        config.create_timing_cache(b"FAKE-TIMING-CACHE 10.3.0 8.7")


def test_parser_errors_are_reported_with_the_file_and_the_parser_message(monkeypatch, tmp_path):
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"not onnx")
    with pytest.raises(ArtifactError, match=r"broken.onnx: TensorRT's ONNX parser failed: node -1: "
                                            r"MODEL_DESERIALIZE_FAILED: DecodeError"):
        fake_build(monkeypatch, "10.3", broken, tmp_path)


@pytest.mark.parametrize("settings, message", [
    ({"opt_batch": 512}, "min <= opt <= max"),
    ({"min_batch": 0}, "1 <= min"),
    ({"precision": "int4"}, "precision must be one of fp32, fp16, int8"),
    ({"workspace_mib": 0}, "at least 1 MiB"),
    ({"hardware_compatibility": "turing_plus"}, "hardware compatibility must be one of none, ampere_plus"),
])
def test_bad_settings_are_refused_before_tensorrt_is_touched(settings, message):
    with pytest.raises(ResnetDeployError, match=message):
        EngineSettings(**{"precision": "fp32", **settings})


def test_a_missing_onnx_is_refused_before_tensorrt_is_touched(monkeypatch, tmp_path):
    _, trt = fakes.install(monkeypatch, "10.3")
    with pytest.raises(ArtifactError, match="missing.onnx: ONNX file not found"):
        build_engine(tmp_path / "missing.onnx", EngineSettings(precision="fp32"), tmp_path)
    assert trt.calls == []


def test_build_runs_on_the_device_the_settings_name_and_the_planned_path_matches(monkeypatch, tmp_path, graphs):
    """TensorRT builds on the current context's device: device 1 must be pushed around the build."""
    rec, trt = fakes.install(monkeypatch, "11.4", [H100, A4000])
    settings = EngineSettings(precision="fp32", max_batch=64, opt_batch=16, version_compatible=True,
                              hardware_compatibility="ampere_plus", device=1)
    info = build_engine(graphs["fp32"], settings, tmp_path, log=lambda _: None)
    plan = json.loads(info.engine_path.read_bytes())
    assert plan["device"]["name"] == "NVIDIA RTX A4000" and calls_named(trt, "build_serialized_network")[0][2] == 1
    assert info.engine_path.name == "tiny_fp32-hwc-ampere+-vc_b64_sm86-nvidia-rtx-a4000_trt11.4.0.106.engine"
    assert planned_engine_path(graphs["fp32"], settings, tmp_path) == info.engine_path
    assert rec.retained == {1: 1} and rec.context_depth == 0 and ("detach",) not in rec.calls


def test_one_trt_logger_per_process_and_verbose_turns_it_up(monkeypatch, tmp_path, graphs):
    monkeypatch.setattr(compat, "_verbose", False)
    rec, trt = fakes.install(monkeypatch, "10.3")
    for _ in range(2):
        build_engine(graphs["fp32"], EngineSettings(precision="fp32"), tmp_path, log=lambda _: None)
    logger = compat.trt_logger(trt)
    assert calls_named(trt, "init")[0] == ("Logger", "init", "WARNING")
    assert len([c for c in trt.calls if c[:2] == ("Logger", "init")]) == 1
    assert {c[2] for c in trt.calls if c[:2] == ("Builder", "init")} == {id(logger)}
    compat.set_verbose(True)
    assert logger.min_severity == trt.Logger.VERBOSE and compat.trt_logger(trt) is logger
    compat.set_verbose(False)
    assert logger.min_severity == trt.Logger.WARNING
