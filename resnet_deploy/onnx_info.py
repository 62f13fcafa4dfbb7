"""What an ONNX file holds: I/O, opset, precision (fp32, fp16, int8 Q/DQ, CPU int8) and node counts."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from resnet_deploy.fileio import sha256_file
from resnet_deploy.onnx_io import io_signature, load_onnx, precision_of


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """A JSON-able summary of the ONNX file at `path` (raises `ArtifactError` if it is invalid)."""
    model = load_onnx(path)
    ops = Counter(node.op_type for node in model.graph.node)
    inputs, outputs = io_signature(model)
    opsets = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return {
        "path": str(path),
        "sha256": sha256_file(path),
        "opset": max(opsets, default=None),
        "producer": f"{model.producer_name} {model.producer_version}".strip(),
        "precision": precision_of(model),
        "inputs": inputs,
        "outputs": outputs,
        "node_count": sum(ops.values()),
        "quantize_linear": ops["QuantizeLinear"],
        "dequantize_linear": ops["DequantizeLinear"],
        "op_counts": dict(sorted(ops.items())),
    }
