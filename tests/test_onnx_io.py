"""ONNX I/O contract and graph kinds, on tiny graphs built here and on the exported model."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from resnet_deploy.errors import ArtifactError
from resnet_deploy.onnx_io import (GRAPH_PRECISION, PRECISIONS, check_io_contract, graph_precision, load_onnx,
                                   precision_of)
from resnet_deploy.quantize.fp16 import convert_to_fp16
from tests.classifier_graphs import write_classifier


def test_the_exported_model_meets_the_contract(untrained_onnx):
    check_io_contract(load_onnx(untrained_onnx), untrained_onnx)
    assert precision_of(load_onnx(untrained_onnx)) == "fp32"


@pytest.mark.parametrize("kwargs, found", [
    ({"channels": 3, "size": 224}, "inputs 'input' [N, 3, 224, 224] float32"),
    ({"classes": 1000}, "outputs 'logits' [N, 1000] float32"),
    ({"batch": 1}, "inputs 'input' [1, 1, 28, 28] float32"),
    ({"input_type": TensorProto.FLOAT16}, "inputs 'input' [N, 1, 28, 28] float16"),
])
def test_other_models_are_refused_with_expected_and_found(tmp_path, kwargs, found):
    path = write_classifier(tmp_path / "other.onnx", **kwargs)
    with pytest.raises(ArtifactError) as refused:
        check_io_contract(load_onnx(path), path)
    message = str(refused.value)
    assert message.startswith(f"{path}: not a Fashion-MNIST classifier: expected one input [N, 1, 28, 28] float32 "
                              "and one output [N, 10] float32, N a dynamic batch; found ")
    assert found in message


def test_graph_kinds_and_their_precision(tmp_path):
    fp32 = write_classifier(tmp_path / "m.onnx")
    convert_to_fp16(fp32, tmp_path / "m.fp16.onnx")
    kinds = {
        "fp32": fp32, "fp16": tmp_path / "m.fp16.onnx",
        "int8-cpu": write_classifier(tmp_path / "cpu.onnx", zero_point=np.array(128, np.uint8)),
        "int8-qdq": write_classifier(tmp_path / "qdq.onnx", zero_point=np.array(0, np.int8)),
    }
    for kind, path in kinds.items():
        model = load_onnx(path)
        check_io_contract(model, path)
        assert precision_of(model) == kind and graph_precision(model) == GRAPH_PRECISION[kind]
    assert set(GRAPH_PRECISION.values()) == set(PRECISIONS)


def test_quantize_without_zero_point_is_uint8(tmp_path):
    model = load_onnx(write_classifier(tmp_path / "cpu.onnx", zero_point=np.array(128, np.uint8)))
    quantize = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    del quantize.input[2]
    dequantize = next(n for n in model.graph.node if n.op_type == "DequantizeLinear")
    del dequantize.input[2]
    onnx.checker.check_model(model)
    assert precision_of(model) == "int8-cpu"
