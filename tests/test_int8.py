"""The INT8 stage on the trained model (the session's `build --precision int8`): every calibration
method within the INT8 gate on the validation split, the Q/DQ graph's structure, the cache."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from resnet_deploy import data
from resnet_deploy.onnx_info import describe_onnx
from resnet_deploy.parity import INT8_MAX_DROP_PP
from resnet_deploy.quantize.cache import SMALLEST_NORMAL, read_calibration_cache
from resnet_deploy.quantize.calibrate import METHODS, activation_tensors
from resnet_deploy.quantize.qdq import quantized_activations

pytestmark = pytest.mark.slow


def test_every_method_stays_within_the_int8_gate(int8_artifacts):
    _, _, summary = int8_artifacts
    fp32 = summary["methods"]["fp32"]["val_top1"]
    assert fp32 > 0.6
    for method in METHODS:
        assert summary["methods"][method]["val_top1"] >= fp32 - INT8_MAX_DROP_PP / 100, method
    assert summary["best_method"] in METHODS
    assert summary["calibration"] == {"split": "train", "count": 256, "seed": 0}


def test_qdq_graph_is_symmetric_int8_with_per_channel_weights(int8_artifacts):
    fp32_onnx, paths, _ = int8_artifacts
    model = onnx.load(str(paths.qdq("entropy")))
    onnx.checker.check_model(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_weights = [n for n in model.graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0] in initializers and initializers[n.input[0]].ndim >= 2]
    assert len(dq_weights) == describe_onnx(fp32_onnx)["op_counts"]["Conv"] + 1
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = initializers[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()
    conv_weight_scale = initializers[dq_weights[0].input[1]]
    assert conv_weight_scale.ndim == 1 and conv_weight_scale.size == initializers[dq_weights[0].input[0]].shape[0]
    activations = quantized_activations(onnx.load(str(fp32_onnx)))
    assert activations[0] == "input" and len(activations) == sum(n.op_type == "QuantizeLinear" for n in model.graph.node)


def test_cache_covers_every_activation_and_holds_the_input_range(int8_artifacts, data_dir):
    fp32_onnx, paths, _ = int8_artifacts
    header, scales = read_calibration_cache(paths.cache("max"))
    assert header.algorithm == "EntropyCalibration2" and header.version_code == 100300
    assert set(scales) == set(activation_tensors(onnx.load(str(fp32_onnx))))
    assert all(scale >= SMALLEST_NORMAL for scale in scales.values())
    # The max method's range of the input is the largest |value| of the 256 normalized calibration images.
    images = data.calibration_images(256, seed=0, data_dir=data_dir)
    assert scales["input"] == float(np.float32(float(np.abs(images).max()) / 127.0))
