"""The accuracy gates on genuinely degraded artifacts of a trained model, through the CLI.

`parity` and `build` must exit 1 when one artifact of several is bad, with a report marking that
one failed and the others passed; each gate is tried just inside and just outside its limit with
artifacts built to move an exact number of test images (1 image of 2,000 is 0.05 pp; of 10,000
it is 0.01% agreement). The numbers the code computes are pinned against values computed here:
per-channel weight scales, the calibration cache's hex floats, the best calibration method.
"""

from __future__ import annotations

import json
import shutil
import struct

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.quantize.calibrate import METHODS
from resnet_deploy.quantize.fp16 import convert_to_fp16
from resnet_deploy.quantize.int8 import read_amax
from tests.degraded import (bias_shift_for, count_metric, ort_logits, ranges_scaled_qdq, with_bias_shift,
                            with_noisy_conv)

pytestmark = pytest.mark.slow

LIMIT = 2000  # test images in most runs: one image is 0.05 pp, the FP16 limit


def run_cli(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


def gates_by_label(report: dict) -> dict[str, list[bool]]:
    return {a["label"]: [g["passed"] for g in a["gates"]] for a in report["artifacts"]}


@pytest.fixture(scope="module")
def test_split(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    return data.normalize(dataset.test_images), dataset.test_labels


@pytest.fixture(scope="module")
def models(int8_artifacts, tmp_path_factory, test_split):
    """The trained FP32 graph, its FP16 and best Q/DQ graphs, and two bad ones, under distinct names."""
    fp32_source, paths, summary = int8_artifacts
    folder = tmp_path_factory.mktemp("degraded")
    fp32 = shutil.copyfile(fp32_source, folder / "model.onnx")
    fp16 = folder / "model.fp16.onnx"
    convert_to_fp16(fp32, fp16)
    best = summary["best_method"]
    found = {"fp32": fp32, "fp16": fp16, "int8": shutil.copyfile(paths.qdq(best), folder / "model.int8.qdq.onnx"),
             "fp16_noisy": with_noisy_conv(fp16, folder / "model.fp16-noisy.onnx"),
             "int8_small": ranges_scaled_qdq(fp32, read_amax(paths.amax(best)), folder / "model.int8-small.qdq.onnx",
                                             1 / 50)}
    images, labels = test_split
    reference = ort_logits(fp32, images[:LIMIT]).argmax(1)
    for key in ("fp16_noisy", "int8_small"):  # genuinely bad: more than 1 pp below the FP32 graph
        predicted = ort_logits(found[key], images[:LIMIT]).argmax(1)
        assert count_metric("drop", predicted, reference, labels[:LIMIT]) > LIMIT // 100, key
    return found


def exact_shift(src, dst, images, labels, reference, metric: str, target: int, room: float):
    """`src` with one class's bias shifted so that `metric` is exactly `target` (checked here); `room`:
    the least distance from the shift to the nearest image's margin (FP32 logits move by ~1e-6, FP16 ~1e-3)."""
    cls, delta, margin = bias_shift_for(ort_logits(src, images), reference, labels, metric, target)
    assert margin > room, f"no robust shift for {metric} = {target} (margin {margin:g})"
    with_bias_shift(src, dst, cls, delta)
    assert count_metric(metric, ort_logits(dst, images).argmax(1), reference, labels) == target
    return dst


def test_parity_fails_the_bad_artifacts_and_passes_the_good_ones_in_one_report(models, trained_checkpoint, data_dir,
                                                                               tmp_path, capsys, test_split):
    report_path = tmp_path / "parity.json"
    artifacts = [models[k] for k in ("fp32", "fp16", "fp16_noisy", "int8", "int8_small")]
    code = run_cli("parity", "--checkpoint", trained_checkpoint, *artifacts, "--limit", LIMIT, "--data-dir", data_dir,
                   "--json", report_path)
    err = " ".join(capsys.readouterr().err.split())
    report = json.loads(report_path.read_text())
    assert code == 1 and report["passed"] is False
    assert gates_by_label(report) == {"model.onnx": [True], "model.fp16.onnx": [True],
                                      "model.fp16-noisy.onnx": [False], "model.int8.qdq.onnx": [True],
                                      "model.int8-small.qdq.onnx": [False]}
    assert "model.fp16-noisy.onnx: fp16 top1_drop_pp" in err and "model.int8-small.qdq.onnx: int8 top1_drop_pp" in err
    assert "model.int8.qdq.onnx:" not in err and "model.fp16.onnx:" not in err
    images, labels = test_split
    for entry in report["artifacts"]:  # top-1 as ONNX Runtime gives it, image for image
        predicted = ort_logits(entry_path(models, entry["label"]), images[:LIMIT]).argmax(1)
        assert entry["top1"] == float((predicted == labels[:LIMIT]).mean()), entry["label"]


def entry_path(models, label):
    return next(p for p in models.values() if p.name == label)


def test_fp32_agreement_gate_at_one_and_two_disagreements_in_10k(models, data_dir, tmp_path, test_split):
    """99.99% of 10,000 images: one disagreement passes (exactly at the limit), two fail."""
    images, labels = test_split
    reference = ort_logits(models["fp32"], images).argmax(1)
    one = exact_shift(models["fp32"], tmp_path / "one.onnx", images, labels, reference, "disagreements", 1, 1e-4)
    two = exact_shift(models["fp32"], tmp_path / "two.onnx", images, labels, reference, "disagreements", 2, 1e-4)
    code = run_cli("parity", "--checkpoint", models["fp32"], one, two, "--data-dir", data_dir,
                   "--json", tmp_path / "p.json")
    report = json.loads((tmp_path / "p.json").read_text())
    assert code == 1 and gates_by_label(report) == {"one.onnx": [True], "two.onnx": [False]}
    assert [g["value"] for a in report["artifacts"] for g in a["gates"]] == [0.9999, 0.9998]
    assert report["dataset"]["count"] == 10_000


def test_fp16_gate_at_one_and_two_images_of_2000(models, data_dir, tmp_path, test_split):
    """An FP16 drop of 0.05 pp (one image in 2,000) passes, 0.10 pp fails: the INT8 limit (0.5 pp) would pass both."""
    images, labels = test_split[0][:LIMIT], test_split[1][:LIMIT]
    reference = ort_logits(models["fp32"], images).argmax(1)
    one = exact_shift(models["fp16"], tmp_path / "one.fp16.onnx", images, labels, reference, "drop", 1, 0.01)
    two = exact_shift(models["fp16"], tmp_path / "two.fp16.onnx", images, labels, reference, "drop", 2, 0.01)
    code = run_cli("parity", "--checkpoint", models["fp32"], one, two, "--limit", LIMIT, "--data-dir", data_dir,
                   "--json", tmp_path / "p.json")
    report = json.loads((tmp_path / "p.json").read_text())
    assert code == 1 and gates_by_label(report) == {"one.fp16.onnx": [True], "two.fp16.onnx": [False]}
    assert [(a["precision"], a["top1_drop_pp"]) for a in report["artifacts"]] == [("fp16", 0.05), ("fp16", 0.1)]
    assert {g["threshold"] for a in report["artifacts"] for g in a["gates"]} == {0.05}


def measured_drop_pp(models, key, test_split, reference_key="fp32") -> float:
    images, labels = test_split[0][:LIMIT], test_split[1][:LIMIT]
    reference = ort_logits(models[reference_key], images).argmax(1)
    drop = count_metric("drop", ort_logits(models[key], images).argmax(1), reference, labels)
    return round(drop * 100 / LIMIT, 2)


def test_int8_max_drop_just_above_and_just_below_the_measured_drop(models, data_dir, tmp_path, test_split):
    drop = measured_drop_pp(models, "int8_small", test_split)
    common = ["parity", "--checkpoint", models["fp32"], models["fp32"], models["int8_small"], "--limit", LIMIT,
              "--data-dir", data_dir, "--json", tmp_path / "p.json"]
    assert run_cli(*common, "--max-drop", f"{drop:.2f}") == 0
    report = json.loads((tmp_path / "p.json").read_text())
    assert report["artifacts"][1]["gates"][0] == {"name": "int8 top1_drop_pp", "value": drop, "threshold": drop,
                                                  "passed": True}
    assert run_cli(*common, "--max-drop", f"{drop - 0.05:.2f}") == 1
    report = json.loads((tmp_path / "p.json").read_text())
    assert gates_by_label(report) == {"model.onnx": [True], "model.int8-small.qdq.onnx": [False]}


def test_baseline_drop_just_above_and_just_below(models, data_dir, tmp_path, test_split):
    """The bad Q/DQ graph under the good one's name against a baseline recorded from the good one."""
    images, labels = test_split[0][:LIMIT], test_split[1][:LIMIT]
    top1 = {k: float((ort_logits(models[k], images).argmax(1) == labels).mean()) for k in ("fp32", "int8", "int8_small")}
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"top1": {"model.onnx": top1["fp32"], "model.int8.qdq.onnx": top1["int8"]}}))
    swapped = shutil.copyfile(models["int8_small"], tmp_path / "model.int8.qdq.onnx")
    fall = round((top1["int8"] - top1["int8_small"]) * 100, 2)
    common = ["parity", "--checkpoint", models["fp32"], models["fp32"], swapped, "--limit", LIMIT, "--max-drop", 100,
              "--data-dir", data_dir, "--json", tmp_path / "p.json", "--baseline", baseline]
    assert run_cli(*common, "--max-baseline-drop", f"{fall:.2f}") == 0
    assert run_cli(*common, "--max-baseline-drop", f"{fall - 0.05:.2f}") == 1
    report = json.loads((tmp_path / "p.json").read_text())
    assert gates_by_label(report) == {"model.onnx": [True, True], "model.int8.qdq.onnx": [True, False]}
    gate = report["artifacts"][1]["gates"][1]
    assert gate["name"] == "baseline top1_drop_pp" and gate["value"] == pytest.approx(fall, abs=1e-9)


