"""Activation ranges for INT8: run the FP32 graph on calibration images, compute amax per tensor.

Methods: `max` (absolute maximum), `percentile` (of |x|, default 99.99) and `entropy`, TensorRT's
EntropyCalibration2 idea: choose the clipping threshold whose 128-level quantized histogram has the
least KL divergence from the observed one. Two passes over the images (maxima, then histograms)
keep memory bounded whatever the calibration count.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from resnet_deploy.runners.onnxrt import cpu_session

METHODS = ("entropy", "max", "percentile")
ACTIVATION_OPS = {
    "Conv",
    "Relu",
    "Add",
    "Gemm",
    "MaxPool",
    "GlobalAveragePool",
    "ReduceMean",
    "Flatten",
    "Reshape",
    "BatchNormalization",
}
HISTOGRAM_BINS = 2048
QUANTIZED_LEVELS = 128
SPIKE_FRACTION = 0.1


def activation_tensors(model) -> list[str]:
    """The graph input and the outputs of the nodes whose activations TensorRT may quantize."""
    initializers = {init.name for init in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initializers]
    names += [node.output[0] for node in model.graph.node if node.op_type in ACTIVATION_OPS]
    return list(dict.fromkeys(names))


def _session_with_outputs(model, names: list[str]):
    """An ONNX Runtime CPU session that also returns the tensors `names`."""
    import onnx

    model = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in model.graph.output}
    for name in names:
        if name not in existing:
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    return cpu_session(model.SerializeToString(), optimize=False)


class ActivationStats:
    """Per-tensor absolute maxima and histograms of |x| over [0, max]."""

    def __init__(self, names: list[str]):
        self.names = names
        self.amax = {name: 0.0 for name in names}
        self.histograms: dict[str, np.ndarray] = {}

    def update_max(self, outputs: dict[str, np.ndarray]) -> None:
        for name in self.names:
            self.amax[name] = max(self.amax[name], float(np.abs(outputs[name]).max()))

    def update_histograms(self, outputs: dict[str, np.ndarray]) -> None:
        for name in self.names:
            top = self.amax[name] or 1.0
            counts, _ = np.histogram(np.abs(outputs[name]), bins=HISTOGRAM_BINS, range=(0.0, top))
            self.histograms[name] = self.histograms.get(name, 0) + counts


def collect_stats(onnx_path: str | Path, images: np.ndarray, batch_size: int = 128) -> ActivationStats:
    """Run the FP32 ONNX over `images` twice: maxima first, then histograms."""
    from resnet_deploy.onnx_io import load_onnx

    model = load_onnx(onnx_path)
    names = activation_tensors(model)
    session = _session_with_outputs(model, names)
    input_name = session.get_inputs()[0].name
    stats = ActivationStats(names)
    for update in (stats.update_max, stats.update_histograms):
        for start in range(0, len(images), batch_size):
            values = session.run(names, {input_name: images[start : start + batch_size]})
            update(dict(zip(names, values)))
    return stats


def percentile_amax(histogram: np.ndarray, top: float, percentile: float = 99.99) -> float:
    """The |x| below which `percentile` % of the values lie, read off the histogram."""
    cumulative = np.cumsum(histogram) / max(histogram.sum(), 1)
    index = int(np.searchsorted(cumulative, percentile / 100.0))
    return (index + 1) * top / len(histogram)


def spike_fraction(histogram: np.ndarray) -> float:
    """Share of the values in isolated spikes: each bin's excess over twice its larger neighbour."""
    neighbours = np.maximum(np.concatenate([[0.0], histogram[:-1]]), np.concatenate([histogram[1:], [0.0]]))
    return float(np.maximum(0.0, histogram - 2 * neighbours).sum() / max(histogram.sum(), 1e-12))


def entropy_amax(histogram: np.ndarray, top: float, levels: int = QUANTIZED_LEVELS) -> float:
    """The clipping threshold with the least KL divergence between clipped and quantized histograms.

    The zero bin is set to its neighbour's count first (as NVIDIA's calibrators do), so the spike
    of exact zeros after a ReLU does not decide the threshold. Other spikes (over `SPIKE_FRACTION`
    of the values in bins far above their neighbours: Fashion-MNIST's constant background in the
    input and the stem's per-channel response to it) make KL clip at the spike and lose every
    foreground value, so such tensors take the percentile range instead.
    """
    histogram = histogram.astype(np.float64).copy()
    bins = len(histogram)
    histogram[0] = histogram[1]
    if histogram.sum() == 0:
        return top
    if spike_fraction(histogram) > SPIKE_FRACTION:
        return percentile_amax(histogram, top)
    tails = np.concatenate([np.cumsum(histogram[::-1])[::-1], [0.0]])
    best_divergence, best_index = np.inf, bins
    for index in range(levels, bins + 1):
        reference = histogram[:index].copy()
        reference[-1] += tails[index]
        divergence = _kl_to_quantized(reference, histogram[:index], levels)
        if divergence < best_divergence:
            best_divergence, best_index = divergence, index
    return best_index * top / bins


def _kl_to_quantized(reference: np.ndarray, clipped: np.ndarray, levels: int) -> float:
    """KL(P || Q): Q merges `clipped` into `levels` bins and spreads each over P's nonzero bins."""
    nonzero = reference != 0
    starts = np.linspace(0, len(clipped), levels + 1).astype(int)[:-1]
    sums = np.add.reduceat(clipped, starts)
    counts = np.add.reduceat(nonzero.astype(np.float64), starts)
    per_bin = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    quantized = np.repeat(per_bin, np.diff(np.append(starts, len(clipped)))) * nonzero
    p, q = _smooth(reference), _smooth(quantized)
    if p is None or q is None:
        return np.inf
    mask = (p > 0) & (q > 0)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def _smooth(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    """Normalize, moving a little mass onto empty bins so the divergence stays finite."""
    zero = counts == 0
    n_zero, n_nonzero = int(zero.sum()), int((~zero).sum())
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    if eps1 >= 1.0:
        return None
    dist = counts / counts.sum()
    return np.where(zero, eps, dist - eps1 * (~zero))


def amax_from_stats(stats: ActivationStats, method: str, percentile: float = 99.99) -> dict[str, float]:
    if method not in METHODS:
        raise ValueError(f"calibration method must be one of {METHODS}, got {method!r}")
    if method == "max":
        return dict(stats.amax)
    compute = (lambda h, t: percentile_amax(h, t, percentile)) if method == "percentile" else entropy_amax
    return {
        name: (compute(stats.histograms[name], stats.amax[name]) if stats.amax[name] > 0 else 0.0)
        for name in stats.names
    }


def calibrate_onnx(
    onnx_path: str | Path, images: np.ndarray, method: str = "entropy", percentile: float = 99.99
) -> dict[str, float]:
    """amax per activation tensor of the FP32 graph at `onnx_path`, by `method`."""
    return amax_from_stats(collect_stats(onnx_path, images), method, percentile)


def calibrate_all(
    onnx_path: str | Path, images: np.ndarray, methods=METHODS, percentile: float = 99.99
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """amax for several methods from one pass of statistics; returns (amax by method, timings)."""
    started = time.perf_counter()
    stats = collect_stats(onnx_path, images)
    timings = {"statistics_seconds": round(time.perf_counter() - started, 3)}
    results = {}
    for method in methods:
        started = time.perf_counter()
        results[method] = amax_from_stats(stats, method, percentile)
        timings[f"{method}_seconds"] = round(time.perf_counter() - started, 3)
    return results, timings
