"""ONNX Runtime CPU INT8: uint8 activations, int8 per-channel weights, calibrated on train images."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper

from resnet_deploy import data
from resnet_deploy.fileio import sha256_file
from resnet_deploy.parity import INT8_MAX_DROP_PP
from resnet_deploy.quantize.cpu_int8 import ImageReader, quantize_for_cpu


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_dir, untrained_onnx):
    quantized = tmp_path_factory.mktemp("cpu-int8") / "tiny.int8-cpu.onnx"
    summary = quantize_for_cpu(untrained_onnx, quantized, data.calibration_images(64, data_dir=data_dir))
    return untrained_onnx, quantized, summary


def logits(path, images: np.ndarray) -> np.ndarray:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]


def test_reader_yields_every_image_once_in_batches():
    images = np.arange(10 * 784, dtype=np.float32).reshape(10, 1, 28, 28)
    reader = ImageReader("input", images, batch_size=4)
    batches = list(iter(reader.get_next, None))
    assert [len(b["input"]) for b in batches] == [4, 4, 2]
    assert np.array_equal(np.concatenate([b["input"] for b in batches]), images)


def test_graph_is_uint8_activations_and_int8_per_channel_weights(tiny):
    fp32_path, path, summary = tiny
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    quantize = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    assert quantize and all(initializers[n.input[2]].dtype == np.uint8 for n in quantize)
    weights = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in initializers
               and initializers[n.input[0]].ndim == 4]
    assert len(weights) == 20
    for node in weights:
        assert initializers[node.input[0]].dtype == np.int8 and not initializers[node.input[2]].any()
        assert initializers[node.input[1]].shape == (initializers[node.input[0]].shape[0],)
    assert summary["source_onnx_sha256"] == sha256_file(fp32_path) and summary["images"] == 64
    assert summary["sha256"] == sha256_file(path)


def test_cpu_int8_tracks_fp32_on_real_images(tiny, data_dir):
    images = data.normalize(data.load_fashion_mnist(data_dir).val_images[:500])
    fp32, int8 = logits(tiny[0], images), logits(tiny[1], images)
    assert np.abs(fp32 - int8).max() < 0.15 * np.abs(fp32).max()
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.95


@pytest.mark.slow
def test_cpu_int8_keeps_validation_top1_of_the_trained_model(trained_onnx, data_dir, tmp_path):
    dataset = data.load_fashion_mnist(data_dir)
    images, labels = data.normalize(dataset.val_images[:2000]), dataset.val_labels[:2000]
    quantize_for_cpu(trained_onnx, tmp_path / "int8-cpu.onnx", data.calibration_images(256, data_dir=data_dir))
    fp32 = (logits(trained_onnx, images).argmax(1) == labels).mean()
    int8 = (logits(tmp_path / "int8-cpu.onnx", images).argmax(1) == labels).mean()
    assert fp32 > 0.6 and int8 >= fp32 - INT8_MAX_DROP_PP / 100
