"""Layers kept out of INT8: Q/DQ structure, TensorRT parser rules, MACs, the budgeted search, layer precisions."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.quantize.calibrate import calibrate_onnx
from resnet_deploy.quantize.fallback import (FallbackSettings, QdqEvaluator, int8_mac_share, layer_macs,
                                             layer_precisions, read_layer_precisions, search_fallback)
from resnet_deploy.quantize.qdq import (qdq_model, quantizable_layers, quantized_activations, resolve_layers,
                                        tensorrt_qdq_problems)


@pytest.fixture(scope="module")
def fp32(untrained_onnx):
    return onnx.load(str(untrained_onnx))


def nodes_by_name(model):
    return {node.name: node for node in model.graph.node}


def producers(model):
    return {out: node for node in model.graph.node for out in node.output}


def run(model, images):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]


def test_layers_resolve_by_name_node_first_and_last(fp32):
    layers = quantizable_layers(fp32)
    assert len(layers) == 21 and layers[0].name == "conv1" and layers[-1].name == "fc"
    assert resolve_layers(fp32, ["first", "last", "layer2.0.conv1", layers[3].node, "conv1"]) == [
        layers[0].node, layers[-1].node, next(l.node for l in layers if l.name == "layer2.0.conv1"), layers[3].node]
    with pytest.raises(ArtifactError, match="no quantizable layer 'layer9.conv'"):
        resolve_layers(fp32, ["layer9.conv"])


def test_excluded_layer_loses_its_qdq_and_others_keep_theirs(fp32, untrained_amax):
    layers = {layer.name: layer.node for layer in quantizable_layers(fp32)}
    excluded = layers["layer2.0.conv1"]  # reads relu_4, which the shortcut conv layer2.0.downsample.0 also reads
    model = qdq_model(fp32, untrained_amax, fallback={excluded: "fp32"})
    made_by, by_name = producers(model), nodes_by_name(model)
    conv = by_name[excluded]
    assert conv.input[0] == "relu_4" and conv.input[1] == "layer2.0.conv1.weight"
    shortcut = by_name[layers["layer2.0.downsample.0"]]
    assert made_by[shortcut.input[0]].op_type == "DequantizeLinear" and made_by[shortcut.input[1]].op_type == "DequantizeLinear"
    assert "relu_4" in quantized_activations(fp32, [excluded])
    main_conv = layers["layer2.0.conv2"]
    assert len(quantized_activations(fp32, [main_conv])) == len(quantized_activations(fp32)) - 2
    add = next(n for n in model.graph.node if n.op_type == "Add" and "getitem_21" in n.input)
    assert made_by[add.input[1]].op_type == "DequantizeLinear"
    unfused = qdq_model(fp32, untrained_amax, fallback={main_conv: "fp32"})
    add = next(n for n in unfused.graph.node if n.op_type == "Add" and "getitem_21" in n.input)
    assert {producers(unfused)[name].op_type for name in add.input} == {"Conv"}


def test_fp16_fallback_casts_around_fp16_weights(fp32, untrained_amax):
    first, last = quantizable_layers(fp32)[0].node, quantizable_layers(fp32)[-1].node
    model = qdq_model(fp32, untrained_amax, fallback={first: "fp16", last: "fp16"})
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    made_by = producers(model)
    for node_name in (first, last):
        node = nodes_by_name(model)[node_name]
        assert made_by[node.input[0]].op_type == "Cast" and initializers[node.input[1]].dtype == np.float16
        cast_back = next(n for n in model.graph.node if n.input and n.input[0] == node.output[0])
        assert cast_back.op_type == "Cast" and cast_back.attribute[0].i == onnx.TensorProto.FLOAT
    assert made_by["logits"].op_type == "Cast" and model.graph.output[0].name == "logits"


@pytest.mark.parametrize("variant", ["ptq", "per-tensor", "fp16", "fp32", "all-fp32"])
def test_every_variant_passes_tensorrt_parser_rules(fp32, untrained_amax, variant):
    layers = [layer.node for layer in quantizable_layers(fp32)]
    fallback = {"fp16": {layers[0]: "fp16", layers[7]: "fp16"}, "fp32": {layers[0]: "fp32", layers[-1]: "fp32"},
                "all-fp32": dict.fromkeys(layers, "fp32")}.get(variant, {})
    model = qdq_model(fp32, untrained_amax, fallback=fallback, per_channel=variant != "per-tensor")
    onnx.checker.check_model(model, full_check=True)
    assert tensorrt_qdq_problems(model) == []


def test_parser_rules_catch_what_tensorrt_refuses(fp32, untrained_amax):
    model = qdq_model(fp32, untrained_amax)
    zero_point = next(i for i in model.graph.initializer if i.name.endswith("_zero_point"))
    zero_point.CopyFrom(numpy_helper.from_array(np.ones(numpy_helper.to_array(zero_point).shape, np.int8), zero_point.name))
    conv = next(n for n in model.graph.node if n.op_type == "Conv")
    conv.input[1] = "input"
    model.graph.node.append(onnx.helper.make_node("ConvInteger", ["a", "b"], ["c"], name="integer_conv"))
    problems = "\n".join(tensorrt_qdq_problems(model))
    assert "zero point must be an int8 initializer equal to 0" in problems
    assert f"{conv.name}: weight input is neither an initializer" in problems
    assert "integer_conv: ConvInteger is not supported" in problems


def test_all_layers_back_in_fp32_is_the_fp32_graph(fp32, untrained_amax, data_dir):
    images = data.normalize(data.load_fashion_mnist(data_dir).val_images[:64])
    everything = {layer.node: "fp32" for layer in quantizable_layers(fp32)}
    model = qdq_model(fp32, untrained_amax, fallback=everything)
    assert not any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)
    np.testing.assert_allclose(run(model, images), run(fp32, images), rtol=1e-5, atol=1e-5)
    fp16 = run(qdq_model(fp32, untrained_amax, fallback=dict.fromkeys(everything, "fp16")), images)
    assert np.abs(fp16 - run(fp32, images)).max() < 0.05 * np.abs(run(fp32, images)).max()


def test_layer_macs_add_up_to_the_zoo_count(fp32):
    from resnet_deploy.models import count_macs, create_model

    macs = layer_macs(fp32)
    assert sum(macs.values()) == count_macs(create_model("resnet18", width=0.125))
    first = quantizable_layers(fp32)[0].node
    assert int8_mac_share(macs, {first: "fp16"}) == pytest.approx(1 - macs[first] / sum(macs.values()))
    assert int8_mac_share(macs, {}) == 1.0


def test_layer_precisions_for_tensorrt_10(fp32, tmp_path):
    layers = quantizable_layers(fp32)
    spec = layer_precisions(fp32, {layers[0].node: "fp32", layers[5].node: "fp16"}, source_onnx="tiny.onnx",
                            source_sha256="ab" * 32, calibration_cache="tiny.entropy.cache")
    assert spec["builder_flags"] == ["INT8", "FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert [(r["name"], r["layer"], r["trt_type"]) for r in spec["layers"]] == [
        (layers[0].node, "conv1", "FLOAT"), (layers[5].node, layers[5].name, "HALF")]
    assert f"--layerPrecisions={layers[0].node}:fp32,{layers[5].node}:fp16" in spec["trtexec_args"]
    (tmp_path / "spec.json").write_text(json.dumps(spec))
    read = read_layer_precisions(tmp_path / "spec.json")
    assert read.layers == {layers[0].node: "fp32", layers[5].node: "fp16"} and read.needs_fp16
    assert read.source_onnx_sha256 == "ab" * 32 and read.path == tmp_path / "spec.json"
    for change, message in [({"precision": "int4"}, "layers .* have a precision other than"),
                            ({"name": layers[5].node}, f"layers {layers[5].node} are listed more than once")]:
        bad = {**spec, "layers": [{**spec["layers"][0], **change}, spec["layers"][1]]}
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(ArtifactError, match=f"bad.json: {message}"):
            read_layer_precisions(tmp_path / "bad.json")
    for other in [{}, {**spec, "source_onnx_sha256": "abc"}]:
        (tmp_path / "other.json").write_text(json.dumps(other))
        with pytest.raises(ArtifactError, match="other.json: not a layer-precisions file"):
            read_layer_precisions(tmp_path / "other.json")


def test_settings_refuse_bad_values():
    with pytest.raises(ResnetDeployError, match="--fallback"):
        FallbackSettings(fallback="int4")
    with pytest.raises(ResnetDeployError, match="--min-agreement"):
        FallbackSettings(min_agreement_pct=120)
    assert not FallbackSettings().active and FallbackSettings(keep_fp32=("first",)).active


def test_no_budget_search_keeps_the_named_layers_only(fp32, untrained_amax, data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    evaluator = QdqEvaluator(fp32, untrained_amax, data.normalize(dataset.val_images[:200]), dataset.val_labels[:200])
    result = search_fallback(evaluator, FallbackSettings(exclude=("layer3.0.conv1",), keep_fp32=("first", "last")))
    layers = {layer.name: layer.node for layer in quantizable_layers(fp32)}
    assert result.fallback == {layers["layer3.0.conv1"]: "fp16", layers["conv1"]: "fp32", layers["fc"]: "fp32"}
    assert result.sensitivity == [] and result.evaluations == 2


@pytest.fixture(scope="module")
def trained(trained_onnx, data_dir):
    model = onnx.load(str(trained_onnx))
    ranges = calibrate_onnx(trained_onnx, data.calibration_images(128, data_dir=data_dir), "entropy")
    return model, ranges


@pytest.mark.slow
def test_search_finds_the_deliberately_broken_layer(trained, data_dir):
    model, ranges = trained
    broken = dict(ranges, relu_3=ranges["relu_3"] * 0.02)  # only layer1.1.conv2 reads relu_3
    dataset = data.load_fashion_mnist(data_dir)
    evaluator = QdqEvaluator(model, broken, data.normalize(dataset.val_images[:1000]), dataset.val_labels[:1000])
    assert evaluator.fp32_top1 - evaluator.score({}).top1 > 0.1
    result = search_fallback(evaluator, FallbackSettings(accuracy_budget_pp=0.5))
    layers = {layer.node: layer.name for layer in quantizable_layers(model)}
    assert [layers[node] for node in result.fallback] == ["layer1.1.conv2"]
    assert result.sensitivity[0]["layer"] == "conv1" and len(result.sensitivity) == 21
    assert max(result.sensitivity, key=lambda r: r["top1_gain_pp"])["layer"] == "layer1.1.conv2"
    assert (evaluator.fp32_top1 - result.scores["fallback"].top1) * 100 <= 0.5


@pytest.mark.slow
def test_calibrate_with_budget_writes_graph_precisions_and_report(trained_onnx, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--onnx", str(trained_onnx), "--method", "max", "--count", "64", "--out-dir",
              str(tmp_path), "--keep-fp32", "first,last", "--accuracy-budget", "1.0", "--data-dir", str(data_dir)])
    assert exit_info.value.code == 0
    report = json.loads((tmp_path / "tiny.int8-max.fallback.json").read_text())
    assert report["excluded"][:2] == [
        {**report["excluded"][0], "layer": "conv1", "precision": "fp32"},
        {**report["excluded"][1], "layer": "fc", "precision": "fp32"}]
    assert report["budget_met"] and report["accuracy"]["validation"]["fallback_drop_pp"] <= 1.0
    assert report["accuracy"]["test"]["images"] == 10000 and 0 < report["int8_mac_share"] < 1
    graph = onnx.load(report["onnx"])
    assert tensorrt_qdq_problems(graph) == []
    precisions = read_layer_precisions(report["layer_precisions"]).layers
    assert list(precisions.values())[:2] == ["fp32", "fp32"] and len(precisions) == len(report["excluded"])
    assert "INT8 fallback (max)" in capsys.readouterr().out


@pytest.mark.slow
def test_build_runs_a_fallback_stage_and_reuses_it(tmp_path, trained_checkpoint, monkeypatch):
    from resnet_deploy.pipeline import BuildOptions, build
    from resnet_deploy.trt.settings import EngineSettings
    from resnet_deploy.trt.sidecar import read_sidecar
    from tests import fakes

    def options(**kwargs):
        return BuildOptions(checkpoint=trained_checkpoint, artifacts_dir=tmp_path / "a", calibration_dir=tmp_path / "c",
                            reports_dir=tmp_path / "r", engines_dir=tmp_path / "e", calibration_method="max",
                            calibration_count=64, parity_limit=1000,
                            fallback=FallbackSettings(keep_fp32=("first",)), **kwargs)

    first = build(options(), log=lambda _: None)
    assert [s.name for s in first.stages] == ["export", "int8", "fallback", "parity"]
    assert first.artifact.name.endswith(".int8-max.fallback.qdq.onnx") and first.parity["passed"]
    assert first.stages[2].details["excluded"][0]["layer"] == "conv1"
    again = build(options(), log=lambda _: None)
    assert all(s.skipped for s in again.stages) and again.stages[2].details["excluded"][0]["layer"] == "conv1"
    _, trt = fakes.install(monkeypatch, "10.3")  # TensorRT 10's legacy path: FP32 ONNX + cache + layer precisions
    legacy = build(options(engine=EngineSettings(precision="int8", legacy_calibrator=True)), log=lambda _: None)
    assert [s.name for s in legacy.stages if not s.skipped] == ["engine", "engine parity"]
    plan = json.loads(legacy.engine.read_bytes())
    conv1 = first.stages[2].details["excluded"][0]["node"]
    assert plan["onnx"] == str(first.stages[0].outputs[0]) and plan["scales"]
    assert plan["layer_precisions"] == {conv1: "FLOAT"} and plan["layer_output_types"] == {conv1: ["FLOAT"]}
    assert plan["builder_flags"] == ["INT8", "OBEY_PRECISION_CONSTRAINTS"]
    sidecar = read_sidecar(legacy.engine)
    assert sidecar["calibration"]["cache"] == str(first.stages[1].outputs[1])
    assert sidecar["calibration"]["layer_precisions"]["file"] == str(first.stages[2].outputs[1])
    assert "_int8-legacy-calib-fallback_" in legacy.engine.name
