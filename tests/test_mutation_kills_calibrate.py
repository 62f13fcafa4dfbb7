"""Exact values for resnet_deploy.quantize.calibrate, written to kill the mutants tools/mutation.sh found
surviving: the entropy search against a plain-loop implementation of the same KL rule, percentile and
spike arithmetic on hand-made histograms, and the statistics of a tiny ONNX graph (milliseconds)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import onnx
import pytest

from resnet_deploy.quantize import calibrate
from resnet_deploy.quantize.calibrate import (
    ActivationStats,
    activation_tensors,
    amax_from_stats,
    calibrate_all,
    calibrate_onnx,
    collect_stats,
    entropy_amax,
    percentile_amax,
    spike_fraction,
)
from tests.classifier_graphs import write_classifier


def smoothed(counts: list[float], eps: float = 1e-4) -> list[float] | None:
    zeros = sum(1 for c in counts if c == 0)
    nonzero = len(counts) - zeros
    if nonzero == 0 or eps * zeros / nonzero >= 1.0:
        return None
    total = sum(counts)
    return [eps if c == 0 else c / total - eps * zeros / nonzero for c in counts]


def loop_entropy_amax(histogram: list[float], top: float, levels: int) -> float:
    """TensorRT's entropy calibration written as plain loops: clip at each bin, merge into `levels` groups."""
    histogram = [float(h) for h in histogram]
    bins = len(histogram)
    histogram[0] = histogram[1]
    best = (math.inf, bins)
    for index in range(levels, bins + 1):
        divergence = loop_divergence(histogram, index, levels)
        if divergence < best[0]:
            best = (divergence, index)
    return best[1] * top / bins


@pytest.mark.parametrize("seed", range(6))
def test_entropy_matches_the_plain_loop_rule(seed):
    rng = np.random.default_rng(seed)
    values = np.abs(rng.laplace(scale=1.0 + seed, size=5000))
    histogram, _ = np.histogram(values, bins=24, range=(0, values.max()))
    histogram[rng.integers(3, 24, size=3)] = 0
    top = float(values.max())
    assert spike_fraction(histogram.astype(float)) <= calibrate.SPIKE_FRACTION
    expected = loop_entropy_amax(list(histogram), top, levels=6)
    assert entropy_amax(histogram, top, levels=6) == pytest.approx(expected, rel=1e-12)


def test_entropy_prefers_the_first_of_equal_divergences_and_keeps_the_input():
    histogram = np.ones(32)
    histogram[0] = 50
    before = histogram.copy()
    assert entropy_amax(histogram, 8.0, levels=8) == 8.0
    assert np.array_equal(histogram, before)
    assert calibrate.QUANTIZED_LEVELS == 128 and calibrate.HISTOGRAM_BINS == 2048


def test_entropy_of_empty_or_zero_only_histograms_is_the_top():
    assert entropy_amax(np.zeros(16), 3.0, levels=4) == 3.0
    only_zeros = np.zeros(16)
    only_zeros[0] = 1000
    assert entropy_amax(only_zeros, 3.0, levels=4) == 3.0


def test_a_spiky_histogram_takes_the_percentile_range():
    histogram = np.ones(64)
    histogram[10] = 40  # 40 - 2 = 38 of 103 values in the spike: over 10 %
    assert spike_fraction(histogram) == pytest.approx(38 / 103)
    assert entropy_amax(histogram, 64.0, levels=8) == percentile_amax(histogram, 64.0) == 64.0
    histogram[10] = 8  # 6 of 71: under 10 %
    assert spike_fraction(histogram) == pytest.approx(6 / 71)


def test_spike_fraction_counts_excess_over_twice_the_larger_neighbour():
    assert spike_fraction(np.array([0.0, 10.0, 0.0, 1.0, 1.0])) == pytest.approx(10 / 12)
    assert spike_fraction(np.array([5.0, 1.0, 1.0])) == pytest.approx(3 / 7)
    assert spike_fraction(np.array([1.0, 1.0, 5.0])) == pytest.approx(3 / 7)
    assert spike_fraction(np.array([1.0, 3.0, 1.0])) == pytest.approx(1 / 5)
    assert spike_fraction(np.zeros(4)) == 0.0


def test_percentile_reads_the_cumulative_histogram():
    histogram = np.ones(100)
    assert percentile_amax(histogram, 100.0, 50.0) == 50.0
    assert percentile_amax(histogram, 100.0, 99.99) == 100.0
    assert percentile_amax(histogram, 200.0, 1.0) == 2.0
    assert percentile_amax(histogram, 100.0) == 100.0


