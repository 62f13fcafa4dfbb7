"""What an ONNX file holds: I/O, opset, precision (fp32, fp16, int8 Q/DQ) and node counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from resnet_deploy.fileio import sha256_file


def _shape(value_info) -> list[int | str]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_param or d.dim_value if (d.dim_param or d.dim_value) else "?" for d in dims]


def _dtype(value_info) -> str:
    import onnx

    return onnx.helper.tensor_dtype_to_np_dtype(value_info.type.tensor_type.elem_type).name


def precision_of(model) -> str:
    """'int8-qdq' with Q/DQ nodes, 'fp16' with float16 weights, else 'fp32'."""
    import onnx

    ops = Counter(node.op_type for node in model.graph.node)
    if ops["QuantizeLinear"] or ops["DequantizeLinear"]:
        return "int8-qdq"
    if any(init.data_type == onnx.TensorProto.FLOAT16 for init in model.graph.initializer):
        return "fp16"
    return "fp32"


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """A JSON-able summary of the ONNX file at `path` (raises `ArtifactError` if it is invalid)."""
    from resnet_deploy.export import load_onnx

    model = load_onnx(path)
    ops = Counter(node.op_type for node in model.graph.node)
    initializer_names = {init.name for init in model.graph.initializer}
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "precision": precision_of(model),
        "inputs": [{"name": v.name, "dtype": _dtype(v), "shape": _shape(v)}
                   for v in model.graph.input if v.name not in initializer_names],
        "outputs": [{"name": v.name, "dtype": _dtype(v), "shape": _shape(v)} for v in model.graph.output],
        "node_count": sum(ops.values()),
        "quantize_linear": ops["QuantizeLinear"],
        "dequantize_linear": ops["DequantizeLinear"],
        "op_counts": dict(sorted(ops.items())),
    }
