"""ONNX files without torch: load and check them, tell what a graph is, and check its I/O contract.

Every stage relies on one contract: one input `[N, 1, 28, 28]` float32 with a dynamic batch `N`
and one output, the logits `[N, 10]` float32. Commands that take an ONNX file check it once, up
front, and name what was expected and what was found.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_deploy.data import CLASS_NAMES
from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import require_file

PRECISIONS = ("fp32", "fp16", "int8")
# What `precision_of` calls a graph -> the precision builds and parity gates treat it as.
GRAPH_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8-qdq": "int8", "int8-cpu": "int8"}
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
IMAGE_SHAPE = (1, 28, 28)
CONTRACT = (
    f"one input [N, {', '.join(map(str, IMAGE_SHAPE))}] float32 and one output [N, {len(CLASS_NAMES)}] "
    "float32, N a dynamic batch"
)


def load_onnx(path: str | Path):
    """Load and check an ONNX file; a missing, corrupt or invalid file, or a Q/DQ graph with a bad
    scale or zero point (`check_qdq_parameters`), raises `ArtifactError`."""
    import onnx

    path = require_file(path, "ONNX file")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises DecodeError, ValidationError, ...
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ArtifactError(f"{path}: not a valid ONNX model: {first_line}") from exc
    check_qdq_parameters(model, path)
    return model


def _constants(model) -> Callable[[str], Any]:
    """name -> the numpy value of that initializer or Constant node output (None if neither)."""
    from onnx import numpy_helper

    tensors = {init.name: init for init in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            tensors[node.output[0]] = node.attribute[0].t
    return lambda name: numpy_helper.to_array(tensors[name]) if name in tensors else None


def _bad_scale(scale) -> str | None:
    """Why a Q/DQ scale tensor is unusable (as a calibration cache's scale is), or None."""
    import numpy as np

    if scale.dtype.kind != "f":
        return f"is of type {scale.dtype}, not a float"
    flat = scale.reshape(-1).astype(np.float64)
    bad = np.flatnonzero(~np.isfinite(flat) | (flat < float(np.finfo(scale.dtype).tiny)))
    if not bad.size:
        return None
    where = f" at index {bad[0]}" if flat.size > 1 else ""
    return (
        f"is {flat[bad[0]]:g}{where}, not a positive normal {scale.dtype} (zero, denormal, negative, infinite or NaN)"
    )


def _bad_zero_point(node, scale, zero_point, value: Callable[[str], Any]) -> str | None:
    """Why a zero point does not fit its scale (shape) or, for a DequantizeLinear, its input (type)."""
    if zero_point.shape != scale.shape:
        return f"has shape {list(zero_point.shape)}, its scale {list(scale.shape)}"
    data = value(node.input[0]) if node.op_type == "DequantizeLinear" else None
    if data is not None and data.dtype != zero_point.dtype:
        return f"is {zero_point.dtype}, the data it dequantizes {data.dtype}"
    return None


def check_qdq_parameters(model, path: str | Path) -> None:
    """Refuse QuantizeLinear/DequantizeLinear nodes whose constant scale is zero, denormal, negative
    or not finite (ONNX Runtime would then answer one class for every image), or whose zero point
    differs from its scale in shape or from the dequantized data in type; names file, node and value."""
    value = None
    for node in model.graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        value = value or _constants(model)
        scale = value(node.input[1])
        if scale is None:
            continue  # a scale computed in the graph has no value to check before it runs
        label = f"{path}: {node.op_type} node {node.name or node.output[0]!r}"
        problem = _bad_scale(scale)
        if problem:
            raise ArtifactError(f"{label}: scale {node.input[1]!r} {problem}")
        zero_point = value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        problem = None if zero_point is None else _bad_zero_point(node, scale, zero_point, value)
        if problem:
            raise ArtifactError(f"{label}: zero point {node.input[2]!r} {problem}")


def precision_of(model) -> str:
    """What the graph is: 'int8-qdq' (TensorRT-style symmetric int8 Q/DQ), 'int8-cpu' (uint8
    activations, for ONNX Runtime on CPUs), 'fp16' (float16 weights) or 'fp32'."""
    import onnx

    initializers = {init.name: init for init in model.graph.initializer}
    quantize = [node for node in model.graph.node if node.op_type == "QuantizeLinear"]
    if quantize:
        zero_points = [
            initializers.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None for node in quantize
        ]
        # A QuantizeLinear without a zero point produces uint8.
        unsigned = any(zp is None or zp.data_type == onnx.TensorProto.UINT8 for zp in zero_points)
        return "int8-cpu" if unsigned else "int8-qdq"
    if any(node.op_type == "DequantizeLinear" for node in model.graph.node):
        return "int8-qdq"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def graph_precision(model) -> str:
    """fp32, fp16 or int8: the precision a graph carries."""
    return GRAPH_PRECISION[precision_of(model)]


def _dims(value_info) -> list[int | str]:
    """Each dimension: its size, its symbolic name, or '?' when the graph does not say."""
    if not value_info.type.tensor_type.HasField("shape"):
        return []
    return [
        d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in value_info.type.tensor_type.shape.dim
    ]


def _dtype(value_info) -> str:
    import onnx

    elem_type = value_info.type.tensor_type.elem_type
    try:
        return onnx.helper.tensor_dtype_to_np_dtype(elem_type).name
    except (KeyError, ValueError, TypeError):
        return f"type {elem_type}"


def io_signature(model) -> tuple[list[dict], list[dict]]:
    """Graph inputs (initializers excluded) and outputs as {name, dtype, shape}."""
    initializers = {init.name for init in model.graph.initializer}
    describe = lambda v: {"name": v.name, "dtype": _dtype(v), "shape": _dims(v)}  # noqa: E731
    return (
        [describe(v) for v in model.graph.input if v.name not in initializers],
        [describe(v) for v in model.graph.output],
    )


def _is_batch(dim) -> bool:
    return isinstance(dim, str)


def _fits(tensor: dict, sample_shape: tuple[int, ...]) -> bool:
    shape = tensor["shape"]
    return (
        tensor["dtype"] == "float32"
        and len(shape) == 1 + len(sample_shape)
        and _is_batch(shape[0])
        and tuple(shape[1:]) == sample_shape
    )


def check_io_contract(model, path: str | Path) -> None:
    """Refuse a graph that is not a Fashion-MNIST classifier of this project, naming expected and found."""
    inputs, outputs = io_signature(model)
    if (
        len(inputs) == 1
        and len(outputs) == 1
        and _fits(inputs[0], IMAGE_SHAPE)
        and _fits(outputs[0], (len(CLASS_NAMES),))
    ):
        return

    def show(tensors: list[dict]) -> str:
        return (
            ", ".join(f"{t['name']!r} [{', '.join(map(str, t['shape'])) or '?'}] {t['dtype']}" for t in tensors)
            or "none"
        )

    raise ArtifactError(
        f"{path}: not a Fashion-MNIST classifier: expected {CONTRACT}; "
        f"found inputs {show(inputs)} and outputs {show(outputs)}"
    )


def load_classifier(path: str | Path):
    """`load_onnx` plus the I/O contract check."""
    model = load_onnx(path)
    check_io_contract(model, path)
    return model


def activation_bytes_per_image(model) -> list[int]:
    """Bytes of every float tensor of the graph for one image (shape inference, batch taken as 1)."""
    import numpy as np
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference is best effort; the graph itself was already checked
        inferred = model
    sizes = []
    for value in [*inferred.graph.value_info, *inferred.graph.output, *inferred.graph.input]:
        dims = _dims(value)
        if dims and all(isinstance(d, int) or _is_batch(d) for d in dims) and _dtype(value).startswith("float"):
            per_image = int(np.prod([d for d in dims[1:] if isinstance(d, int)], dtype=np.int64))
            sizes.append(per_image * np.dtype(_dtype(value)).itemsize)
    return sizes


def live_activation_bytes(path: str | Path) -> int:
    """Bytes one image keeps alive at once in a CPU runtime: the graph's three largest activations (a residual
    block holds its input, its conv output and its shortcut)."""
    return sum(sorted(activation_bytes_per_image(load_onnx(path)))[-3:])
