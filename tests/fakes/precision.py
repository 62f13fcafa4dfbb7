"""The precision a fake engine was built with, applied to its ONNX graph before ONNX Runtime runs it.

TensorRT computes in the precision the build allowed; the fake engine runs the ONNX graph in ONNX
Runtime, so without this an FP16, INT8-calibrated or TF32 engine would compute in FP32 and engine
parity would compare FP32 with FP32. This module rewrites a copy of the graph, independently of the
project's quantizer (so a bug there is not mirrored here):
- FP16 (weakly typed with BuilderFlag.FP16, or a layer constrained to HALF): every float input of the
  layer (activations through a Cast to float16 and back, weights rounded to float16);
- INT8 from calibration scales (weakly typed, BuilderFlag.INT8 and a calibrator's cache): each Conv and
  Gemm whose input tensor has a scale gets that input fake-quantized with it (QuantizeLinear /
  DequantizeLinear, zero point 0) and its weights quantized per output channel (max |w| / 127), as
  TensorRT does for weights; a layer constrained to FLOAT or HALF (OBEY_PRECISION_CONSTRAINTS) is not;
- TF32 (BuilderFlag.TF32, TensorRT's default): the float inputs of Conv, Gemm and MatMul rounded to a
  10-bit mantissa (activations by Veltkamp splitting in float32 arithmetic, weights by bit rounding).
Graphs that carry their precision (an FP16 graph, a Q/DQ graph) already compute in it in ONNX Runtime.
"""

from __future__ import annotations

import struct

import numpy as np

COMPUTE_OPS = ("Conv", "Gemm", "MatMul")
FLOAT = 1  # onnx.TensorProto.FLOAT
SPLIT = float(2 ** 13 + 1)  # Veltkamp: keeps 24 - 13 = 11 significant bits, TF32's 10-bit mantissa


def cache_scales(scales: dict[str, str]) -> dict[str, float]:
    """A calibration cache's `name: <8 hex digits>` (big-endian float32 bits) as floats."""
    return {name: struct.unpack(">f", bytes.fromhex(value))[0] for name, value in scales.items()}


def tf32_round(values: np.ndarray) -> np.ndarray:
    """float32 values rounded to TF32 (10 mantissa bits, to nearest)."""
    bits = np.ascontiguousarray(values, np.float32).view(np.uint32)
    return ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)


def per_channel_int8(weights: np.ndarray) -> np.ndarray:
    """Weights quantized symmetrically per output channel (axis 0) and dequantized."""
    amax = np.abs(weights.reshape(len(weights), -1)).max(axis=1)
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32).reshape(-1, *[1] * (weights.ndim - 1))
    return (np.clip(np.round(weights / scale), -127, 127) * scale).astype(np.float32)


def layer_precision(node, fp16: bool, tf32: bool, scales: dict[str, float], constraints: dict[str, str]) -> str:
    """int8, fp16, tf32 or fp32: what TensorRT runs `node` in under these flags and constraints."""
    constraint = constraints.get(node.name)
    if node.op_type in ("Conv", "Gemm") and node.input[0] in scales and constraint is None:
        return "int8"
    if constraint == "HALF" or (fp16 and constraint != "FLOAT"):
        return "fp16"
    return "tf32" if tf32 and node.op_type in COMPUTE_OPS else "fp32"


class _Rewriter:
    """Adds the rounding nodes and rounded initializers, one per (tensor, precision)."""

    def __init__(self, model, scales: dict[str, float]):
        import onnx

        self.model, self.scales = model, scales
        inferred = onnx.shape_inference.infer_shapes(model)
        self.types = {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.input, *inferred.graph.value_info]}
        self.initializers = {init.name: init for init in model.graph.initializer}
        self.types.update({name: init.data_type for name, init in self.initializers.items()})
        self.nodes, self.done = [], {}

    def rounded(self, tensor: str, precision: str, weight: bool) -> str:
        if self.types.get(tensor) != FLOAT or precision == "fp32":
            return tensor
        key = (tensor, precision, weight and tensor in self.initializers)
        if key not in self.done:
            if tensor in self.initializers:
                self.done[key] = self._initializer(tensor, precision, weight)
            else:
                self.done[key] = self._activation(tensor, precision)
        return self.done[key]

    def _initializer(self, tensor: str, precision: str, weight: bool) -> str:
        from onnx import numpy_helper

        values = numpy_helper.to_array(self.initializers[tensor]).astype(np.float32)
        if precision == "int8":
            if not weight:
                return tensor  # biases stay in higher precision
            values = per_channel_int8(values)
        else:
            values = values.astype(np.float16).astype(np.float32) if precision == "fp16" else tf32_round(values)
        name = f"{tensor}__{precision}{'_w' if weight else ''}"
        self.model.graph.initializer.append(numpy_helper.from_array(values, name))
        return name

    def _activation(self, tensor: str, precision: str) -> str:
        from onnx import TensorProto, helper, numpy_helper

        out = f"{tensor}__{precision}"
        if precision == "fp16":
            self.nodes += [helper.make_node("Cast", [tensor], [out + "_h"], to=TensorProto.FLOAT16),
                           helper.make_node("Cast", [out + "_h"], [out], to=TensorProto.FLOAT)]
        elif precision == "tf32":
            self.model.graph.initializer.append(numpy_helper.from_array(np.array(SPLIT, np.float32), out + "_c"))
            self.nodes += [helper.make_node("Mul", [tensor, out + "_c"], [out + "_t"]),
                           helper.make_node("Sub", [out + "_t", tensor], [out + "_d"]),
                           helper.make_node("Sub", [out + "_t", out + "_d"], [out])]
        else:
            self.model.graph.initializer.extend([
                numpy_helper.from_array(np.array(self.scales[tensor], np.float32), out + "_s"),
                numpy_helper.from_array(np.array(0, np.int8), out + "_z")])
            self.nodes += [helper.make_node("QuantizeLinear", [tensor, out + "_s", out + "_z"], [out + "_q"]),
                           helper.make_node("DequantizeLinear", [out + "_q", out + "_s", out + "_z"], [out])]
        return out


def apply_build_precision(model, *, fp16: bool, tf32: bool, scales: dict[str, float] | None = None,
                          constraints: dict[str, str] | None = None):
    """A copy of the FP32 `model` computing in the build's precisions (see the module docstring)."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    rewriter = _Rewriter(model, scales or {})
    nodes = []
    for node in model.graph.node:
        precision = layer_precision(node, fp16, tf32, rewriter.scales, constraints or {})
        for index, name in enumerate(node.input):
            if name:
                node.input[index] = rewriter.rounded(name, precision, weight=index == 1)
        nodes += rewriter.nodes + [node]
        rewriter.nodes = []
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model
