"""benchmarks/inference.py on the trained tiny model: every runner in one interleaved run (OpenVINO where it is
installed), top-1 of each on the same test images, and goals computed from that run's own numbers."""

from __future__ import annotations

import importlib.util
import json

import pytest

from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def inference():
    return load_benchmark("inference")


@pytest.fixture(scope="module")
def report(inference, trained_checkpoint, data_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("bench-inference")
    args = [
        "--checkpoint",
        str(trained_checkpoint),
        "--batch-sizes",
        "1,4",
        "--duration-s",
        "0.05",
        "--threads",
        "1",
        "--accuracy-images",
        "300",
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(out),
    ]
    assert inference.main(args) == 0
    (path,) = out.glob("inference-*.json")
    assert (out / f"{path.stem}.md").read_text().startswith("Model resnet18-w0.125")
    return json.loads(path.read_text())


def test_every_runner_at_every_batch_size(report):
    runners = {
        "pytorch eager fp32",
        "onnxruntime fp32",
        "onnxruntime int8 (TensorRT-style Q/DQ)",
        "onnxruntime int8 (CPU target)",
    }
    if importlib.util.find_spec("openvino"):
        runners |= {"openvino fp32", "openvino int8 (TensorRT-style Q/DQ)", "openvino int8 (CPU target)"}
        assert report["openvino"]
    assert set(report["results"]) == {"1", "4"}
    assert all(set(entries) == runners for entries in report["results"].values())
    assert set(report["accuracy"]) == runners
    assert isinstance(report["fingerprint"]["isa"], list) and report["fingerprint"]["versions"]["onnxruntime"]


def test_accuracy_is_measured_and_the_drop_is_against_onnxruntime_fp32(report):
    accuracy = report["accuracy"]
    assert accuracy["onnxruntime fp32"]["drop_pp"] == 0 and accuracy["onnxruntime fp32"]["top1"] > 0.5
    assert accuracy["pytorch eager fp32"]["top1"] == pytest.approx(accuracy["onnxruntime fp32"]["top1"], abs=0.005)
    for entry in accuracy.values():
        assert entry["drop_pp"] == round(100 * (accuracy["onnxruntime fp32"]["top1"] - entry["top1"]), 3)


def test_goals_come_from_this_runs_medians(report, inference):
    speed = [g for g in report["goals"] if g["batch"] is not None]
    assert [(g["runner"], g["batch"]) for g in speed] == [("onnxruntime fp32", 1), ("onnxruntime int8 (CPU target)", 1)]
    for goal in speed:
        entries = report["results"][str(goal["batch"])]
        ratio = entries[goal["versus"]]["latency_ms"]["median"] / entries[goal["runner"]]["latency_ms"]["median"]
        assert goal["measured"] == f"{ratio:.2f}x"
        assert goal["met"] == (ratio >= float(goal["wanted"].removeprefix(">= ").removesuffix("x")))
    drops = [g for g in report["goals"] if g["batch"] is None]
    assert {g["runner"] for g in drops} == {label for label in report["accuracy"] if "int8" in label}
    for goal in drops:
        assert goal["met"] == (report["accuracy"][goal["runner"]]["drop_pp"] <= inference.MAX_INT8_DROP_PP)


def test_int8_layers_groups_every_convolution_of_both_graphs(untrained_onnx, data_dir, tmp_path):
    module = load_benchmark("int8_layers")
    from resnet_deploy import data
    from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu

    quantize_for_cpu(untrained_onnx, tmp_path / "int8.onnx", data.calibration_images(32, data_dir=data_dir))
    args = [
        "--onnx",
        str(untrained_onnx),
        "--cpu-int8",
        str(tmp_path / "int8.onnx"),
        "--batch",
        "8",
        "--runs",
        "1",
        "--data-dir",
        str(data_dir),
        "--out-dir",
        str(tmp_path),
    ]
    assert module.main(args) == 0
    report = json.loads((tmp_path / f"int8-layers-{untrained_onnx.stem}.json").read_text())
    convs = {row["group"]: row for row in report["rows"] if "conv" in row["group"]}
    # resnet18 w0.125: the stem, then 8, 16, 32, 64 channels at 28, 14, 7 and 4 pixels (shortcuts: 1x1 projections)
    assert sorted(convs) == ["convs /14x14", "convs /28x28", "convs /4x4", "convs /7x7", "stem conv"]
    assert [convs[g]["nodes"] for g in ("stem conv", "convs /28x28", "convs /14x14")] == [1, 4, 5]
    assert convs["convs /14x14"]["layers"] == "1x1 8->16, 3x3 8->16, 3x3 16->16"
    for row in convs.values():
        assert row["fp32_ms"] > 0 and row["int8_ms"] > 0 and row["fp32_gmacs"] > 0
        assert abs(row["speedup"] - row["fp32_ms"] / row["int8_ms"]) < 0.01 * row["speedup"] + 0.006
    assert report["total_ms"]["int8"] == pytest.approx(sum(r["int8_ms"] or 0 for r in report["rows"]), abs=0.05)
    assert any(row["group"] == "QLinearAdd" and row["fp32_ms"] is None for row in report["rows"])