# ---- build: a broken calibrator, a broken FP16 conversion -----------------------------------------------


def build_cli(tmp_path, monkeypatch, checkpoint, data_dir, *args) -> tuple[int, dict]:
    """`build` in `tmp_path` as on a host without TensorRT: the chain up to the parity report."""
    monkeypatch.chdir(tmp_path)
    code = run_cli("build", "--checkpoint", checkpoint, "--limit", LIMIT, "--data-dir", data_dir, *args)
    (report_path,) = (tmp_path / "reports").glob("parity-*.json")
    return code, json.loads(report_path.read_text())


def test_build_exits_1_when_calibration_ranges_are_50x_too_small(tmp_path, monkeypatch, trained_checkpoint, data_dir,
                                                                    no_tensorrt):
    from resnet_deploy.quantize import int8

    real = int8.calibrate_all

    def too_small(*args, **kwargs):
        amax, timings = real(*args, **kwargs)
        return {m: {name: value / 50 for name, value in ranges.items()} for m, ranges in amax.items()}, timings

    monkeypatch.setattr(int8, "calibrate_all", too_small)
    code, report = build_cli(tmp_path, monkeypatch, trained_checkpoint, data_dir, "--precision", "int8",
                             "--calibration-method", "max", "--calibration-count", 64)
    assert code == 1 and not report["passed"]
    assert [(a["precision"], a["gates"][0]["passed"]) for a in report["artifacts"]] == [("fp32", True), ("int8", False)]
    assert report["artifacts"][1]["top1_drop_pp"] > 1


