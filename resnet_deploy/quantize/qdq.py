"""Insert explicit Q/DQ nodes the way TensorRT wants them for residual networks.

- Weights of Conv and Gemm: per-output-channel symmetric int8 initializers followed by a
  DequantizeLinear (axis 0); biases stay FP32. (`per_channel=False` gives one scale per tensor,
  which is what some older toolchains do; it is here to show why per-channel is the default.)
- Activations: one per-tensor symmetric QuantizeLinear/DequantizeLinear pair (zero point 0, int8)
  per quantized tensor, shared by all its quantized consumers: the inputs of every Conv and Gemm,
  and the residual input of each Add (the one TensorRT does not fuse as the conv's output), so the
  Add fuses into the preceding convolution in INT8.
- Everything else (pooling, reshape, the logits) stays FP32, so the graph runs strongly typed.

A layer (a Conv or Gemm) can be kept out of INT8 (`fallback={node name: "fp32" | "fp16"}`): it
loses its weight and input Q/DQ (other consumers of the same tensor keep theirs), an Add fused
into it loses its residual Q/DQ, and an FP16 layer gets FP16 weights between two Casts. The
result is still an ordinary Q/DQ graph that TensorRT builds strongly typed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_path, sha256_file

INT8_MAX = 127.0
LAYER_OPS = ("Conv", "Gemm")
FALLBACKS = ("fp16", "fp32")
# TensorRT's ONNX parser refuses these (see shared/tensorrt-api/README.md).
TENSORRT_UNSUPPORTED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}


@dataclass(frozen=True)
class Layer:
    """A quantizable layer: its ONNX node name (TensorRT names the layer after it) and a readable name."""

    node: str
    name: str
    op_type: str
    index: int


def quantizable_layers(model) -> list[Layer]:
    """Every Conv and Gemm in graph order; the readable name is its weight's name without `.weight`."""
    initializers = {init.name for init in model.graph.initializer}
    layers: list[Layer] = []
    for node in model.graph.node:
        if node.op_type in LAYER_OPS:
            weight = node.input[1]
            name = weight.removesuffix(".weight") if weight in initializers else node.name
            layers.append(Layer(node.name, name, node.op_type, len(layers)))
    return layers


def resolve_layers(model, names: Iterable[str]) -> list[str]:
    """Node names of the layers given by readable name, node name, `first` or `last`."""
    layers = quantizable_layers(model)
    by_name = {key: layer.node for layer in layers for key in (layer.name, layer.node)}
    by_name.update(first=layers[0].node, last=layers[-1].node)
    resolved = []
    for name in names:
        if name not in by_name:
            sample = ", ".join(layer.name for layer in layers[:4])
            raise ArtifactError(
                f"no quantizable layer {name!r}; give a Conv/Gemm by name ({sample}, ...), "
                "its ONNX node name, 'first' or 'last'"
            )
        resolved.append(by_name[name])
    return list(dict.fromkeys(resolved))


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


def quantized_inputs(model, excluded: Iterable[str] = ()) -> dict[int, list[int]]:
    """Node index -> the indices of its inputs that read through an activation Q/DQ pair.

    Conv/Gemm data inputs, and the identity input of each residual Add whose main branch ends in a
    layer that is not `excluded` (an Add fused into an excluded layer is not INT8 either).
    """
    excluded = set(excluded)
    producers = {out: node for node in model.graph.node for out in node.output}
    constants = {init.name for init in model.graph.initializer}
    consumers: dict[str, int] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    edges = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type in LAYER_OPS and node.name not in excluded:
            edges[index] = [0]
        elif node.op_type == "Add" and len(node.input) == 2 and not constants.intersection(node.input):
            residual = _residual_input(node, producers, consumers)
            main = node.input[1] if residual == node.input[0] else node.input[0]
            main_producer = producers.get(main)
            if main_producer is None or main_producer.name not in excluded:
                edges[index] = [list(node.input).index(residual)]
    return edges


def quantized_activations(model, excluded: Iterable[str] = ()) -> list[str]:
    """Tensor names that get an activation Q/DQ pair, in graph order."""
    nodes = model.graph.node
    edges = quantized_inputs(model, excluded)
    return list(dict.fromkeys(nodes[i].input[k] for i in sorted(edges) for k in edges[i]))


