"""What TensorRT's ONNX parser refuses, for the fake parser (onnx-tensorrt docs/operators.md, onnxOpImporters.cpp).

- QLinearConv, QLinearMatMul, ConvInteger, MatMulInteger and DynamicQuantizeLinear have no importer.
- QuantizeLinear/DequantizeLinear: the zero point must be all zeros ("TensorRT only supports
  symmetric quantization"). onnx-tensorrt 10.x only warns on a uint8 zero point and reads it as
  int8, which silently changes the meaning of uint8 data; the project's facts file (shared
  tensorrt-api/README.md) has the parser require int8, and the fake does so too.
- Conv weights must be an initializer, a Constant, or the DequantizeLinear of one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

UNSUPPORTED_OPS = ("QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear")
QUANTIZED_ZERO_POINT_TYPES = {3: "INT8"}  # onnx.TensorProto.INT8 (FP8/INT4 also pass in TensorRT; unused here)


@dataclass(frozen=True)
class ParserIssue:
    node: int
    name: str
    operator: str
    code: str
    message: str


def _constants(model) -> dict[str, object]:
    """Initializers and Constant-node outputs by name."""
    constants = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                constants[node.output[0]] = value
    return constants


def _zero_point_issue(tensor) -> str | None:
    from onnx import numpy_helper

    if tensor.data_type not in QUANTIZED_ZERO_POINT_TYPES:
        from onnx import TensorProto

        kind = TensorProto.DataType.Name(tensor.data_type)
        return f"zero point of type {kind}: TensorRT quantizes to INT8 only (symmetric, zero point 0 of type int8)"
    if np.any(numpy_helper.to_array(tensor) != 0):
        return ("TensorRT only supports symmetric quantization. The zero point for the "
                "QuantizeLinear/DequantizeLinear operator must be all zeros.")
    return None


def parser_issues(model) -> list[ParserIssue]:
    """Everything in `model` that TensorRT's parser refuses, in node order."""
    constants = _constants(model)
    producers = {out: node for node in model.graph.node for out in node.output}
    issues = []
    for index, node in enumerate(model.graph.node):
        def issue(code: str, message: str) -> None:
            issues.append(ParserIssue(index, node.name, node.op_type, code, message))

        if node.op_type in UNSUPPORTED_OPS:
            issue("UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}")
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear") and len(node.input) > 2 and node.input[2]:
            zero_point = constants.get(node.input[2])
            if zero_point is None:
                issue("INVALID_NODE", "QuantizeLinear/DequantizeLinear operator must contains all zeros values.")
            elif (problem := _zero_point_issue(zero_point)) is not None:
                issue("INVALID_NODE", problem)
        elif node.op_type == "Conv" and not _is_weight(node.input[1], constants, producers):
            issue("UNSUPPORTED_NODE_INPUT", "Conv weights must be an initializer (or the DequantizeLinear of one)")
    return issues


def _is_weight(name: str, constants: dict, producers: dict) -> bool:
    if name in constants:
        return True
    producer = producers.get(name)
    return producer is not None and producer.op_type == "DequantizeLinear" and producer.input[0] in constants


def network_precision(model) -> str:
    """fp32, fp16 or int8: what a strongly typed network of this graph computes in."""
    if any(node.op_type == "QuantizeLinear" for node in model.graph.node):
        return "int8"
    if any(init.data_type == 10 for init in model.graph.initializer):  # onnx.TensorProto.FLOAT16
        return "fp16"
    return "fp32"
