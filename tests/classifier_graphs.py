"""Tiny ONNX classifiers built with onnx.helper (no torch, milliseconds): the project's I/O contract
and the graphs of other models that commands must refuse."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def write_classifier(path: Path, *, channels: int = 1, size: int = 28, classes: int = 10, batch: str | int = "N",
                     input_type: int = TensorProto.FLOAT, zero_point: np.ndarray | None = None) -> Path:
    """input [batch, channels, size, size] -> GlobalAveragePool -> Flatten -> Gemm -> logits [batch, classes].

    With `zero_point` (a uint8 or int8 scalar) the input goes through QuantizeLinear/DequantizeLinear
    first: uint8 is the ONNX Runtime CPU INT8 scheme, int8 TensorRT's symmetric one.
    """
    rng = np.random.default_rng(0)
    weights = rng.standard_normal((channels, classes)).astype(np.float32)
    initializers = [numpy_helper.from_array(weights, "weight"),
                    numpy_helper.from_array(np.zeros(classes, np.float32), "bias")]
    nodes, source = [], "input"
    if input_type != TensorProto.FLOAT:
        nodes.append(helper.make_node("Cast", ["input"], ["input_fp32"], to=TensorProto.FLOAT))
        source = "input_fp32"
    if zero_point is not None:
        initializers += [numpy_helper.from_array(np.array(0.02, np.float32), "scale"),
                         numpy_helper.from_array(zero_point, "zero_point")]
        nodes += [helper.make_node("QuantizeLinear", [source, "scale", "zero_point"], ["quantized"]),
                  helper.make_node("DequantizeLinear", ["quantized", "scale", "zero_point"], ["dequantized"])]
        source = "dequantized"
    nodes += [helper.make_node("GlobalAveragePool", [source], ["pooled"]),
              helper.make_node("Flatten", ["pooled"], ["flat"]),
              helper.make_node("Gemm", ["flat", "weight", "bias"], ["logits"])]
    graph = helper.make_graph(nodes, "classifier",
                              [helper.make_tensor_value_info("input", input_type, [batch, channels, size, size])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])],
                              initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], producer_name="tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