def _weight_qdq(model, node, per_channel: bool = True) -> list:
    """Replace the weight input of `node` with an int8 initializer + DequantizeLinear."""
    import onnx
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    weight_name = node.input[1]
    if weight_name not in initializers:
        raise ArtifactError(f"{node.name}: weight {weight_name} is not an initializer; TensorRT needs constant weights")
    weight = numpy_helper.to_array(initializers[weight_name]).astype(np.float32)
    axis = 0
    if node.op_type == "Gemm" and not any(a.name == "transB" and a.i == 1 for a in node.attribute):
        axis = 1
    if per_channel:
        reduce_axes = tuple(i for i in range(weight.ndim) if i != axis)
        amax = np.abs(weight).max(axis=reduce_axes)
        shape = [1] * weight.ndim
        shape[axis] = -1
    else:
        amax, shape = np.array(np.abs(weight).max()), []
    scale = np.where(amax > 0, amax / INT8_MAX, 1.0).astype(np.float32)
    quantized = np.clip(np.round(weight / scale.reshape(shape)), -INT8_MAX, INT8_MAX).astype(np.int8)
    prefix = f"{weight_name}_int8"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(quantized, prefix),
            numpy_helper.from_array(scale, f"{prefix}_scale"),
            numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{prefix}_zero_point"),
        ]
    )
    dequantized = f"{prefix}_dequantized"
    node.input[1] = dequantized
    attributes: dict[str, Any] = {"axis": axis} if per_channel else {}
    return [
        onnx.helper.make_node(
            "DequantizeLinear",
            [prefix, f"{prefix}_scale", f"{prefix}_zero_point"],
            [dequantized],
            name=f"{prefix}_DequantizeLinear",
            **attributes,
        )
    ]


def _activation_qdq(model, tensor: str, amax: float) -> tuple[list, str]:
    import onnx
    from onnx import numpy_helper

    scale = np.float32(max(amax, 1e-8) / INT8_MAX)
    prefix = f"{tensor}_qdq"
    model.graph.initializer.extend(
        [
            numpy_helper.from_array(np.array(scale, np.float32), f"{prefix}_scale"),
            numpy_helper.from_array(np.array(0, np.int8), f"{prefix}_zero_point"),
        ]
    )
    quantized, dequantized = f"{prefix}_quantized", f"{prefix}_dequantized"
    nodes = [
        onnx.helper.make_node(
            "QuantizeLinear",
            [tensor, f"{prefix}_scale", f"{prefix}_zero_point"],
            [quantized],
            name=f"{prefix}_QuantizeLinear",
        ),
        onnx.helper.make_node(
            "DequantizeLinear",
            [quantized, f"{prefix}_scale", f"{prefix}_zero_point"],
            [dequantized],
            name=f"{prefix}_DequantizeLinear",
        ),
    ]
    return nodes, dequantized


def _fp16_layer(model, node) -> tuple[list, list]:
    """Run `node` in FP16: Cast its input, FP16 copies of its constants, Cast its output back (same name)."""
    import onnx
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    half, full = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    cast_in = f"{node.name}_input_fp16"
    before = [onnx.helper.make_node("Cast", [node.input[0]], [cast_in], name=f"{node.name}_CastToFp16", to=half)]
    node.input[0] = cast_in
    for index in range(1, len(node.input)):
        name = node.input[index]
        if name in initializers:
            value = numpy_helper.to_array(initializers[name]).astype(np.float16)
            model.graph.initializer.append(numpy_helper.from_array(value, f"{name}_fp16"))
            node.input[index] = f"{name}_fp16"
    output = node.output[0]
    node.output[0] = f"{output}_fp16"
    after = [onnx.helper.make_node("Cast", [node.output[0]], [output], name=f"{node.name}_CastToFp32", to=full)]
    return before, after


