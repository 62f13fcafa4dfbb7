"""Insert explicit Q/DQ nodes the way TensorRT wants them for residual networks.

- Weights of Conv and Gemm: per-output-channel symmetric int8 initializers followed by a
  DequantizeLinear (axis 0); biases stay FP32.
- Activations: one per-tensor symmetric QuantizeLinear/DequantizeLinear pair (zero point 0, int8)
  per quantized tensor, shared by all its consumers: the inputs of every Conv and Gemm, and the
  residual input of each Add (the one TensorRT does not fuse as the conv's output), so the Add
  fuses into the preceding convolution in INT8.
- Everything else (pooling, reshape, the logits) stays FP32, so the graph runs strongly typed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_path, sha256_file

INT8_MAX = 127.0


def _residual_input(add_node, producers: dict[str, Any], consumers: dict[str, int]) -> str:
    """The input of a residual Add to quantize: the identity branch, not the conv TensorRT fuses the Add into.

    With one conv input, the other one is the identity. When both are convs (a downsampling block),
    the shortcut conv reads the block input, which the main branch's first conv also reads; the
    main branch's last conv reads a tensor nothing else consumes.
    """
    def shortcut_score(name: str) -> int:
        node = producers.get(name)
        return consumers.get(node.input[0], 0) if node is not None and node.op_type == "Conv" else 1 << 30

    first, second = add_node.input[:2]
    return first if shortcut_score(first) > shortcut_score(second) else second


def quantized_activations(model) -> list[str]:
    """Tensor names that get an activation Q/DQ pair, in graph order."""
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    names = []
    for node in model.graph.node:
        if node.op_type in ("Conv", "Gemm"):
            names.append(node.input[0])
        elif node.op_type == "Add" and len(node.input) == 2 and not constants.intersection(node.input):
            names.append(_residual_input(node, producers, consumers))
    return list(dict.fromkeys(names))


def _weight_qdq(model, node, axis: int) -> list:
    """Replace the weight input of `node` with int8 per-channel initializer + DequantizeLinear."""
    import onnx
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    weight_name = node.input[1]
    if weight_name not in initializers:
        raise ArtifactError(f"{node.name}: weight {weight_name} is not an initializer; TensorRT needs constant weights")
    weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float32)
    if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
        axis = 1
    reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
    amax = np.abs(weight).max(axis=reduce_axes)
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    shape = [1] * weight.ndim
    shape[axis] = -1
    quantized = np.clip(np.round(weight / scale.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
    prefix = f"{weight_name}_int8"
    model.graph.initializer.extend([
        numpy_helper.from_array(quantized, prefix),
        numpy_helper.from_array(scale, f"{prefix}_scale"),
        numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{prefix}_zero_point"),
    ])
    dequantized = f"{prefix}_dequantized"
    node.input[1] = dequantized
    return [onnx.helper.make_node("DequantizeLinear", [prefix, f"{prefix}_scale", f"{prefix}_zero_point"],
                                  [dequantized], name=f"{prefix}_DequantizeLinear", axis=axis)]


def _activation_qdq(model, tensor: str, amax: float) -> tuple[list, str]:
    import onnx
    from onnx import numpy_helper

    scale = np.float32(max(amax, 1e-8) / INT8_MAX)
    prefix = f"{tensor}_qdq"
    model.graph.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), f"{prefix}_scale"),
                                    numpy_helper.from_array(np.array(0, np.int8), f"{prefix}_zero_point")])
    quantized, dequantized = f"{prefix}_quantized", f"{prefix}_dequantized"
    nodes = [
        onnx.helper.make_node("QuantizeLinear", [tensor, f"{prefix}_scale", f"{prefix}_zero_point"],
                              [quantized], name=f"{prefix}_QuantizeLinear"),
        onnx.helper.make_node("DequantizeLinear", [quantized, f"{prefix}_scale", f"{prefix}_zero_point"],
                              [dequantized], name=f"{prefix}_DequantizeLinear"),
    ]
    return nodes, dequantized


def insert_qdq(fp32_onnx: str | Path, amax: dict[str, float], out_path: str | Path) -> dict[str, Any]:
    """Write the Q/DQ graph of `fp32_onnx` quantized with activation ranges `amax` to `out_path`."""
    import onnx

    from resnet_deploy.onnx_io import load_onnx

    started = time.perf_counter()
    model = load_onnx(fp32_onnx)
    targets = quantized_activations(model)
    missing = [t for t in targets if t not in amax]
    if missing:
        raise ArtifactError(f"{fp32_onnx}: no calibration range for tensors {', '.join(missing[:5])}")
    rewired: dict[str, str] = {}
    new_nodes: dict[str, list] = {}
    for tensor in targets:
        nodes, dequantized = _activation_qdq(model, tensor, amax[tensor])
        rewired[tensor] = dequantized
        new_nodes[tensor] = nodes
    graph_inputs = {v.name for v in model.graph.input}
    ordered = [n for t in targets if t in graph_inputs for n in new_nodes[t]]
    for node in model.graph.node:
        ordered.append(node)
        before = []
        if node.op_type in ("Conv", "Gemm"):
            before = _weight_qdq(model, node, axis=0)
        if node.op_type in ("Conv", "Gemm", "Add"):
            for index, name in enumerate(node.input):
                if name in rewired:
                    node.input[index] = rewired[name]
        if before:
            ordered.insert(len(ordered) - 1, before[0])
        ordered.extend(n for out in node.output if out in new_nodes for n in new_nodes[out])
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    _drop_unused_initializers(model)
    onnx.checker.check_model(model)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    return {
        "onnx": str(out_path), "sha256": sha256_file(out_path), "source_onnx_sha256": sha256_file(fp32_onnx),
        "quantized_activations": len(targets), "quantized_weights": sum(n.op_type in ("Conv", "Gemm") for n in model.graph.node),
        "scheme": "int8 symmetric; weights per-channel (axis 0), activations per-tensor; zero points 0",
        "seconds": round(time.perf_counter() - started, 3),
    }


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
