"""The fake builder's model of where layers run on a DLA build, and of an engine's activation memory.

DLA: NVIDIA's "DLA Supported Layers and Restrictions" lists convolution, pooling, activation,
element-wise, scale and fully connected layers among others; TensorRT's ONNX parser turns
GlobalAveragePool into a reduce layer and Flatten/Reshape into shuffles, which this fake keeps on the
GPU (with BuilderFlag.GPU_FALLBACK), as it does the ReduceMean and Reshape of our exported head
and the Casts of an FP16 graph, so a ResNet's head falls back as a real DLA build's may. A
model, not NVIDIA's full rule set: tests change DLA_UNSUPPORTED_OPS to make most layers fall back.

Activation memory: the two largest intermediate tensors per sample (by ONNX shape inference) times
the profile's max batch in float32, so a context's memory grows with the profile as TensorRT's does.
"""

from __future__ import annotations

import numpy as np

DLA_UNSUPPORTED_OPS = {"GlobalAveragePool", "ReduceMean", "Flatten", "Reshape", "Shape", "Gather", "Cast", "Softmax"}


def layer_devices(network, config, on_dla: bool) -> dict[str, str]:
    """Layer name -> DLA or GPU for a DLA build (layers DLA cannot run fall back to the GPU); {} otherwise."""
    if not on_dla:
        return {}
    return {layer.name: "DLA" if config.can_run_on_DLA(layer) else "GPU" for layer in network._layers}


def activation_bytes(onnx_path: str, profile) -> int:
    """Bytes of activation memory an execution context of this network needs at the profile's max shape."""
    import onnx

    model = onnx.shape_inference.infer_shapes(onnx.load(onnx_path))
    per_sample = []
    for value in model.graph.value_info:
        dims = [d.dim_value for d in value.type.tensor_type.shape.dim][1:]
        if dims and all(dims):
            per_sample.append(int(np.prod(dims)))
    max_batch = max(shape[2][0] for shape in profile._shapes.values())
    return max(256, 4 * max_batch * sum(sorted(per_sample)[-2:]))
