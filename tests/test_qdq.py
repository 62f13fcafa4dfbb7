"""The TensorRT-style Q/DQ graph: structure TensorRT's fusions need, and accuracy on ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError
from resnet_deploy.parity import INT8_MAX_DROP_PP
from resnet_deploy.quantize.calibrate import calibrate_onnx
from resnet_deploy.quantize.qdq import insert_qdq, quantized_activations


@pytest.fixture(scope="module")
def amax(untrained_onnx, data_dir):
    return calibrate_onnx(untrained_onnx, data.calibration_images(64, data_dir=data_dir), "max")


@pytest.fixture(scope="module")
def qdq(untrained_onnx, amax, tmp_path_factory):
    path = tmp_path_factory.mktemp("qdq-out") / "tiny.int8.qdq.onnx"
    return path, insert_qdq(untrained_onnx, amax, path)


@pytest.fixture(scope="module")
def val_images(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    return data.normalize(dataset.val_images[:2000]), dataset.val_labels[:2000]


def graph_parts(path):
    model = onnx.load(str(path))
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    return model, initializers, producers


def logits(path, images: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]


def test_graph_is_valid_symmetric_int8_and_fp32_elsewhere(qdq):
    path, summary = qdq
    model, initializers, _ = graph_parts(path)
    onnx.checker.check_model(model, full_check=True)
    qdq_nodes = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert qdq_nodes
    for node in qdq_nodes:
        zero_point = initializers[node.input[2]]
        assert zero_point.dtype == np.int8 and not zero_point.any(), node.name
        assert initializers[node.input[1]].dtype == np.float32 and (initializers[node.input[1]] > 0).all()
    assert not any(i.dtype == np.float16 for i in initializers.values())
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*model.graph.input, *model.graph.output])
    assert summary["sha256"] and summary["quantized_activations"] == sum(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_weights_are_int8_per_output_channel(qdq, untrained_onnx):
    model, initializers, producers = graph_parts(qdq[0])
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(untrained_onnx)).graph.initializer}
    layers = [n for n in model.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(layers) == 21
    for node in layers:
        dequantize = producers[node.input[1]]
        weight, scale = initializers[dequantize.input[0]], initializers[dequantize.input[1]]
        axis = next(a.i for a in dequantize.attribute if a.name == "axis")
        assert dequantize.op_type == "DequantizeLinear" and weight.dtype == np.int8 and axis == 0
        assert scale.shape == (weight.shape[0],) and np.abs(weight).max() == 127
        assert initializers[node.input[2]].dtype == np.float32 if len(node.input) > 2 else True
        original = fp32[dequantize.input[0].removesuffix("_int8")]
        restored = weight.astype(np.float32) * scale.reshape((-1,) + (1,) * (weight.ndim - 1))
        assert np.abs(restored - original).max() <= scale.max() / 2 + 1e-7


def test_activations_feed_every_conv_and_gemm_through_qdq_with_the_calibrated_scale(qdq, amax):
    model, initializers, producers = graph_parts(qdq[0])
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm"):
            continue
        dequantize = producers[node.input[0]]
        quantize = producers[dequantize.input[0]]
        assert (dequantize.op_type, quantize.op_type) == ("DequantizeLinear", "QuantizeLinear")
        assert initializers[quantize.input[1]] == np.float32(amax[quantize.input[0]] / 127.0)


def test_residual_adds_quantize_the_identity_branch_and_fuse_into_the_main_conv(qdq):
    model, initializers, producers = graph_parts(qdq[0])
    adds = [n for n in model.graph.node if n.op_type == "Add"]
    assert len(adds) == 8
    shortcut_convs = 0
    for add in adds:
        kinds = sorted(producers[i].op_type for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], add.name
        main_conv = next(producers[i] for i in add.input if producers[i].op_type == "Conv")
        assert initializers[producers[main_conv.input[1]].input[0]].shape[2:] == (3, 3)
        identity = producers[producers[next(i for i in add.input if producers[i].op_type != "Conv")].input[0]].input[0]
        if producers[identity].op_type == "Conv":
            shortcut_convs += 1
            assert initializers[producers[producers[identity].input[1]].input[0]].shape[2:] == (1, 1)
        else:
            assert producers[identity].op_type == "Relu"
    assert shortcut_convs == 3
    assert producers["logits"].op_type == "Gemm"


def test_quantized_activations_pick_the_identity_branch_whatever_the_add_order(untrained_onnx):
    model = onnx.load(str(untrained_onnx))
    before = quantized_activations(model)
    for node in model.graph.node:
        if node.op_type == "Add":
            node.input[0], node.input[1] = node.input[1], node.input[0]
    assert quantized_activations(model) == before


def test_qdq_graph_tracks_fp32_on_real_images(qdq, untrained_onnx, val_images):
    images = val_images[0][:500]
    fp32, int8 = logits(untrained_onnx, images), logits(qdq[0], images)
    assert np.abs(fp32 - int8).max() < 0.15 * np.abs(fp32).max()
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.95


def test_missing_range_is_refused_and_nothing_written(untrained_onnx, amax, tmp_path):
    partial = {k: v for k, v in amax.items() if k != "input"}
    with pytest.raises(ArtifactError, match="no calibration range for tensors input"):
        insert_qdq(untrained_onnx, partial, tmp_path / "x.onnx")
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.slow
def test_entropy_qdq_keeps_validation_top1_of_the_trained_model(int8_artifacts, val_images):
    fp32_onnx, paths, _ = int8_artifacts
    images, labels = val_images
    fp32, int8 = logits(fp32_onnx, images), logits(paths.qdq("entropy"), images)
    fp32_top1, int8_top1 = (fp32.argmax(1) == labels).mean(), (int8.argmax(1) == labels).mean()
    assert fp32_top1 > 0.6 and int8_top1 >= fp32_top1 - INT8_MAX_DROP_PP / 100
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.97