def test_build_exits_1_when_the_fp16_conversion_perturbs_a_layer(tmp_path, monkeypatch, trained_checkpoint, data_dir,
                                                                  no_tensorrt):
    from resnet_deploy.quantize import fp16

    real = fp16.convert_to_fp16

    def perturbed(fp32_onnx, fp16_onnx):
        summary = real(fp32_onnx, fp16_onnx)
        with_noisy_conv(fp16_onnx, fp16_onnx)
        return summary

    monkeypatch.setattr(fp16, "convert_to_fp16", perturbed)
    code, report = build_cli(tmp_path, monkeypatch, trained_checkpoint, data_dir, "--precision", "fp16")
    assert code == 1 and not report["passed"]
    assert [(a["precision"], a["gates"][0]["passed"]) for a in report["artifacts"]] == [("fp32", True), ("fp16", False)]


# ---- numbers the code computes, pinned ---------------------------------------------------------------


def test_weight_scales_are_max_abs_per_output_channel_over_127(int8_artifacts):
    fp32_onnx, paths, summary = int8_artifacts
    fp32 = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(fp32_onnx)).graph.initializer}
    layers = [n for n in onnx.load(str(fp32_onnx)).graph.node if n.op_type in ("Conv", "Gemm")]
    qdq = onnx.load(str(paths.qdq(summary["best_method"])))
    initializers = {i.name: numpy_helper.to_array(i) for i in qdq.graph.initializer}
    dequantize = {n.output[0]: n for n in qdq.graph.node if n.op_type == "DequantizeLinear"}
    quantized_layers = [n for n in qdq.graph.node if n.op_type in ("Conv", "Gemm")]
    assert len(quantized_layers) == len(layers) > 10
    for original, node in zip(layers, quantized_layers):
        weight = fp32[original.input[1]]
        axis = 0 if original.op_type == "Conv" or any(a.name == "transB" and a.i for a in original.attribute) else 1
        other_axes = tuple(i for i in range(weight.ndim) if i != axis)
        expected = (np.abs(weight).max(axis=other_axes) / np.float32(127)).astype(np.float32)
        dq = dequantize[node.input[1]]
        scale, values = initializers[dq.input[1]], initializers[dq.input[0]]
        assert scale.dtype == np.float32 and scale.shape == (weight.shape[axis],), original.name
        assert np.array_equal(scale, expected), original.name
        assert [a.i for a in dq.attribute if a.name == "axis"] == [axis]
        shape = [-1 if i == axis else 1 for i in range(weight.ndim)]
        assert np.array_equal(values, np.clip(np.round(weight / expected.reshape(shape)), -127, 127).astype(np.int8))


