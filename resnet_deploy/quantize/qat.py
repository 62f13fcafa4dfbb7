"""Quantization-aware training on the deployed graph, for when PTQ plus fallback is not enough.

The FP32 ONNX (BatchNorm already folded) becomes a trainable torch module: its Conv/Gemm
initializers are the parameters, and fake quantization sits exactly where `qdq.quantized_inputs`
puts Q/DQ pairs (per-channel symmetric weights, per-tensor symmetric activations, the residual
input of each Add), so the placement is the PTQ graph's by construction. Activation ranges start
from the calibrated amax and are learned (LSQ-style gradient scaling); rounding is straight-through.
Fine-tuning runs on the train split; the epoch with the best validation top-1 (epoch 0 is PTQ
itself) is exported: the FP32 graph with the new weights, then `insert_qdq` with the learned
ranges, giving an ordinary Q/DQ graph that TensorRT builds strongly typed.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from resnet_deploy.errors import ArtifactError
from resnet_deploy.quantize.qdq import INT8_MAX, LAYER_OPS, quantized_inputs
from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION

SUPPORTED_OPS = {
    "Conv",
    "Gemm",
    "Relu",
    "Add",
    "BatchNormalization",
    "MaxPool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "Pad",
    "Slice",
}
Progress = Callable[[str, dict[str, Any]], None]


def _round_ste(values: torch.Tensor) -> torch.Tensor:
    return values + (torch.round(values) - values).detach()


def fake_quantize_activation(values: torch.Tensor, amax: torch.Tensor) -> torch.Tensor:
    """QuantizeLinear + DequantizeLinear (int8, zero point 0, saturating to [-128, 127]), differentiable in amax."""
    gradient_scale = 1.0 / math.sqrt(values[0].numel() * INT8_MAX)
    amax = (amax - amax * gradient_scale).detach() + amax * gradient_scale
    scale = amax.abs().clamp_min(1e-8) / INT8_MAX
    return _round_ste(torch.clamp(values / scale, -INT8_MAX - 1, INT8_MAX)) * scale


def fake_quantize_weight(weight: torch.Tensor, axis: int = 0) -> torch.Tensor:
    """Per-channel symmetric int8 weights, scale max|w| / 127 per channel, as `insert_qdq` writes them."""
    reduce = tuple(i for i in range(weight.dim()) if i != axis)
    amax = weight.detach().abs().amax(dim=reduce, keepdim=True)
    scale = torch.where(amax > 0, amax / INT8_MAX, torch.ones_like(amax))
    return _round_ste(torch.clamp(weight / scale, -INT8_MAX, INT8_MAX)) * scale


def _attributes(node) -> dict[str, Any]:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _safe(name: str) -> str:
    return name.replace(".", "__")


class QatGraph(nn.Module):
    """An FP32 ONNX graph as a torch module, fake-quantized where its Q/DQ graph quantizes."""

    def __init__(self, model, amax: Mapping[str, float], fallback: Mapping[str, str] | None = None):
        super().__init__()
        from onnx import numpy_helper

        unsupported = sorted({n.op_type for n in model.graph.node} - SUPPORTED_OPS)
        if unsupported:
            raise ArtifactError(f"QAT runs the ops of the zoo's graphs; this graph also has {', '.join(unsupported)}")
        self.fallback = dict(fallback or {})
        initializers = {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}
        self.nodes = list(model.graph.node)
        trainable = {name for node in self.nodes if node.op_type in LAYER_OPS for name in node.input[1:]}
        self.weights = nn.ParameterDict(
            {
                _safe(n): nn.Parameter(torch.from_numpy(initializers[n].copy()))
                for n in sorted(trainable)
                if n in initializers
            }
        )
        self.constants = {n: v for n, v in initializers.items() if n not in trainable}
        self.edges = quantized_inputs(model, self.fallback)
        tensors = {self.nodes[i].input[k] for i, positions in self.edges.items() for k in positions}
        missing = sorted(tensors - set(amax))
        if missing:
            raise ArtifactError(f"no calibration range for tensors {', '.join(missing[:5])}")
        # float64 so that ranges nobody trained export bit for bit as calibrated
        self.amax = nn.ParameterDict(
            {_safe(t): nn.Parameter(torch.tensor(float(amax[t]), dtype=torch.float64)) for t in sorted(tensors)}
        )
        self.input_name = next(v.name for v in model.graph.input if v.name not in initializers)
        self.output_name = model.graph.output[0].name

    def learned_amax(self) -> dict[str, float]:
        names = {
            _safe(t): t for i, positions in self.edges.items() for k in positions for t in [self.nodes[i].input[k]]
        }
        return {names[key]: abs(float(value.detach())) for key, value in self.amax.items()}

    def trained_initializers(self) -> dict[str, np.ndarray]:
        return {key.replace("__", "."): value.detach().numpy().copy() for key, value in self.weights.items()}

    def _value(self, env: dict[str, torch.Tensor], name: str) -> Any:
        if name in env:
            return env[name]
        if _safe(name) in self.weights:
            return self.weights[_safe(name)]
        return torch.from_numpy(self.constants[name].copy())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        env = {self.input_name: images}
        for index, node in enumerate(self.nodes):
            inputs: list[Any] = [self._value(env, name) if name else None for name in node.input]
            for position in self.edges.get(index, []):
                inputs[position] = fake_quantize_activation(inputs[position], self.amax[_safe(node.input[position])])
            if node.op_type in LAYER_OPS and node.name not in self.fallback:
                axis = 1 if node.op_type == "Gemm" and not _attributes(node).get("transB", 0) else 0
                inputs[1] = fake_quantize_weight(inputs[1], axis)
            env[node.output[0]] = _run_op(node, inputs)
        return env[self.output_name]


def _run_op(node, inputs: list) -> torch.Tensor:
    attrs = _attributes(node)
    op = node.op_type
    x = inputs[0]
    if op == "Conv":
        pads = attrs.get("pads", [0, 0, 0, 0])
        half = len(pads) // 2
        if list(pads[:half]) != list(pads[half:]):
            x = F.pad(x, [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])])
            pads = [0] * len(pads)
        return F.conv2d(
            x,
            inputs[1],
            inputs[2] if len(inputs) > 2 else None,
            attrs.get("strides", 1),
            list(pads[:half]),
            attrs.get("dilations", 1),
            attrs.get("group", 1),
        )
    if op == "Gemm":
        a = x.t() if attrs.get("transA", 0) else x
        b = inputs[1].t() if attrs.get("transB", 0) else inputs[1]
        out = attrs.get("alpha", 1.0) * (a @ b)
        return out + attrs.get("beta", 1.0) * inputs[2] if len(inputs) > 2 and inputs[2] is not None else out
    if op == "Relu":
        return F.relu(x)
    if op == "Add":
        return x + inputs[1]
    if op == "BatchNormalization":
        scale, bias, mean, var = inputs[1:5]
        return F.batch_norm(x, mean, var, scale, bias, False, 0.0, attrs.get("epsilon", 1e-5))
    if op == "MaxPool":
        pads = attrs.get("pads", [0, 0, 0, 0])
        return F.max_pool2d(x, attrs["kernel_shape"], attrs.get("strides", 1), pads[: len(pads) // 2])
    if op in ("GlobalAveragePool", "ReduceMean"):
        axes = (inputs[1].tolist() if len(inputs) > 1 and inputs[1] is not None else attrs.get("axes")) or [2, 3]
        return x.mean(dim=[int(a) for a in axes], keepdim=bool(attrs.get("keepdims", 1)))
    if op == "Flatten":
        return torch.flatten(x, attrs.get("axis", 1))
    if op == "Reshape":
        shape = [x.shape[i] if int(d) == 0 else int(d) for i, d in enumerate(inputs[1].tolist())]
        return x.reshape(shape)
    if op == "Pad":
        pads = [int(p) for p in inputs[1].tolist()]
        half = len(pads) // 2
        value = float(inputs[2]) if len(inputs) > 2 and inputs[2] is not None else 0.0
        return F.pad(x, [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])], value=value)
    starts, ends = inputs[1].tolist(), inputs[2].tolist()
    axes = inputs[3].tolist() if len(inputs) > 3 else list(range(len(starts)))
    steps = inputs[4].tolist() if len(inputs) > 4 else [1] * len(starts)
    index = [slice(None)] * x.dim()
    for start, end, axis, step in zip(starts, ends, axes, steps):
        size = x.shape[axis]
        index[axis] = slice(max(-size, min(start, size)), max(-size - 1, min(end, size)), step)
    return x[tuple(index)]


@dataclass
class QatConfig:
    epochs: int = 1
    lr: float = 0.005
    batch_size: int = 128
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    train_limit: int = 0
    seed: int = 0
    threads: int = 0


def _predict(module: QatGraph, images: np.ndarray, batch_size: int = 1000) -> np.ndarray:
    module.eval()
    with torch.no_grad():
        return np.concatenate(
            [
                module(torch.from_numpy(images[i : i + batch_size])).argmax(1).numpy()
                for i in range(0, len(images), batch_size)
            ]
        )


def fine_tune(
    module: QatGraph,
    config: QatConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    val_images: np.ndarray,
    val_labels: np.ndarray,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Train `module` in place; it ends with the state of its best validation epoch (0: as calibrated;
    on a tie the later epoch)."""
    from resnet_deploy.train import TrainConfig, augment, to_input

    report = progress or (lambda event, values: None)
    if config.threads:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    images, labels = torch.from_numpy(np.ascontiguousarray(train_images)), torch.from_numpy(train_labels)
    if config.train_limit:
        images, labels = images[: config.train_limit], labels[: config.train_limit]
    steps = len(images) // config.batch_size
    if steps == 0:
        raise ArtifactError(f"batch size {config.batch_size} exceeds the {len(images)} training images")
    decay = [p for p in module.weights.values() if p.dim() > 1]
    no_decay = [p for p in module.weights.values() if p.dim() <= 1] + list(module.amax.values())
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr,
        momentum=0.9,
        nesterov=True,
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, config.epochs * steps))
    augmentation = TrainConfig()
    history = [{"epoch": 0, "val_top1": float((_predict(module, val_images) == val_labels).mean()), "seconds": 0.0}]
    best = (history[0]["val_top1"], {k: v.detach().clone() for k, v in module.state_dict().items()})
    report("epoch", history[0])
    for epoch in range(1, config.epochs + 1):
        started = time.perf_counter()
        module.train()
        order = torch.randperm(len(images), generator=generator)
        for step in range(steps):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = augment(to_input(images[index]), augmentation, generator).contiguous()
            loss = F.cross_entropy(module(batch), labels[index], label_smoothing=config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            report("step", {"epoch": epoch, "step": step + 1, "steps": steps, "loss": loss.item()})
        accuracy = float((_predict(module, val_images) == val_labels).mean())
        history.append({"epoch": epoch, "val_top1": accuracy, "seconds": round(time.perf_counter() - started, 1)})
        report("epoch", history[-1])
        if accuracy >= best[0]:
            best = (accuracy, {k: v.detach().clone() for k, v in module.state_dict().items()})
    module.load_state_dict(best[1])
    return history


def export_qat(fp32_model, module: QatGraph, fp32_out: Path, qdq_out: Path) -> dict[str, Any]:
    """Write the FP32 graph with the fine-tuned weights, then its Q/DQ graph with the learned ranges."""
    import onnx
    from onnx import numpy_helper

    from resnet_deploy.fileio import atomic_path
    from resnet_deploy.quantize.qdq import insert_qdq

    model = onnx.ModelProto.FromString(fp32_model.SerializeToString())
    trained = module.trained_initializers()
    for init in model.graph.initializer:
        if init.name in trained:
            init.CopyFrom(numpy_helper.from_array(trained[init.name].astype(np.float32), init.name))
    onnx.checker.check_model(model)
    with atomic_path(fp32_out) as tmp:
        onnx.save(model, str(tmp))
    return insert_qdq(fp32_out, module.learned_amax(), qdq_out, fallback=module.fallback)


def quantization_aware_training(
    fp32_onnx: str | Path,
    out_dir: str | Path,
    config: QatConfig,
    *,
    amax: Mapping[str, float],
    fallback: Mapping[str, str] | None = None,
    trt_version: str = DEFAULT_TRT_VERSION,
    data_dir: str | Path | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Fine-tune `fp32_onnx` with fake quantization from `amax`, export, and score FP32 / PTQ / QAT on
    validation and test with ONNX Runtime; writes the graphs, ranges, cache and a report (returned)."""
    import onnx

    from resnet_deploy import data
    from resnet_deploy.fileio import atomic_write_json, sha256_file
    from resnet_deploy.onnx_io import load_onnx
    from resnet_deploy.quantize.cache import write_calibration_cache
    from resnet_deploy.quantize.fallback import QdqEvaluator
    from resnet_deploy.quantize.int8 import Int8Paths

    started = time.perf_counter()
    fp32_onnx = Path(fp32_onnx)
    paths = Int8Paths(Path(out_dir), fp32_onnx.stem)
    model = load_onnx(fp32_onnx)
    dataset = data.load_fashion_mnist(data_dir)
    val_images, test_images = data.normalize(dataset.val_images), data.normalize(dataset.test_images)
    module = QatGraph(model, amax, fallback)
    history = fine_tune(
        module, config, dataset.train_images, dataset.train_labels, val_images, dataset.val_labels, progress
    )
    train_seconds = time.perf_counter() - started
    summary = export_qat(model, module, paths.qat_fp32, paths.qdq("qat"))
    learned = {**amax, **module.learned_amax()}
    atomic_write_json(paths.amax("qat"), learned)
    write_calibration_cache(paths.cache("qat"), learned, trt_version=trt_version)
    qat_model = onnx.load(str(paths.qdq("qat")))
    accuracy = {}
    for split, images, labels in (
        ("validation", val_images, dataset.val_labels),
        ("test", test_images, dataset.test_labels),
    ):
        evaluator = QdqEvaluator(model, amax, images, labels)
        scores = {"ptq": evaluator.score(dict(fallback or {})), "qat": evaluator.score_model(qat_model)}
        accuracy[split] = {
            "images": int(len(labels)),
            "fp32_top1": evaluator.fp32_top1,
            **{f"{n}_top1": s.top1 for n, s in scores.items()},
            **{f"{n}_agreement": s.agreement for n, s in scores.items()},
            **{f"{n}_drop_pp": round((evaluator.fp32_top1 - s.top1) * 100, 4) for n, s in scores.items()},
        }
    report = {
        "source_onnx": str(fp32_onnx),
        "source_onnx_sha256": sha256_file(fp32_onnx),
        "config": asdict(config),
        "fallback": dict(fallback or {}),
        "history": history,
        "best_epoch": max(history, key=lambda h: (h["val_top1"], h["epoch"]))["epoch"],
        "accuracy": accuracy,
        "onnx": str(paths.qdq("qat")),
        "fp32_onnx": str(paths.qat_fp32),
        "amax": str(paths.amax("qat")),
        "cache": str(paths.cache("qat")),
        "quantized_activations": summary["quantized_activations"],
        "train_minutes": round(train_seconds / 60, 2),
        "total_minutes": round((time.perf_counter() - started) / 60, 2),
    }
    atomic_write_json(paths.qat_report, report)
    return report