@pytest.fixture
def tiny(tmp_path):
    return write_classifier(tmp_path / "tiny.onnx", channels=2, size=4)


def images(count: int = 10) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(-1, 3, size=(count, 2, 4, 4)).astype(np.float32)


def test_activation_tensors_of_a_tiny_graph(tiny):
    model = onnx.load(str(tiny))
    assert activation_tensors(model) == ["input", "pooled", "flat", "logits"]
    model.graph.input.append(onnx.helper.make_tensor_value_info("weight", onnx.TensorProto.FLOAT, [2, 10]))
    model.graph.node.append(onnx.helper.make_node("Relu", ["logits"], ["pooled"]))
    assert activation_tensors(model) == ["input", "pooled", "flat", "logits"]


def test_statistics_of_a_tiny_graph_are_exact(tiny):
    x = images()
    stats = collect_stats(tiny, x, batch_size=3)
    assert stats.names == ["input", "pooled", "flat", "logits"]
    assert stats.amax["input"] == pytest.approx(float(np.abs(x).max()))
    pooled = x.mean(axis=(2, 3))
    assert stats.amax["flat"] == pytest.approx(float(np.abs(pooled).max()), rel=1e-6)
    expected, _ = np.histogram(np.abs(x), bins=2048, range=(0.0, stats.amax["input"]))
    assert np.array_equal(stats.histograms["input"], expected)
    assert stats.histograms["logits"].sum() == 10 * 10


def test_statistics_histogram_of_an_all_zero_tensor_uses_range_one():
    stats = ActivationStats(["z", "y"])
    stats.update_max({"z": np.zeros(4), "y": np.array([-3.0, 1.0])})
    stats.update_max({"z": np.zeros(4), "y": np.array([2.0])})
    assert stats.amax == {"z": 0.0, "y": 3.0}
    stats.update_histograms({"z": np.zeros(4), "y": np.array([3.0, 1.5])})
    stats.update_histograms({"z": np.zeros(4), "y": np.array([-3.0])})
    assert stats.histograms["z"][0] == 8 and stats.histograms["z"].sum() == 8
    assert stats.histograms["y"][1024] == 1 and stats.histograms["y"][2047] == 2


def test_amax_from_stats_per_method():
    stats = ActivationStats(["a", "zero"])
    stats.amax = {"a": 10.0, "zero": 0.0}
    histogram = np.zeros(2048)
    histogram[:1024] = 1
    stats.histograms = {"a": histogram, "zero": np.zeros(2048)}
    assert amax_from_stats(stats, "max") == {"a": 10.0, "zero": 0.0}
    assert amax_from_stats(stats, "max") is not stats.amax
    assert amax_from_stats(stats, "percentile", 50.0) == {"a": 2.5, "zero": 0.0}
    assert amax_from_stats(stats, "percentile") == {"a": pytest.approx(5.0, abs=0.01), "zero": 0.0}
    assert amax_from_stats(stats, "entropy") == {"a": entropy_amax(histogram, 10.0), "zero": 0.0}
    with pytest.raises(ValueError, match=r"^calibration method must be one of \('entropy', 'max', 'percentile'\), "
                                         r"got 'minmax'$"):
        amax_from_stats(stats, "minmax")


def test_calibrate_all_and_onnx_agree_with_timings(tiny):
    x = images(4)
    results, timings = calibrate_all(tiny, x, methods=("max", "percentile"), percentile=50.0)
    assert set(results) == {"max", "percentile"}
    assert set(timings) == {"statistics_seconds", "max_seconds", "percentile_seconds"}
    assert all(v >= 0 for v in timings.values())
    assert calibrate_onnx(tiny, x, "percentile", 50.0) == results["percentile"]
    assert calibrate_onnx(tiny, x, "max") == results["max"]
    assert calibrate_onnx(tiny, x) == calibrate_all(tiny, x, methods=("entropy",))[0]["entropy"]
    assert results["percentile"]["input"] < results["max"]["input"]


def test_percentile_of_a_single_value():
    assert percentile_amax(np.array([0.0, 1.0, 0.0, 0.0]), 4.0) == 2.0
    assert percentile_amax(np.array([0.0, 1.0, 0.0, 0.0]), 4.0, 50.0) == 2.0


def test_spikes_at_the_edges_and_fractional_counts():
    assert spike_fraction(np.array([5.0, 0.0, 0.0])) == 1.0
    assert spike_fraction(np.array([0.0, 0.0, 5.0])) == 1.0
    assert spike_fraction(np.array([0.5, 0.0, 0.0])) == 1.0