def max_abs_activations(fp32_onnx, images: np.ndarray, names: list[str]) -> dict[str, float]:
    """max |x| of each named tensor over `images`, every tensor exposed as a graph output."""
    model = onnx.load(str(fp32_onnx))
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None)
                              for n in names if n not in known)
    import onnxruntime as ort

    options = ort.SessionOptions()  # no fusions: each tensor computed as the graph names it
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    peaks = dict.fromkeys(names, 0.0)
    for start in range(0, len(images), 128):
        for name, value in zip(outputs, session.run(outputs, {"input": images[start:start + 128]})):
            if name in peaks:
                peaks[name] = max(peaks[name], float(np.abs(value).max()))
    return peaks


def test_cache_lines_are_the_big_endian_float32_of_each_max_range_over_127(int8_artifacts, data_dir):
    """Every tensor of the max method's cache: `name: hex(float32(max |x| over the calibration images) / 127)`."""
    fp32_onnx, paths, summary = int8_artifacts
    lines = paths.cache("max").read_text().splitlines()
    entries = dict(line.rsplit(": ", 1) for line in lines[1:] if line)
    images = data.calibration_images(summary["calibration"]["count"], seed=0, data_dir=data_dir)
    peaks = max_abs_activations(fp32_onnx, images, list(entries))
    assert lines[0] == "TRT-100300-EntropyCalibration2" and len(entries) > 10
    for name, peak in peaks.items():
        assert peak > 0, name
        assert entries[name] == struct.pack(">f", peak / 127).hex(), name


def test_the_legacy_build_serves_the_cache_bits_unchanged(int8_artifacts, tmp_path, monkeypatch):
    """TensorRT 10 legacy path (fakes): the builder re-heads the cache but every scale reaches TensorRT bit for bit."""
    from resnet_deploy.trt.builder import build_engine
    from resnet_deploy.trt.settings import EngineSettings
    from tests import fakes

    fp32_onnx, paths, _ = int8_artifacts
    fakes.install(monkeypatch, "10.3")
    amax = read_amax(paths.amax("max"))
    info = build_engine(fp32_onnx, EngineSettings(precision="int8", legacy_calibrator=True), tmp_path,
                        calibration_cache=paths.cache("max"), log=lambda _: None)
    plan = json.loads(info.engine_path.read_bytes())
    expected = {name: struct.pack(">f", max(value, 1e-8) / 127).hex()
                for name, value in amax.items()}
    assert plan["scales"] == expected


def test_the_best_method_is_the_best_on_validation(int8_artifacts, int8_build, data_dir):
    """Each method's validation top-1 as ONNX Runtime gives it with the Q/DQ pairs simulated (session flag
    disable_quant_qdq, as `make_int8_artifacts` scores them); the best one (entropy on a tie) is kept and gated."""
    _, paths, summary = int8_artifacts
    dataset = data.load_fashion_mnist(data_dir)
    images, labels = data.normalize(dataset.val_images), dataset.val_labels
    scores = {m: float((ort_logits(paths.qdq(m), images, simulate_qdq=True).argmax(1) == labels).mean())
              for m in METHODS}
    assert scores == {m: summary["methods"][m]["val_top1"] for m in METHODS}
    best = max(METHODS, key=lambda m: (scores[m], m == "entropy"))
    assert summary["best_method"] == best
    assert int8_build[1].artifact == paths.qdq(best)
    assert int8_build[1].parity["artifacts"][-1]["label"] == paths.qdq(best).name
