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
SEARCH_BLOCK = 32
EPS = 1e-4


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
    histogram[0] = histogram[1]
    if histogram.sum() == 0:
        return top
    if spike_fraction(histogram) > SPIKE_FRACTION:
        return percentile_amax(histogram, top)
    return kl_search(histogram, levels) * top / len(histogram)


def kl_search(histogram: np.ndarray, levels: int, block: int = SEARCH_BLOCK) -> int:
    """The clip index (bins kept, `levels` to all) of least divergence: the first of equal ones, all bins
    if none is finite. Candidates are scored `block` at a time, one row each (`kl_divergences`)."""
    bins = len(histogram)
    tails = np.concatenate([np.cumsum(histogram[::-1])[::-1], [0.0]])
    best_divergence, best_index = np.inf, bins
    for first in range(levels, bins + 1, block):
        indices = np.arange(first, min(first + block, bins + 1))
        divergences = kl_divergences(histogram, tails, indices, levels)
        position = int(np.argmin(divergences))
        if divergences[position] < best_divergence:
            best_divergence, best_index = divergences[position], int(indices[position])
    return best_index


def kl_divergences(histogram: np.ndarray, tails: np.ndarray, indices: np.ndarray, levels: int) -> np.ndarray:
    """KL(P || Q) for each clip index (ascending), one row each: P is the histogram's first `index` bins
    with the tail (`tails[index]`) added to the last one; Q merges those bins (without the tail) into
    `levels` groups, starting where np.linspace(0, index, levels + 1) says, and spreads each group's sum
    evenly over P's nonzero bins. Both are smoothed (`_smoothing`); the divergence is inf where either
    cannot be.
    """
    width, rows = int(indices[-1]), np.arange(len(indices))
    last = histogram[indices - 1] + tails[indices]
    bounds = np.linspace(0, indices, levels + 1, axis=1).astype(int)
    sums, counts = _group_sums(histogram, bounds, last != 0)
    spread = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    p_eps, p_ok = _smoothing(counts.sum(axis=1), indices)
    q_eps, q_ok = _smoothing((counts * (spread != 0)).sum(axis=1), indices)
    with np.errstate(invalid="ignore"):  # 0 / 0 where nothing can be smoothed: such rows are inf
        p = histogram[:width] / tails[0] - p_eps[:, None]  # P keeps every value: its sum is the histogram's
        p[rows, indices - 1] = last / tails[0] - p_eps
        q = spread / (spread * counts).sum(axis=1, keepdims=True) - q_eps[:, None]
    q[spread == 0] = EPS
    padding = np.zeros((len(indices), 1))  # q past the index: left out below
    q = np.repeat(np.hstack([q, padding]).ravel(), np.diff(bounds, append=width).ravel()).reshape(p.shape)
    # P's empty bins, EPS in P and in Q, add 0: they are left out (their p here is -eps1 <= 0) with the
    # bins where smoothing left p or q not positive.
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.log(p / q)
        terms *= p
    np.copyto(terms, 0.0, where=(p <= 0) | (q <= 0))
    return np.where(p_ok & q_ok, terms.sum(axis=1), np.inf)


def _group_sums(histogram: np.ndarray, bounds: np.ndarray, last_nonzero: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row of group `bounds` (the starts, then the index): the histogram's sum over each group and
    the number of the reference's nonzero bins in it (the reference differs only in its last bin)."""
    padded = np.append(histogram, 0.0)  # reduceat needs the index `bins` in range
    segments = bounds.ravel()  # a row's index closes its last group; the value after it is dropped
    sums = np.add.reduceat(padded, segments).reshape(bounds.shape)[:, :-1]
    counts = np.add.reduceat(padded != 0, segments).reshape(bounds.shape)[:, :-1]  # int: bools add as ints
    counts[:, -1] += last_nonzero.astype(np.int64) - (padded[bounds[:, -1] - 1] != 0)
    return sums, counts


def _smoothing(n_nonzero: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Smoothing rows of `lengths` bins, `n_nonzero` of them nonzero: what each nonzero bin's share gives
    up (eps1) so each empty bin gets EPS, and whether that is possible (eps1 < 1; inf without a nonzero bin)."""
    with np.errstate(divide="ignore"):
        eps1 = EPS * (lengths - n_nonzero) / n_nonzero
    return eps1, eps1 < 1.0


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
