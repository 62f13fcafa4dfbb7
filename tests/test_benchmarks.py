"""benchmarks/modelopt_ptq.py: its table, its refusal without ModelOpt, and (where ModelOpt imports)
the real comparison on the shared trained ONNX."""

import json
import sys

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def modelopt_ptq():
    return load_benchmark("modelopt_ptq")


def test_table_rows_and_unmeasured_seconds(modelopt_ptq):
    rows = [{"tool": "none (FP32)", "method": "-", "seconds": None, "val_top1": 0.9392},
            {"tool": "modelopt", "method": "max", "seconds": 1.234, "val_top1": 0.93915}]
    lines = modelopt_ptq.table(rows, "header").splitlines()
    assert lines[0] == "header"
    assert lines[-2] == "| none (FP32) | - | 93.92% | - |"
    assert lines[-1] == "| modelopt | max | 93.92% | 1.2 |"


def test_exit_2_without_modelopt(modelopt_ptq, monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "modelopt", None)
    assert modelopt_ptq.main([str(tmp_path / "m.onnx"), "--out-dir", str(tmp_path)]) == 2
    assert "modelopt is not installed" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_real_comparison(modelopt_ptq, trained_onnx, tmp_path):
    pytest.importorskip("modelopt.onnx.quantization")
    assert modelopt_ptq.main([str(trained_onnx), "--methods", "max", "--count", "64",
                              "--out-dir", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / f"modelopt-{trained_onnx.stem}.json").read_text())["rows"]
    assert [(row["tool"], row["method"]) for row in rows] == [("none (FP32)", "-"), ("resnet-deploy", "max"),
                                                              ("modelopt", "max")]
    fp32, ours, theirs = (row["val_top1"] for row in rows)
    assert abs(ours - fp32) < 0.02 and abs(theirs - fp32) < 0.02
