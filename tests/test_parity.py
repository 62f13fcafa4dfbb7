"""Accuracy parity: statistics, gates (FP32/FP16/INT8, baseline) and the `parity` command on real data."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_deploy import data, parity
from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.runners.torch_runner import TorchRunner

pytestmark = pytest.mark.runtime

LIMIT = 1000


@pytest.fixture(scope="module")
def test_split(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    return data.normalize(dataset.test_images[:LIMIT]), dataset.test_labels[:LIMIT]


def run_cli(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    return exit_info.value.code


def test_compare_statistics_on_known_logits():
    labels = np.array([0, 1, 1, 0])
    reference = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 2.0], [0.0, 2.0]])
    candidate = reference + np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 0.0], [0.0, 0.0]])
    result = parity.compare(reference, candidate, labels, ["zero", "one"])
    assert result["top1"] == 0.5 and result["top1_drop_pp"] == 25.0
    assert result["agreement"] == 0.75
    assert result["logit_abs_diff"]["max"] == 3.0 and result["logit_abs_diff"]["mean"] == 3.0 / 8
    assert result["per_class_delta_pp"] == {"zero": 0.0, "one": -50.0}


@pytest.mark.slow
def test_run_parity_reports_every_field(trained_checkpoint, trained_onnx, test_split):
    images, labels = test_split
    report = parity.run_parity(TorchRunner(trained_checkpoint), {"onnx": OnnxRuntimeRunner(trained_onnx)},
                               images, labels, precisions={"onnx": "fp32"})
    (entry,) = report["artifacts"]
    assert report["dataset"]["count"] == LIMIT and report["passed"]
    assert 0.6 < report["reference"]["top1"] == entry["top1"]
    assert entry["agreement"] >= parity.FP32_MIN_AGREEMENT and entry["logit_abs_diff"]["max"] < 1e-3
    assert set(entry["logit_abs_diff"]) == {"max", "mean", "p99"}
    assert list(entry["per_class_delta_pp"]) == list(data.CLASS_NAMES)
    assert entry["gates"] == [{"name": "fp32 agreement", "value": entry["agreement"],
                               "threshold": parity.FP32_MIN_AGREEMENT, "passed": True}]


@pytest.mark.slow
def test_int8_gate_fails_when_its_threshold_is_impossible(trained_checkpoint, trained_onnx, test_split):
    images, labels = test_split
    report = parity.run_parity(TorchRunner(trained_checkpoint), {"q": OnnxRuntimeRunner(trained_onnx)}, images, labels,
                               precisions={"q": "int8"}, max_drop_pp=-1.0)
    assert not report["passed"] and report["artifacts"][0]["gates"][0]["name"] == "int8 top1_drop_pp"


@pytest.mark.slow
def test_parity_command_writes_the_json_report(trained_checkpoint, trained_onnx, data_dir, tmp_path, capsys):
    report_path = tmp_path / "parity.json"
    code = run_cli("parity", "--checkpoint", str(trained_checkpoint), str(trained_onnx), "--limit", str(LIMIT),
                   "--data-dir", str(data_dir), "--json", str(report_path))
    assert code == 0
    report = json.loads(report_path.read_text())
    assert report["passed"] and report["artifacts"][0]["label"] == "tiny.onnx"
    assert report["artifacts"][0]["precision"] == "fp32" and report["thresholds"]["int8_max_drop_pp"] == 0.5
    assert "tiny.onnx" in capsys.readouterr().out


@pytest.mark.slow
def test_parity_command_exits_1_when_a_gate_fails(trained_checkpoint, trained_onnx, data_dir, tmp_path, monkeypatch,
                                                  capsys):
    monkeypatch.setattr(parity, "FP32_MIN_AGREEMENT", 1.01)
    report_path = tmp_path / "parity.json"
    code = run_cli("parity", "--checkpoint", str(trained_checkpoint), str(trained_onnx), "--limit", "200",
                   "--data-dir", str(data_dir), "--json", str(report_path))
    assert code == 1 and "gate failed" in capsys.readouterr().err
    assert not json.loads(report_path.read_text())["passed"]


@pytest.mark.slow
def test_baseline_gate_passes_then_fails_when_top1_falls(trained_checkpoint, trained_onnx, data_dir, tmp_path):
    baseline = tmp_path / "baseline.json"
    common = ["parity", "--checkpoint", str(trained_checkpoint), str(trained_onnx), "--limit", "500",
              "--data-dir", str(data_dir), "--json", str(tmp_path / "parity.json"), "--baseline", str(baseline)]
    assert run_cli(*common, "--update-baseline") == 0
    recorded = json.loads(baseline.read_text())
    assert set(recorded["top1"]) == {"tiny.onnx"} and recorded["count"] == 500
    assert run_cli(*common) == 0
    assert json.loads((tmp_path / "parity.json").read_text())["artifacts"][0]["gates"][-1]["passed"]
    recorded["top1"]["tiny.onnx"] += 0.002  # 0.2 pp better than this run: the 0.1 pp gate must fail
    baseline.write_text(json.dumps(recorded))
    assert run_cli(*common) == 1
    gate = json.loads((tmp_path / "parity.json").read_text())["artifacts"][0]["gates"][-1]
    assert gate["name"] == "baseline top1_drop_pp" and not gate["passed"]
    assert run_cli(*common, "--max-baseline-drop", "0.5") == 0


@pytest.mark.parametrize("content", ["not json", '{"top1": 3}', "[]"])
def test_malformed_baseline_exits_2_naming_it(trained_checkpoint, trained_onnx, data_dir, tmp_path, capsys, content):
    baseline = tmp_path / "bad-baseline.json"
    baseline.write_text(content)
    code = run_cli("parity", "--checkpoint", str(trained_checkpoint), str(trained_onnx), "--data-dir", str(data_dir),
                   "--json", str(tmp_path / "p.json"), "--baseline", str(baseline))
    assert code == 2 and "bad-baseline.json" in capsys.readouterr().err


def test_missing_artifact_exits_2_before_any_inference(trained_checkpoint, tmp_path, capsys):
    code = run_cli("parity", "--checkpoint", str(trained_checkpoint), str(tmp_path / "gone.onnx"),
                   "--json", str(tmp_path / "p.json"))
    assert code == 2 and "gone.onnx" in capsys.readouterr().err
    assert not (tmp_path / "p.json").exists()


@pytest.mark.parametrize("reference, artifacts, allowed", [
    ("fp32", ["fp32", "fp16", "int8"], True),
    ("int8", ["int8"], True),  # an INT8 engine against the Q/DQ graph it was built from
    ("fp16", ["fp16", "fp16"], True),
    ("fp16", ["fp32"], False),
    ("fp16", ["int8"], False),
    ("int8", ["int8", "fp16"], False),
])
def test_reference_is_fp32_or_of_every_artifacts_precision(reference, artifacts, allowed):
    precisions = {f"a{i}": p for i, p in enumerate(artifacts)}
    if allowed:
        parity.check_reference("ref.onnx", reference, precisions)
    else:
        with pytest.raises(ArtifactError, match=f"ref.onnx: is an {reference} graph; the parity reference must be"):
            parity.check_reference("ref.onnx", reference, precisions)
