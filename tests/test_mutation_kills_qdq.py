"""Exact behaviour of the Q/DQ graph on tiny hand-made residual graphs (onnx.helper, milliseconds), written
to kill the mutants tools/mutation.sh finds in resnet_deploy/quantize/qdq.py: which tensors get a Q/DQ
pair (the identity branch of each residual Add, whatever its input order), the scales and zero points,
per-channel axes, FP16/FP32 fallbacks, node order, the summary and TensorRT's parser rules."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import sha256_file
from resnet_deploy.quantize import qdq
from resnet_deploy.quantize.qdq import (
    Layer,
    insert_qdq,
    qdq_model,
    quantizable_layers,
    quantized_activations,
    quantized_inputs,
    resolve_layers,
    tensorrt_qdq_problems,
)
from tests.classifier_graphs import write_classifier

# fc.weight (Gemm, transB=1, so one scale per row): row 1 is all zeros (scale 1), row 0 needs rounding.
FC_WEIGHT = np.array([[1.0, -2.0, 0.5], [0.0, 0.0, 0.0], [0.254, 0.127, -0.0635], [-3.0, 1.5, 2.0]], np.float32)
AMAX = {"input": 2.54, "x1": 1.27, "x2": 0.0, "h_relu": 12.7, "short": 0.635, "flat": 254.0}


def _conv(name: str, inputs: list[str], output: str, kernel: int = 3):
    return helper.make_node("Conv", inputs, [output], name=name, pads=[kernel // 2] * 4)


def residual_model(add2_inputs: tuple[str, str] = ("short", "main")) -> onnx.ModelProto:
    """input [N,1,4,4] -> stem conv -> identity block (Add of a conv and its input) -> downsampling block
    (3x3 main branch of two convs, 1x1 shortcut conv) -> Add of a constant -> pool -> Gemm (transB=1)."""
    rng = np.random.default_rng(0)
    weights = {
        "stem.weight": np.array([[[[0.5, -1.0, 0.25]] * 3], [[[0.0, 0.125, -0.0625]] * 3]], np.float32),
        "stem.bias": np.array([0.1, -0.1], np.float32),
        "b1.weight": rng.standard_normal((2, 2, 3, 3)).astype(np.float32),
        "b2a.weight": rng.standard_normal((3, 2, 3, 3)).astype(np.float32),
        "b2b.weight": rng.standard_normal((3, 3, 3, 3)).astype(np.float32),
        "down.weight": rng.standard_normal((3, 2, 1, 1)).astype(np.float32),
        "offset": np.full((1, 3, 1, 1), 0.5, np.float32),
        "fc.weight": FC_WEIGHT,
        "fc.bias": np.array([0.0, 1.0, 2.0, 3.0], np.float32),
    }
    nodes = [
        _conv("stem", ["input", "stem.weight", "stem.bias"], "stem_out"),
        helper.make_node("Relu", ["stem_out"], ["x1"], name="stem_relu"),
        _conv("b1", ["x1", "b1.weight"], "b1_out"),
        helper.make_node("Add", ["b1_out", "x1"], ["s1"], name="add1"),
        helper.make_node("Relu", ["s1"], ["x2"], name="relu1"),
        _conv("b2a", ["x2", "b2a.weight"], "h"),
        helper.make_node("Relu", ["h"], ["h_relu"], name="b2a_relu"),
        _conv("b2b", ["h_relu", "b2b.weight"], "main"),
        _conv("down", ["x2", "down.weight"], "short", kernel=1),
        helper.make_node("Add", list(add2_inputs), ["s2"], name="add2"),
        helper.make_node("Relu", ["s2"], ["x3"], name="relu2"),
        helper.make_node("Add", ["x3", "offset"], ["x4"], name="bias_add"),
        helper.make_node("GlobalAveragePool", ["x4"], ["pooled"], name="pool"),
        helper.make_node("Flatten", ["pooled"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "residual",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 4, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 4])],
                              [numpy_helper.from_array(v, k) for k, v in weights.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tests")
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def parts(model):
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    return initializers, producers


def attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def run(model, images: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images})[0]


# --- which layers and tensors -------------------------------------------------------------------------------

def test_quantizable_layers_in_graph_order_named_after_their_weight():
    model = residual_model()
    assert quantizable_layers(model) == [
        Layer("stem", "stem", "Conv", 0), Layer("b1", "b1", "Conv", 1), Layer("b2a", "b2a", "Conv", 2),
        Layer("b2b", "b2b", "Conv", 3), Layer("down", "down", "Conv", 4), Layer("fc", "fc", "Gemm", 5)]
    model.graph.node[2].name = "conv_b1"
    assert quantizable_layers(model)[1] == Layer("conv_b1", "b1", "Conv", 1)
    model.graph.initializer[2].name = "b1_w"  # without `.weight`: the whole initializer name
    model.graph.node[2].input[1] = "b1_w"
    assert quantizable_layers(model)[1] == Layer("conv_b1", "b1_w", "Conv", 1)
    model.graph.node[2].input[1] = "made"  # a weight that is not an initializer: the node's name
    model.graph.node.insert(0, helper.make_node("Identity", ["b1_w"], ["made"], name="make"))
    assert quantizable_layers(model)[1] == Layer("conv_b1", "conv_b1", "Conv", 1)


def test_resolve_layers_by_name_node_first_last_without_duplicates():
    model = residual_model()
    model.graph.node[0].name = "/stem/Conv"
    assert resolve_layers(model, ["stem", "last", "/stem/Conv", "first", "b2b", "fc"]) == ["/stem/Conv", "fc", "b2b"]
    assert resolve_layers(model, []) == []
    with pytest.raises(ArtifactError) as refused:
        resolve_layers(model, ["b2a", "nope"])
    assert str(refused.value) == ("no quantizable layer 'nope'; give a Conv/Gemm by name (stem, b1, b2a, b2b, ...), "
                                  "its ONNX node name, 'first' or 'last'")


EDGES = {0: [0], 2: [0], 3: [1], 5: [0], 7: [0], 8: [0], 9: [0], 14: [0]}


def test_quantized_inputs_are_layer_inputs_and_the_identity_branch_of_each_add():
    assert quantized_inputs(residual_model()) == EDGES
    assert quantized_activations(residual_model()) == ["input", "x1", "x2", "h_relu", "short", "flat"]


def test_the_shortcut_conv_is_the_identity_whatever_the_add_order():
    swapped = residual_model(("main", "short"))
    assert quantized_inputs(swapped) == {**EDGES, 9: [1]}
    assert quantized_activations(swapped) == ["input", "x1", "x2", "h_relu", "short", "flat"]
    model = residual_model()
    model.graph.node[3].input[:] = ["x1", "b1_out"]
    assert quantized_inputs(model)[3] == [0]


def test_an_add_of_two_plain_tensors_quantizes_its_second_and_one_of_graph_inputs_counts():
    model = residual_model()
    model.graph.node[3].input[:] = ["x1", "input"]  # neither from a conv: the second is the "identity"
    assert quantized_inputs(model)[3] == [1]
    model.graph.node[3].input[:] = ["input", "x1"]  # main branch from outside the graph's nodes
    assert quantized_inputs(model, ["stem", "b1"])[3] == [1]


def test_two_convs_with_equally_shared_inputs_quantize_the_second():
    for order in (("short", "main"), ("main", "short")):
        model = residual_model(order)
        model.graph.node[7].input[0] = "x2"  # b2b now reads x2 like the shortcut: a tie
        assert quantized_inputs(model)[9] == [1]


@pytest.mark.parametrize("excluded, gone", [
    (["b1"], [2, 3]),      # the identity Add fuses into b1: no INT8 there either
    (["b2b"], [7, 9]),     # the downsampling Add fuses into its main conv
    (["down"], [8]),       # the shortcut is not the Add's main branch: the Add stays INT8
    (["stem", "fc"], [0, 14]),
])
def test_excluded_layers_lose_their_input_and_fused_add(excluded, gone):
    assert quantized_inputs(residual_model(), excluded) == {k: v for k, v in EDGES.items() if k not in gone}
    assert quantized_inputs(residual_model(("main", "short")), iter(excluded)).keys() == EDGES.keys() - set(gone)


def test_quantized_activations_of_excluded_layers():
    assert quantized_activations(residual_model(), ["b2b"]) == ["input", "x1", "x2", "flat"]
    assert quantized_activations(residual_model(), ("stem", "b1")) == ["x2", "h_relu", "short", "flat"]


# --- scales, zero points, axes -----------------------------------------------------------------------------

def test_weight_scales_are_per_output_channel_with_exact_values():
    model = qdq_model(residual_model(), AMAX)
    initializers, producers = parts(model)
    fc = next(n for n in model.graph.node if n.name == "fc")
    dequantize = producers[fc.input[1]]
    assert dequantize.name == "fc.weight_int8_DequantizeLinear" and dequantize.op_type == "DequantizeLinear"
    assert list(dequantize.input) == ["fc.weight_int8", "fc.weight_int8_scale", "fc.weight_int8_zero_point"]
    assert list(dequantize.output) == ["fc.weight_int8_dequantized"] and attributes(dequantize) == {"axis": 0}
    scale = initializers["fc.weight_int8_scale"]
    assert scale.dtype == np.float32 and scale.shape == (4,)
    np.testing.assert_array_equal(scale, np.array([2 / 127, 1.0, 0.254 / 127, 3 / 127], np.float32))
    weight = initializers["fc.weight_int8"]
    assert weight.dtype == np.int8
    np.testing.assert_array_equal(weight, [[64, -127, 32], [0, 0, 0], [127, 64, -32], [-127, 64, 85]])
    zero_point = initializers["fc.weight_int8_zero_point"]
    assert zero_point.dtype == np.int8 and zero_point.shape == (4,) and not zero_point.any()
    stem = initializers["stem.weight_int8_scale"]
    np.testing.assert_array_equal(stem, np.array([1 / 127, 0.125 / 127], np.float32))
    np.testing.assert_array_equal(initializers["stem.weight_int8"][:, 0, 0],
                                  [[64, -127, 32], [0, 127, -64]])
    for name in ("b1", "b2a", "b2b", "down"):
        original = next(numpy_helper.to_array(i) for i in residual_model().graph.initializer
                        if i.name == f"{name}.weight")
        expected = (np.abs(original).max(axis=(1, 2, 3)) / np.float32(127)).astype(np.float32)
        np.testing.assert_array_equal(initializers[f"{name}.weight_int8_scale"], expected)
        assert np.abs(initializers[f"{name}.weight_int8"]).max(axis=(1, 2, 3)).tolist() == [127] * len(expected)
    assert initializers["stem.bias"].dtype == np.float32 and "fc.bias" in initializers


def test_gemm_without_transposed_weights_is_quantized_per_column(tmp_path):
    model = onnx.load(str(write_classifier(tmp_path / "c.onnx", channels=2)))
    weight = numpy_helper.to_array(model.graph.initializer[0])
    out = qdq_model(model, {"flat": 1.0})
    initializers, producers = parts(out)
    assert attributes(producers["weight_int8_dequantized"]) == {"axis": 1}
    np.testing.assert_array_equal(initializers["weight_int8_scale"],
                                  (np.abs(weight).max(axis=0) / np.float32(127)).astype(np.float32))
    model.graph.node[-1].attribute.append(helper.make_attribute("transB", 0))
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weight, "weight"))
    assert attributes(parts(qdq_model(model, {"flat": 1.0}))[1]["weight_int8_dequantized"]) == {"axis": 1}


def test_per_tensor_weights_have_one_scale_and_no_axis():
    model = qdq_model(residual_model(), AMAX, per_channel=False)
    initializers, producers = parts(model)
    assert attributes(producers["fc.weight_int8_dequantized"]) == {}
    scale, zero_point = initializers["fc.weight_int8_scale"], initializers["fc.weight_int8_zero_point"]
    assert scale.shape == () and scale == np.float32(3 / 127)
    assert zero_point.shape == () and zero_point.dtype == np.int8 and zero_point == 0
    np.testing.assert_array_equal(initializers["fc.weight_int8"],
                                  [[42, -85, 21], [0, 0, 0], [11, 5, -3], [-127, 64, 85]])
    assert initializers["stem.weight_int8_scale"] == np.float32(1 / 127)


def test_activation_qdq_pairs_have_the_calibrated_scale_and_zero_point_0():
    model = qdq_model(residual_model(), AMAX)
    initializers, producers = parts(model)
    for tensor, amax in AMAX.items():
        quantize, dequantize = producers[f"{tensor}_qdq_quantized"], producers[f"{tensor}_qdq_dequantized"]
        assert (quantize.name, dequantize.name) == (f"{tensor}_qdq_QuantizeLinear", f"{tensor}_qdq_DequantizeLinear")
        assert list(quantize.input) == [tensor, f"{tensor}_qdq_scale", f"{tensor}_qdq_zero_point"]
        assert list(dequantize.input) == [f"{tensor}_qdq_quantized", f"{tensor}_qdq_scale", f"{tensor}_qdq_zero_point"]
        assert attributes(quantize) == {} and attributes(dequantize) == {}
        scale, zero_point = initializers[f"{tensor}_qdq_scale"], initializers[f"{tensor}_qdq_zero_point"]
        assert scale.shape == () and scale.dtype == np.float32
        assert scale == np.float32((amax or 1e-8) / 127)
        assert zero_point.shape == () and zero_point.dtype == np.int8 and zero_point == 0
    assert initializers["x2_qdq_scale"] == np.float32(1e-8 / 127)
    assert initializers["input_qdq_scale"] == np.float32(0.02)
    consumers = {name: [n.name for n in model.graph.node if name in n.input] for name in
                 ("x1", "x1_qdq_dequantized", "x2_qdq_dequantized", "short", "short_qdq_dequantized", "main")}
    assert consumers == {"x1": ["x1_qdq_QuantizeLinear"], "x1_qdq_dequantized": ["b1", "add1"],
                         "x2_qdq_dequantized": ["b2a", "down"], "short": ["short_qdq_QuantizeLinear"],
                         "short_qdq_dequantized": ["add2"], "main": ["add2"]}


NODE_ORDER = [
    "input_qdq_QuantizeLinear", "input_qdq_DequantizeLinear",
    "stem.weight_int8_DequantizeLinear", "stem", "stem_relu", "x1_qdq_QuantizeLinear", "x1_qdq_DequantizeLinear",
    "b1.weight_int8_DequantizeLinear", "b1", "add1", "relu1", "x2_qdq_QuantizeLinear", "x2_qdq_DequantizeLinear",
    "b2a.weight_int8_DequantizeLinear", "b2a", "b2a_relu", "h_relu_qdq_QuantizeLinear", "h_relu_qdq_DequantizeLinear",
    "b2b.weight_int8_DequantizeLinear", "b2b", "down.weight_int8_DequantizeLinear", "down",
    "short_qdq_QuantizeLinear", "short_qdq_DequantizeLinear", "add2", "relu2", "bias_add", "pool", "flatten",
    "flat_qdq_QuantizeLinear", "flat_qdq_DequantizeLinear", "fc.weight_int8_DequantizeLinear", "fc",
]


def test_nodes_are_in_topological_order_and_unused_fp32_weights_dropped():
    source = residual_model()
    before = source.SerializeToString()
    model = qdq_model(source, AMAX)
    assert [n.name for n in model.graph.node] == NODE_ORDER
    assert source.SerializeToString() == before  # the input model is not changed
    names = [i.name for i in model.graph.initializer]
    assert len(names) == len(set(names))
    assert set(names) == {"stem.bias", "offset", "fc.bias"} | {
        f"{w}.weight_int8{s}" for w in ("stem", "b1", "b2a", "b2b", "down", "fc") for s in ("", "_scale", "_zero_point")
    } | {f"{t}_qdq_{s}" for t in AMAX for s in ("scale", "zero_point")}


def test_the_qdq_graph_computes_the_fp32_graph_within_int8_error():
    images = np.random.default_rng(1).uniform(-1, 1, (8, 1, 4, 4)).astype(np.float32)
    fp32 = run(residual_model(), images)
    amax = {"input": 1.0, "x1": 2.8, "x2": 6.3, "h_relu": 31.5, "short": 10.0, "flat": 48.2}  # their max |value|
    int8 = run(qdq_model(residual_model(), amax), images)
    assert 0 < np.abs(fp32 - int8).max() < 0.05 * np.abs(fp32).max()


# --- fallbacks ----------------------------------------------------------------------------------------------

def test_fp32_fallback_keeps_the_layer_float_and_its_fused_add_unquantized():
    model = qdq_model(residual_model(), {k: v for k, v in AMAX.items() if k != "h_relu"}, fallback={"b2b": "fp32"})
    initializers, producers = parts(model)
    b2b = next(n for n in model.graph.node if n.name == "b2b")
    assert list(b2b.input) == ["h_relu", "b2b.weight"] and b2b.output[0] == "main"
    assert initializers["b2b.weight"].dtype == np.float32 and "b2b.weight_int8" not in initializers
    add2 = next(n for n in model.graph.node if n.name == "add2")
    assert list(add2.input) == ["short", "main"]
    assert "h_relu_qdq_scale" not in initializers and "short_qdq_scale" not in initializers
    assert not any(n.op_type == "Cast" for n in model.graph.node)


def test_fp16_fallback_casts_around_the_layer_and_keeps_consumers_fp32():
    model = qdq_model(residual_model(), AMAX, fallback={"down": "fp16", "fc": "fp16"})
    initializers, producers = parts(model)
    names = [n.name for n in model.graph.node]
    assert names[names.index("down_CastToFp16"):names.index("add2")] == [
        "down_CastToFp16", "down", "down_CastToFp32", "short_qdq_QuantizeLinear", "short_qdq_DequantizeLinear"]
    assert names[-4:] == ["flatten", "fc_CastToFp16", "fc", "fc_CastToFp32"]  # fc reads flat in FP32
    down = model.graph.node[names.index("down")]
    assert list(down.input) == ["down_input_fp16", "down.weight_fp16"] and list(down.output) == ["short_fp16"]
    cast_in, cast_out = producers["down_input_fp16"], producers["short"]
    assert cast_in.op_type == cast_out.op_type == "Cast"
    assert list(cast_in.input) == ["x2"] and attributes(cast_in) == {"to": TensorProto.FLOAT16}
    assert list(cast_out.input) == ["short_fp16"] and attributes(cast_out) == {"to": TensorProto.FLOAT}
    fc = model.graph.node[names.index("fc")]
    assert list(fc.input) == ["fc_input_fp16", "fc.weight_fp16", "fc.bias_fp16"]
    assert list(producers["fc_input_fp16"].input) == ["flat"] and "flat_qdq_scale" not in initializers
    assert producers["logits"].name == "fc_CastToFp32"
    np.testing.assert_array_equal(initializers["fc.weight_fp16"], FC_WEIGHT.astype(np.float16))
    assert initializers["fc.bias_fp16"].dtype == np.float16 and initializers["down.weight_fp16"].dtype == np.float16
    assert not {"down.weight", "fc.weight", "fc.bias", "down.weight_int8", "fc.weight_int8"} & set(initializers)
    images = np.random.default_rng(2).uniform(-1, 1, (4, 1, 4, 4)).astype(np.float32)
    assert run(model, images).dtype == np.float32


def test_fallback_and_ranges_are_checked():
    with pytest.raises(ArtifactError) as refused:
        qdq_model(residual_model(), AMAX, fallback={"zz": "fp32", "relu1": "fp16", "fc": "fp32"}, source="m.onnx")
    assert str(refused.value) == "m.onnx: no Conv/Gemm node named relu1, zz"
    with pytest.raises(ArtifactError) as refused:
        qdq_model(residual_model(), AMAX, fallback={"fc": "int4", "b1": "bf16", "stem": "fp16"})
    assert str(refused.value) == "fallback precision must be one of ('fp16', 'fp32'), got bf16, int4"
    with pytest.raises(ArtifactError) as refused:
        qdq_model(residual_model(), {"flat": 1.0})
    assert str(refused.value) == "model: no calibration range for tensors input, x1, x2, h_relu, short"
    with pytest.raises(ArtifactError) as refused:  # six missing: the first five are named
        qdq_model(residual_model(), {})
    assert str(refused.value) == "model: no calibration range for tensors input, x1, x2, h_relu, short"
    with pytest.raises(ArtifactError, match=r"^model: no calibration range for tensors x1$"):
        qdq_model(residual_model(), {k: v for k, v in AMAX.items() if k != "x1"})
    assert qdq_model(residual_model(), {**AMAX, "x3": 1.0}, fallback=None) is not None


def test_a_weight_that_is_not_an_initializer_is_refused():
    model = residual_model()
    model.graph.node[2].input[1] = "made"
    model.graph.node.insert(0, helper.make_node("Identity", ["b1.weight"], ["made"], name="make"))
    with pytest.raises(ArtifactError) as refused:
        qdq_model(model, AMAX)
    assert str(refused.value) == "b1: weight made is not an initializer; TensorRT needs constant weights"


# --- the file and its summary -------------------------------------------------------------------------------

@pytest.mark.parametrize("per_channel", [True, False])
def test_insert_qdq_writes_the_graph_and_summarizes_it(tmp_path, monkeypatch, per_channel):
    source = tmp_path / "m.onnx"
    onnx.save(residual_model(), str(source))
    ticks = iter([10.0, 12.34567])
    monkeypatch.setattr(qdq, "time", type("Clock", (), {"perf_counter": staticmethod(lambda: next(ticks))}))
    out = tmp_path / "m.qdq.onnx"
    summary = insert_qdq(source, AMAX, out, fallback={"fc": "fp16"}, per_channel=per_channel)
    granularity = "per-channel (axis 0)" if per_channel else "per-tensor"
    assert summary == {
        "onnx": str(out), "sha256": sha256_file(out), "source_onnx_sha256": sha256_file(source),
        "quantized_activations": 5, "quantized_weights": 5, "fallback_layers": {"fc": "fp16"},
        "scheme": f"int8 symmetric; weights {granularity}, activations per-tensor; zero points 0", "seconds": 2.346,
    }
    written = onnx.load(str(out))
    assert written == qdq_model(residual_model(), AMAX, fallback={"fc": "fp16"}, per_channel=per_channel)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.onnx", "m.qdq.onnx"]


def test_insert_qdq_without_fallback_counts_every_layer(tmp_path):
    source = tmp_path / "m.onnx"
    onnx.save(residual_model(), str(source))
    summary = insert_qdq(source, AMAX, tmp_path / "q.onnx")
    assert (summary["quantized_weights"], summary["fallback_layers"]) == (6, {})
    assert summary["scheme"] == "int8 symmetric; weights per-channel (axis 0), activations per-tensor; zero points 0"
    assert onnx.load(str(tmp_path / "q.onnx")) == qdq_model(residual_model(), AMAX, per_channel=True)
    assert 0 <= summary["seconds"] < 60
    with pytest.raises(ArtifactError, match=r"m\.onnx: no calibration range for tensors flat$"):
        insert_qdq(source, {k: v for k, v in AMAX.items() if k != "flat"}, tmp_path / "r.onnx")
    assert not (tmp_path / "r.onnx").exists()


# --- TensorRT's parser rules --------------------------------------------------------------------------------

def test_a_tensorrt_style_qdq_graph_has_no_problems():
    assert tensorrt_qdq_problems(qdq_model(residual_model(), AMAX)) == []
    assert tensorrt_qdq_problems(residual_model()) == []


def _replace(model, name: str, value: np.ndarray) -> None:
    index = next(i for i, init in enumerate(model.graph.initializer) if init.name == name)
    model.graph.initializer[index].CopyFrom(numpy_helper.from_array(value, name))


def test_zero_points_must_be_int8_initializers_equal_to_0():
    model = qdq_model(residual_model(), AMAX)
    _replace(model, "x1_qdq_zero_point", np.array(3, np.int8))
    _replace(model, "x2_qdq_zero_point", np.array(0, np.uint8))
    _replace(model, "fc.weight_int8_zero_point", np.array([0, 0, 1, 0], np.int8))
    short_dq = next(n for n in model.graph.node if n.name == "short_qdq_DequantizeLinear")
    del short_dq.input[2]
    flat_q = next(n for n in model.graph.node if n.name == "flat_qdq_QuantizeLinear")
    flat_q.input[2] = "computed_zero_point"
    assert tensorrt_qdq_problems(model) == [
        f"{name}: zero point must be an int8 initializer equal to 0" for name in (
            "x1_qdq_QuantizeLinear", "x1_qdq_DequantizeLinear", "x2_qdq_QuantizeLinear", "x2_qdq_DequantizeLinear",
            "short_qdq_DequantizeLinear", "flat_qdq_QuantizeLinear", "fc.weight_int8_DequantizeLinear")]


def test_unsupported_ops_and_computed_weights_are_named():
    model = qdq_model(residual_model(), AMAX)
    nodes = list(model.graph.node)
    b1 = next(n for n in nodes if n.name == "b1")
    b1.input[1] = "b1_made"  # neither an initializer nor a DequantizeLinear
    b2a_dq = next(n for n in nodes if n.name == "b2a.weight_int8_DequantizeLinear")
    b2a_dq.input[0] = "b2a_computed"  # a DequantizeLinear, but not of an initializer
    fc = next(n for n in nodes if n.name == "fc")
    fc.input[1] = "flat_qdq_quantized"  # produced, but by a QuantizeLinear
    model.graph.node.extend([helper.make_node(op, ["x"], ["y"], name=f"bad_{op}") for op in
                             ("ConvInteger", "Relu", "QLinearConv", "DynamicQuantizeLinear", "MatMulInteger",
                              "QLinearMatMul")])
    assert tensorrt_qdq_problems(model) == [
        *(f"bad_{op}: {op} is not supported by TensorRT's ONNX parser"
          for op in ("ConvInteger", "QLinearConv", "DynamicQuantizeLinear", "MatMulInteger", "QLinearMatMul")),
        "b1: weight b1_made is neither an initializer nor the Q/DQ of one",
        "b2a: weight b2a.weight_int8_dequantized is neither an initializer nor the Q/DQ of one",
        "fc: weight flat_qdq_quantized is neither an initializer nor the Q/DQ of one",
    ]