def test_a_spike_of_exactly_ten_percent_keeps_the_kl_search():
    histogram = np.maximum(1, np.round(22 * np.exp(-np.arange(64) / 8)))
    histogram[0] = histogram[1]
    histogram[22] = 28  # excess 28 - 2 * 2 = 24 of 240 values: exactly SPIKE_FRACTION
    assert spike_fraction(histogram) == calibrate.SPIKE_FRACTION == 0.1
    assert entropy_amax(histogram, 64.0, levels=8) == loop_entropy_amax(list(histogram), 64.0, levels=8)
    assert entropy_amax(histogram, 64.0, levels=8) != percentile_amax(histogram, 64.0)


@pytest.mark.parametrize("histogram", [
    [0.0, 0.5] + [0.0] * 14,
    [3.0, 4, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    [9.0, 8, 6, 5, 4, 3, 3, 2, 2, 1, 1, 1, 0, 1, 0, 0],
    [0.0] * 8 + [1.0] * 8,  # nothing below the first clip points: their quantized histogram is empty
])
def test_entropy_of_sparse_histograms_matches_the_plain_loop_rule(histogram):
    top = float(len(histogram))
    assert entropy_amax(np.array(histogram), top, levels=4) == loop_entropy_amax(histogram, top, levels=4)


def loop_divergence(histogram: list[float], index: int, levels: int) -> float:
    """KL(P || Q) of one clip index, with the plain loops of loop_entropy_amax."""
    reference = histogram[:index]
    reference[-1] += sum(histogram[index:])
    edges = [int(index * k / levels) for k in range(levels)] + [index]
    quantized = []
    for lo, hi in zip(edges, edges[1:]):
        used = [i for i in range(lo, hi) if reference[i] != 0]
        share = sum(histogram[lo:hi]) / len(used) if used else 0.0
        quantized += [share if reference[i] != 0 else 0.0 for i in range(lo, hi)]
    p, q = smoothed(reference), smoothed(quantized)
    return math.inf if p is None or q is None else sum(a * math.log(a / b) for a, b in zip(p, q) if a > 0 and b > 0)


def divergences(histogram, levels: int, indices=None) -> np.ndarray:
    histogram = np.asarray(histogram, dtype=np.float64)
    tails = np.concatenate([np.cumsum(histogram[::-1])[::-1], [0.0]])
    indices = np.arange(levels, len(histogram) + 1) if indices is None else np.asarray(indices)
    return calibrate.kl_divergences(histogram, tails, indices, levels)


def test_kl_divergence_of_a_small_case():
    # Clipped at 4, [1, 2, 0, 1 | 2] is P = [1, 2, 0, 3] (the tail on the last bin); Q merges [1, 2] and
    # [0, 1] and spreads each sum over P's nonzero bins: [1.5, 1.5, 0, 1]. Both smoothed with eps 1e-4.
    p = [1e-4 if c == 0 else c / 6 - 1e-4 / 3 for c in [1, 2, 0, 3]]
    q = [1e-4 if c == 0 else c / 4 - 1e-4 / 3 for c in [1.5, 1.5, 0, 1]]
    expected = sum(a * math.log(a / b) for a, b in zip(p, q))
    assert divergences([1, 2, 0, 1, 2], 2, [4])[0] == pytest.approx(expected, rel=1e-12)
    assert divergences([1, 2, 0, 1, 2], 2, [4])[0] == pytest.approx(loop_divergence([1, 2, 0, 1, 2], 4, 2), rel=1e-12)


@pytest.mark.parametrize("histogram", [
    # P and Q with bins that smoothing leaves at or below 0 (left out of the sum), one where only Q's is,
    # a group whose only nonzero bin in P is the tail (its sum is 0: Q takes eps there)
    [100000, 0, 0, 1, 0, 0, 100000, 0, 2, 3, 0, 0],
    [0, 0, 0, 0, 5, 1, 0, 2],  # nothing before the tail: Q is empty, the divergence inf
    [7, 3, 3, 0, 0, 1, 0, 0, 9, 0, 4, 1],
])
def test_kl_divergences_of_every_clip_index_match_the_plain_loops(histogram):
    levels = 4
    expected = [loop_divergence([float(h) for h in histogram], index, levels)
                for index in range(levels, len(histogram) + 1)]
    got = divergences(histogram, levels)
    assert [math.isinf(g) for g in got] == [math.isinf(e) for e in expected]
    assert got[np.isfinite(got)] == pytest.approx([e for e in expected if math.isfinite(e)], rel=1e-12, abs=1e-15)


def test_kl_divergence_is_inf_when_smoothing_moves_all_the_mass():
    # eps 1e-4 on each of 10000 empty bins takes all the mass of the one nonzero bin: no distribution
    assert divergences([1.0] + [0.0] * 10000, 1, [10001])[0] == np.inf
    assert divergences([1.0] + [0.0] * 9999, 1, [10000])[0] == 0.0  # P = Q
    assert divergences(np.zeros(4), 2, [4])[0] == np.inf


@pytest.mark.parametrize("block", [1, 3, 7, 64])
def test_kl_search_is_the_same_in_any_block_size(block):
    rng = np.random.default_rng(block)
    histogram = np.abs(rng.laplace(scale=4, size=40)).round() * (rng.random(40) < 0.8)
    histogram[0] = histogram[1]
    expected = loop_entropy_amax(list(histogram), 40.0, levels=5)
    assert calibrate.kl_search(histogram, 5, block) == expected
    assert calibrate.kl_search(histogram, 5) == expected
    assert calibrate.kl_search(np.zeros(6), 5, block) == 6  # every divergence inf: all bins


@pytest.mark.parametrize("block", [5, 10])
def test_kl_search_scores_a_last_block_that_starts_at_the_end(block):
    # a flat histogram kept whole is its own quantization (divergence 0); with levels 2 and these block
    # sizes that index (12) starts the last block
    assert calibrate.kl_search(np.ones(12), 2, block) == 12 == loop_entropy_amax([1.0] * 12, 12.0, levels=2)


def test_a_bin_that_smoothing_leaves_at_exactly_zero_adds_nothing():
    # P = [1, 0, 0, 9999] over 10000: bin 0 keeps 1e-4 - eps1 (1e-4 * 2 empty / 2 nonzero) = 0 exactly; Q
    # spreads the one group's 10000 over P's two nonzero bins. Only bin 3 adds to the divergence.
    expected = (0.9999 - 1e-4) * math.log((0.9999 - 1e-4) / (0.5 - 1e-4))
    assert divergences([1, 0, 0, 9999], 1, [4])[0] == pytest.approx(expected, rel=1e-12)
    assert divergences([1, 0, 0, 9999], 1, [4])[0] == pytest.approx(loop_divergence([1, 0, 0, 9999], 4, 1), rel=1e-12)


def test_kl_search_takes_the_first_of_equal_divergences_across_blocks():
    histogram = np.zeros(12)
    histogram[4] = 1.0  # clipped before bin 4, Q is empty (inf); from 5 on P = Q (0), in every later block too
    assert loop_entropy_amax(list(histogram), 12.0, levels=2) == 5.0
    for block in (1, 2, 3, 64):
        assert calibrate.kl_search(histogram, 2, block) == 5


def test_the_search_raises_no_floating_point_warnings():
    # Empty Q, all-zero rows, bins that smoothing leaves below 0 and the zero padding past each row's index
    # divide by zero and take logs of negatives inside the search; none of that may reach the user.
    histograms = ([100000, 0, 0, 1, 0, 0, 100000, 0, 2, 3, 0, 0], [0, 0, 0, 0, 5, 1, 0, 2], [0.0] * 6)
    with warnings.catch_warnings(), np.errstate(all="warn"):
        warnings.simplefilter("error")
        assert [calibrate.kl_search(np.array(h, dtype=np.float64), 4, 3) for h in histograms] == [5, 5, 6]


def test_entropy_and_percentile_differ_by_method():
    stats = ActivationStats(["a", "small"])
    stats.amax = {"a": 10.0, "small": 0.5}
    histogram = np.maximum(0, 2000 - np.arange(2048)).astype(float)
    stats.histograms = {"a": histogram, "small": histogram}
    entropy = amax_from_stats(stats, "entropy")
    percentile = amax_from_stats(stats, "percentile")
    assert entropy == {"a": entropy_amax(histogram, 10.0), "small": entropy_amax(histogram, 0.5)}
    assert percentile == {"a": percentile_amax(histogram, 10.0), "small": percentile_amax(histogram, 0.5)}
    assert entropy["a"] != percentile["a"] and percentile["small"] > 0


def test_default_percentile_stays_within_the_maximum(tiny):
    x = images(4)
    results, timings = calibrate_all(tiny, x, methods=("max", "percentile"))
    assert all(results["percentile"][n] <= results["max"][n] for n in results["max"])
    assert calibrate_onnx(tiny, x, "percentile") == results["percentile"]
    for seconds in timings.values():
        assert isinstance(seconds, float) and 0 <= seconds < 100 and seconds == round(seconds, 3)
