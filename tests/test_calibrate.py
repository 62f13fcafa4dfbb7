"""Activation statistics and amax per method on real train images; the `calibrate` command."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.quantize.cache import read_calibration_cache
from resnet_deploy.quantize.calibrate import (
    HISTOGRAM_BINS,
    METHODS,
    QUANTIZED_LEVELS,
    SPIKE_FRACTION,
    activation_tensors,
    calibrate_all,
    calibrate_onnx,
    collect_stats,
    entropy_amax,
    kl_search,
    percentile_amax,
    spike_fraction,
)

EXPECTED_OPS = {"Conv", "Relu", "Add", "Gemm", "ReduceMean", "GlobalAveragePool", "MaxPool", "Flatten", "Reshape"}


@pytest.fixture(scope="module")
def images(data_dir):
    return data.calibration_images(64, seed=0, data_dir=data_dir)


@pytest.fixture(scope="module")
def calibrated(untrained_onnx, images):
    return calibrate_all(untrained_onnx, images)


def histogram_of(values: np.ndarray) -> tuple[np.ndarray, float]:
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0, values.max()))
    return counts, float(values.max())


def test_activation_tensors_are_the_input_and_every_quantizable_output(untrained_onnx):
    model = onnx.load(str(untrained_onnx))
    expected = ["input"] + [n.output[0] for n in model.graph.node if n.op_type in EXPECTED_OPS]
    names = activation_tensors(model)
    assert names == expected
    assert sum(n.op_type in ("Conv", "Add") for n in model.graph.node) == 28
    assert "logits" in names


def test_every_method_ranges_every_activation(calibrated, untrained_onnx):
    amax_by_method, timings = calibrated
    names = set(activation_tensors(onnx.load(str(untrained_onnx))))
    assert set(amax_by_method) == set(METHODS)
    for method, amax in amax_by_method.items():
        assert set(amax) == names, method
        assert all(np.isfinite(v) and v > 0 for v in amax.values()), method
    for name, top in amax_by_method["max"].items():
        assert amax_by_method["percentile"][name] <= top * (1 + 1e-6)
        assert amax_by_method["entropy"][name] <= top * (1 + 1e-6)
    assert sum(amax_by_method["entropy"][n] < amax_by_method["max"][n] for n in names) > len(names) / 2
    assert {"statistics_seconds", "entropy_seconds", "max_seconds", "percentile_seconds"} <= set(timings)


def test_max_is_the_exact_absolute_maximum(calibrated, untrained_onnx, images):
    amax = calibrated[0]["max"]
    logits = ort.InferenceSession(str(untrained_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    assert amax["input"] == pytest.approx(float(np.abs(images).max()), rel=1e-6)
    assert amax["logits"] == pytest.approx(float(np.abs(logits).max()), rel=1e-6)


def test_statistics_are_bounded_and_cover_every_value(untrained_onnx, images):
    stats = collect_stats(untrained_onnx, images, batch_size=16)
    assert all(h.shape == (HISTOGRAM_BINS,) for h in stats.histograms.values())
    assert stats.histograms["input"].sum() == images.size
    assert stats.histograms["logits"].sum() == len(images) * 10


def test_calibrate_onnx_matches_calibrate_all_and_refuses_unknown_methods(calibrated, untrained_onnx, images):
    assert calibrate_onnx(untrained_onnx, images, "percentile") == calibrated[0]["percentile"]
    with pytest.raises(ValueError, match="calibration method"):
        calibrate_onnx(untrained_onnx, images, "minmax")


def test_entropy_is_a_kl_search_that_depends_on_the_shape():
    rng = np.random.default_rng(0)
    cauchy = np.abs(rng.standard_cauchy(200_000))
    counts, top = histogram_of(cauchy[cauchy < 200])
    entropy, percentile = entropy_amax(counts, top), percentile_amax(counts, top, 99.99)
    assert entropy < percentile <= top and entropy < 0.6 * top
    uniform_counts, uniform_top = histogram_of(rng.uniform(0, 1, 200_000))
    assert 0.98 * uniform_top <= entropy_amax(uniform_counts, uniform_top) <= uniform_top
    laplace_counts, laplace_top = histogram_of(np.abs(rng.laplace(size=200_000)))
    laplace = entropy_amax(laplace_counts, laplace_top)
    assert percentile_amax(laplace_counts, laplace_top, 99.0) < laplace < percentile_amax(laplace_counts, laplace_top, 99.99)


def test_entropy_ignores_the_relu_zero_spike():
    rng = np.random.default_rng(1)
    positive = np.abs(rng.laplace(size=100_000))
    with_zeros = np.concatenate([positive, np.zeros(100_000)])
    counts, top = histogram_of(positive)
    zero_counts, _ = np.histogram(with_zeros, bins=HISTOGRAM_BINS, range=(0, top))
    assert entropy_amax(zero_counts, top) == pytest.approx(entropy_amax(counts, top), rel=0.05)


def test_calibration_images_come_from_the_train_split_only(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    picked = data.calibration_images(256, seed=3, data_dir=data_dir)
    train = {image.tobytes() for image in data.normalize(dataset.train_images)}
    assert all(image.tobytes() in train for image in picked)
    held_out = {image.tobytes() for image in data.normalize(np.concatenate([dataset.val_images, dataset.test_images]))}
    assert sum(image.tobytes() in held_out for image in picked) <= 2  # exact duplicates across splits only


@pytest.mark.parametrize("args, message", [
    (["--count", "0"], "--count"),
    (["--count", "55001"], "--count"),
    (["--method", "minmax"], "--method"),
])
def test_calibrate_command_refuses_bad_options(untrained_onnx, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--onnx", str(untrained_onnx), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_calibrate_command_refuses_a_bad_onnx(tmp_path, capsys):
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    for path in (tmp_path / "broken.onnx", tmp_path / "missing.onnx"):
        with pytest.raises(SystemExit) as exit_info:
            main(["calibrate", "--onnx", str(path), "--out-dir", str(tmp_path / "out")])
        assert exit_info.value.code == 2 and path.name in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_calibrate_help_has_an_example(capsys):
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    assert "resnet-deploy calibrate --onnx" in capsys.readouterr().out


def test_calibrate_command_writes_every_method(untrained_onnx, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--onnx", str(untrained_onnx), "--count", "64", "--out-dir", str(tmp_path),
              "--data-dir", str(data_dir)])
    assert exit_info.value.code == 0
    summary = json.loads((tmp_path / "tiny.calibration.json").read_text())
    assert set(summary["methods"]) == {"fp32", "entropy", "max", "percentile"}
    assert summary["best_method"] in METHODS
    assert "validation split" in capsys.readouterr().out


def test_calibrate_command_one_method_with_cpu_int8(untrained_onnx, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--onnx", str(untrained_onnx), "--method", "max", "--count", "64", "--seed", "3",
              "--cpu-int8", "--trt-version", "8.6.1", "--out-dir", str(tmp_path), "--data-dir", str(data_dir)])
    assert exit_info.value.code == 0
    stem = untrained_onnx.stem
    summary = json.loads((tmp_path / f"{stem}.calibration.json").read_text())
    assert set(summary["methods"]) == {"fp32", "max", "cpu"} and summary["best_method"] == "max"
    assert summary["calibration"] == {"split": "train", "count": 64, "seed": 3}
    header, scales = read_calibration_cache(tmp_path / f"{stem}.max.cache")
    assert header.version_code == 8601 and set(scales) == set(activation_tensors(onnx.load(str(untrained_onnx))))
    # The max range of the input is the largest |value| of the 64 normalized calibration images (seed 3).
    images = data.calibration_images(64, seed=3, data_dir=data_dir)
    assert scales["input"] == float(np.float32(float(np.abs(images).max()) / 127.0))
    assert (tmp_path / f"{stem}.int8-max.qdq.onnx").is_file() and (tmp_path / f"{stem}.int8-cpu.onnx").is_file()
    assert not list(tmp_path.glob("*entropy*")) and "(best)" in capsys.readouterr().out


# The entropy search as it was before it was vectorized (one clip index at a time), kept here as the
# reference that the vectorized search must agree with.
def looped_kl_search(histogram: np.ndarray, levels: int = QUANTIZED_LEVELS) -> int:
    bins = len(histogram)
    tails = np.concatenate([np.cumsum(histogram[::-1])[::-1], [0.0]])
    best_divergence, best_index = np.inf, bins
    for index in range(levels, bins + 1):
        reference = histogram[:index].copy()
        reference[-1] += tails[index]
        divergence = looped_kl_to_quantized(reference, histogram[:index], levels)
        if divergence < best_divergence:
            best_divergence, best_index = divergence, index
    return best_index


def looped_kl_to_quantized(reference: np.ndarray, clipped: np.ndarray, levels: int) -> float:
    nonzero = reference != 0
    starts = np.linspace(0, len(clipped), levels + 1).astype(int)[:-1]
    sums = np.add.reduceat(clipped, starts)
    counts = np.add.reduceat(nonzero.astype(np.float64), starts)
    per_bin = np.divide(sums, counts, out=np.zeros_like(sums), where=counts > 0)
    quantized = np.repeat(per_bin, np.diff(np.append(starts, len(clipped)))) * nonzero
    p, q = looped_smooth(reference), looped_smooth(quantized)
    if p is None or q is None:
        return np.inf
    mask = (p > 0) & (q > 0)
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def looped_smooth(counts: np.ndarray, eps: float = 1e-4) -> np.ndarray | None:
    zero = counts == 0
    n_zero, n_nonzero = int(zero.sum()), int((~zero).sum())
    if n_nonzero == 0:
        return None
    eps1 = eps * n_zero / n_nonzero
    if eps1 >= 1.0:
        return None
    dist = counts / counts.sum()
    return np.where(zero, eps, dist - eps1 * (~zero))


def synthetic_histograms() -> dict[str, np.ndarray]:
    """2048-bin histograms of the shapes the search meets, and of degenerate ones."""
    rng = np.random.default_rng(21)
    bins = HISTOGRAM_BINS

    def of(values):
        return np.histogram(values, bins=bins, range=(0, values.max()))[0].astype(np.float64)

    relu = np.maximum(rng.normal(size=300_000), 0)
    sparse = (rng.random(bins) < 0.05) * rng.integers(1, 40, bins).astype(np.float64)
    few = np.zeros(bins)
    few[[3, 700, 1500]] = [5, 2, 1]
    fractional = rng.random(bins) * (rng.random(bins) < 0.7)
    cauchy = np.abs(rng.standard_cauchy(200_000))
    cases = {"random counts": rng.integers(0, 1000, bins).astype(np.float64), "relu with its zero spike": of(relu),
             "laplace": of(np.abs(rng.laplace(size=200_000))), "cauchy, long sparse tail": of(cauchy),
             "sparse": sparse, "three nonzero bins": few, "fractional counts": fractional, "flat": np.ones(bins)}
    for position in (0, 1, 640, bins - 1):
        one = np.zeros(bins)
        one[position] = 1000
        cases[f"all in bin {position}"] = one
    return cases


@pytest.mark.parametrize("name", list(synthetic_histograms()))
def test_vectorized_kl_search_chooses_what_the_loop_chooses(name):
    histogram = synthetic_histograms()[name]
    zero_bin_levelled = np.r_[histogram[1], histogram[1:]]  # what entropy_amax searches
    assert kl_search(histogram, QUANTIZED_LEVELS) == looped_kl_search(histogram)
    assert kl_search(zero_bin_levelled, QUANTIZED_LEVELS) == looped_kl_search(zero_bin_levelled)


@pytest.mark.slow
def test_vectorized_kl_search_chooses_what_the_loop_chooses_on_real_activations(untrained_onnx, images):
    stats = collect_stats(untrained_onnx, images)
    searched = 0
    for name in stats.names:
        histogram = stats.histograms[name].astype(np.float64)
        histogram[0] = histogram[1]
        if histogram.sum() == 0 or spike_fraction(histogram) > SPIKE_FRACTION:
            continue  # not searched: entropy_amax returns the top or the percentile range
        assert kl_search(histogram, QUANTIZED_LEVELS) == looped_kl_search(histogram), name
        searched += 1
    assert searched > len(stats.names) / 2
