"""Genuinely degraded artifacts of a trained graph for the gates' tests, and independent oracles.

Each degradation is one a real pipeline can produce: activation ranges 50x too small (a broken
calibrator), one layer's weights perturbed (a bad conversion), the logits of one class shifted by
a bias chosen so that exactly k test images change (to sit just inside or just outside a gate).
Predictions are computed here with ONNX Runtime directly, never through the code under test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper

from resnet_deploy.quantize.qdq import insert_qdq


def ort_logits(path: Path, images: np.ndarray, batch: int = 1000, simulate_qdq: bool = False) -> np.ndarray:
    """Logits of an ONNX file on ONNX Runtime's CPU provider (`simulate_qdq`: as OnnxRuntimeRunner's)."""
    options = ort.SessionOptions()
    if simulate_qdq:
        options.add_session_config_entry("session.disable_quant_qdq", "1")
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: images[i:i + batch]})[0] for i in range(0, len(images), batch)])


def _initializer(model, name: str):
    return next(init for init in model.graph.initializer if init.name == name)


def _rewrite(src: Path, dst: Path, name_of, change) -> Path:
    """Copy `src` to `dst` with the initializer `name_of(model)` replaced by `change(array)` (same dtype)."""
    model = onnx.load(str(src))
    init = _initializer(model, name_of(model))
    value = numpy_helper.to_array(init)
    init.CopyFrom(numpy_helper.from_array(change(value.copy()).astype(value.dtype), init.name))
    dst.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(dst))
    return dst


def with_bias_shift(src: Path, dst: Path, cls: int, delta: float) -> Path:
    """The graph with `delta` added to the final Gemm's bias of class `cls`."""
    def shift(bias):
        bias[cls] += delta
        return bias

    return _rewrite(src, dst, lambda m: [n for n in m.graph.node if n.op_type == "Gemm"][-1].input[2], shift)


def with_noisy_conv(src: Path, dst: Path, index: int = 1, relative_std: float = 1.0, seed: int = 0) -> Path:
    """The graph with Gaussian noise (`relative_std` of the weights' std) added to the weights of Conv `index`."""
    rng = np.random.default_rng(seed)

    def perturb(weight):
        return weight + rng.standard_normal(weight.shape) * relative_std * weight.astype(np.float32).std()

    return _rewrite(src, dst, lambda m: [n for n in m.graph.node if n.op_type == "Conv"][index].input[1], perturb)


def ranges_scaled_qdq(fp32_onnx: Path, amax: dict[str, float], dst: Path, factor: float) -> Path:
    """The Q/DQ graph with every activation range multiplied by `factor` (1/50: 50x too small)."""
    insert_qdq(fp32_onnx, {name: value * factor for name, value in amax.items()}, dst)
    return dst


def count_metric(metric: str, predictions: np.ndarray, reference: np.ndarray, labels: np.ndarray) -> int:
    """'disagreements' with the reference's predictions, or 'drop': correct references minus correct predictions."""
    if metric == "disagreements":
        return int((predictions != reference).sum())
    return int((reference == labels).sum() - (predictions == labels).sum())


def bias_shift_for(logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, metric: str,
                   target: int) -> tuple[int, float, float]:
    """(class, delta, margin): adding delta to that class's logit makes `metric` exactly `target`.

    An image moves to class c once delta exceeds its margin max(logits) - logits[c]; of every class
    and every count of moved images giving `target`, the one whose delta interval is widest wins,
    and delta is its midpoint (`margin`: half the interval's width, the room for rounding)."""
    base = logits.argmax(1)
    start = count_metric(metric, base, reference, labels)
    best = (-1, 0.0, -1.0)
    for cls in range(logits.shape[1]):
        margins = logits.max(1) - logits[:, cls]
        order = np.argsort(margins, kind="stable")
        order = order[base[order] != cls]
        if metric == "disagreements":  # what moving each image to cls changes
            steps = (reference[order] != cls).astype(int) - (reference[order] != base[order])
        else:
            steps = (labels[order] == base[order]).astype(int) - (labels[order] == cls)
        values = start + np.concatenate([[0], np.cumsum(steps)])[:-1]
        bounds = np.concatenate([[0.0], margins[order]])
        widths = np.diff(bounds)
        for m in np.flatnonzero(values == target):
            if widths[m] / 2 > best[2]:
                best = (cls, float((bounds[m] + bounds[m + 1]) / 2), float(widths[m] / 2))
    if best[0] < 0:
        raise AssertionError(f"no bias shift gives {metric} = {target}")
    return best