def qdq_model(
    model,
    amax: Mapping[str, float],
    *,
    fallback: Mapping[str, str] | None = None,
    per_channel: bool = True,
    source: str | Path = "model",
):
    """A Q/DQ copy of the FP32 `model`; layers in `fallback` (node name -> fp16/fp32) stay out of INT8."""
    import onnx

    fallback = dict(fallback or {})
    unknown = set(fallback) - {layer.node for layer in quantizable_layers(model)}
    if unknown:
        raise ArtifactError(f"{source}: no Conv/Gemm node named {', '.join(sorted(unknown))}")
    bad = {p for p in fallback.values() if p not in FALLBACKS}
    if bad:
        raise ArtifactError(f"fallback precision must be one of {FALLBACKS}, got {', '.join(sorted(bad))}")
    model = onnx.ModelProto.FromString(model.SerializeToString())
    edges = quantized_inputs(model, fallback)
    targets = quantized_activations(model, fallback)
    missing = [t for t in targets if t not in amax]
    if missing:
        raise ArtifactError(f"{source}: no calibration range for tensors {', '.join(missing[:5])}")
    new_nodes, rewired = {}, {}
    for tensor in targets:
        new_nodes[tensor], rewired[tensor] = _activation_qdq(model, tensor, amax[tensor])
    graph_inputs = {v.name for v in model.graph.input}
    ordered = [n for t in targets if t in graph_inputs for n in new_nodes[t]]
    for index, node in enumerate(list(model.graph.node)):
        before: list = []
        after: list = []
        if node.op_type in LAYER_OPS and node.name not in fallback:
            before = _weight_qdq(model, node, per_channel)
        for position in edges.get(index, []):
            node.input[position] = rewired[node.input[position]]
        if fallback.get(node.name) == "fp16":
            before, after = _fp16_layer(model, node)
        produced = [node, *after]
        ordered += [*before, *produced]
        ordered += [n for made in produced for out in made.output if out in new_nodes for n in new_nodes[out]]
    del model.graph.node[:]
    model.graph.node.extend(ordered)
    _drop_unused_initializers(model)
    onnx.checker.check_model(model)
    return model


def insert_qdq(
    fp32_onnx: str | Path,
    amax: Mapping[str, float],
    out_path: str | Path,
    *,
    fallback: Mapping[str, str] | None = None,
    per_channel: bool = True,
) -> dict[str, Any]:
    """Write the Q/DQ graph of `fp32_onnx` quantized with activation ranges `amax` to `out_path`."""
    import onnx

    from resnet_deploy.onnx_io import load_onnx

    started = time.perf_counter()
    model = qdq_model(load_onnx(fp32_onnx), amax, fallback=fallback, per_channel=per_channel, source=fp32_onnx)
    with atomic_path(out_path) as tmp:
        onnx.save(model, str(tmp))
    granularity = "per-channel (axis 0)" if per_channel else "per-tensor"
    return {
        "onnx": str(out_path),
        "sha256": sha256_file(out_path),
        "source_onnx_sha256": sha256_file(fp32_onnx),
        "quantized_activations": sum(n.op_type == "QuantizeLinear" for n in model.graph.node),
        "quantized_weights": sum(n.op_type in LAYER_OPS for n in model.graph.node) - len(fallback or {}),
        "fallback_layers": dict(fallback or {}),
        "scheme": f"int8 symmetric; weights {granularity}, activations per-tensor; zero points 0",
        "seconds": round(time.perf_counter() - started, 3),
    }


def _drop_unused_initializers(model) -> None:
    used = {name for node in model.graph.node for name in node.input}
    keep = [init for init in model.graph.initializer if init.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)


def tensorrt_qdq_problems(model) -> list[str]:
    """What TensorRT's ONNX parser would refuse in a Q/DQ graph; [] when it is acceptable.

    The rules of shared/tensorrt-api/README.md: Q/DQ zero points int8 and 0, no QLinear*/…Integer/
    DynamicQuantizeLinear ops, Conv/Gemm weights an initializer or the DequantizeLinear of one.
    """
    from onnx import numpy_helper

    initializers = {init.name: init for init in model.graph.initializer}
    producers = {out: node for node in model.graph.node for out in node.output}
    problems = [
        f"{n.name}: {n.op_type} is not supported by TensorRT's ONNX parser"
        for n in model.graph.node
        if n.op_type in TENSORRT_UNSUPPORTED_OPS
    ]
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = initializers.get(node.input[2]) if len(node.input) > 2 else None
            value = numpy_helper.to_array(zero_point) if zero_point is not None else None
            if value is None or value.dtype != np.int8 or value.any():
                problems.append(f"{node.name}: zero point must be an int8 initializer equal to 0")
        if node.op_type in LAYER_OPS:
            weight = node.input[1]
            source = producers.get(weight)
            if weight not in initializers and not (
                source is not None and source.op_type == "DequantizeLinear" and source.input[0] in initializers
            ):
                problems.append(f"{node.name}: weight {weight} is neither an initializer nor the Q/DQ of one")
    return problems
