"""`build --onnx` of an FP16 or INT8 Q/DQ graph gates its parity against the FP32 reference (issue 18):
found by the sha256 its reports record, or given with --reference; without one, exit 2 naming what is
missing; a graph that fails the gate exits 1. Runs as on a host without TensorRT."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from resnet_deploy import data
from resnet_deploy.cli import main

LIMIT = "500"


def linear_classifier(path: Path, data_dir: Path) -> Path:
    """A tiny real model without training: Flatten -> Gemm, least squares on 10k real train images (~80% top-1)."""
    from onnx import TensorProto, helper, numpy_helper

    dataset = data.load_fashion_mnist(data_dir)
    x = data.normalize(dataset.train_images[:10000]).reshape(10000, -1)
    x = np.hstack([x, np.ones((len(x), 1), np.float32)])
    solution = np.linalg.lstsq(x, np.eye(10, dtype=np.float32)[dataset.train_labels[:10000]], rcond=None)[0]
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
         helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc")], "linear",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 1, 28, 28])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(solution[:-1].astype(np.float32), "fc.weight"),
         numpy_helper.from_array(solution[-1].astype(np.float32), "fc.bias")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


@pytest.fixture(scope="module")
def calibrated(data_dir, tmp_path_factory):
    """`calibrate`-style artifacts of the linear model: <root>/artifacts/tiny.onnx and, in
    <root>/calibration, its `max` Q/DQ graph and calibration summary (64 train images)."""
    from resnet_deploy.quantize.int8 import Int8Paths, make_int8_artifacts

    root = tmp_path_factory.mktemp("reference")
    fp32 = linear_classifier(root / "artifacts" / "tiny.onnx", data_dir)
    make_int8_artifacts(fp32, root / "calibration", methods=("max",), count=64, data_dir=data_dir)
    return fp32, Int8Paths(root / "calibration", "tiny").qdq("max")


def _build(tmp_path, monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--limit", LIMIT, *args])
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    return exit_info.value.code, captured.out, captured.err.strip()


def test_qdq_graph_finds_its_reference_by_sha256_and_is_gated(calibrated, tmp_path, monkeypatch, capsys, no_tensorrt):
    fp32, qdq = calibrated
    code, out, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(qdq), "--precision", "int8", "--max-drop", "5")
    assert code == 0, err
    assert f"parity reference: {fp32}" in out
    report = json.loads((tmp_path / "reports" / f"parity-{qdq.stem}-int8.json").read_text())
    assert report["passed"] and [a["precision"] for a in report["artifacts"]] == ["int8"]
    assert report["dataset"]["count"] == int(LIMIT)
    assert f"--reference {fp32}" in " ".join(out.split())  # the command suggested for the target gates it too


def test_broken_qdq_graph_fails_the_gate_with_exit_1(calibrated, tmp_path, monkeypatch, capsys, no_tensorrt):
    from resnet_deploy.onnx_io import load_onnx
    from resnet_deploy.quantize.qdq import qdq_model

    fp32, _ = calibrated
    amax = json.loads((fp32.parent.parent / "calibration" / "tiny.max.amax.json").read_text())
    broken = qdq_model(load_onnx(fp32), {name: value * 1e4 for name, value in amax.items()})  # every activation -> 0
    path = tmp_path / "broken.qdq.onnx"
    onnx.save(broken, str(path))
    code, out, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(path), "--precision", "int8",
                            "--reference", str(fp32))
    assert code == 1 and len(err.splitlines()) == 1 and "parity gate failed" in err, err
    assert "The portable artifacts are ready" not in out


def test_without_a_reference_exit_2_says_what_is_missing(calibrated, tmp_path, monkeypatch, capsys, no_tensorrt):
    _, qdq = calibrated
    alone = tmp_path / "alone" / qdq.name
    alone.parent.mkdir()
    shutil.copyfile(qdq, alone)
    code, _, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(alone), "--precision", "int8")
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{alone}: no FP32 reference to gate this int8 graph's parity against" in err and "--reference" in err
    assert not (tmp_path / "reports").exists()


def test_a_changed_source_is_not_taken_as_the_reference(calibrated, tmp_path, monkeypatch, capsys, no_tensorrt):
    fp32, qdq = calibrated
    copy = tmp_path / "copy"
    shutil.copytree(fp32.parent.parent, copy)
    with open(copy / "artifacts" / "tiny.onnx", "ab") as changed:
        changed.write(b"\0")
    summary = json.loads((copy / "calibration" / "tiny.calibration.json").read_text())
    summary["source_onnx"] = str(copy / "artifacts" / "tiny.onnx")
    (copy / "calibration" / "tiny.calibration.json").write_text(json.dumps(summary))
    code, _, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(copy / "calibration" / qdq.name))
    assert code == 2 and "no FP32 reference" in err, err


def test_fp16_graph_finds_the_fp32_graph_its_stage_record_names(calibrated, tmp_path, monkeypatch, capsys,
                                                                no_tensorrt):
    fp32 = tmp_path / "m.onnx"
    shutil.copyfile(calibrated[0], fp32)
    code, _, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(fp32), "--precision", "fp16")
    assert code == 0, err
    code, out, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(tmp_path / "m.fp16.onnx"),
                            "--precision", "fp16")
    assert code == 0, err
    assert f"parity reference: {fp32}" in out
    report = json.loads((tmp_path / "reports" / "parity-m.fp16-fp16.json").read_text())
    assert report["passed"] and [a["precision"] for a in report["artifacts"]] == ["fp16"]


@pytest.mark.parametrize("onnx_given", [True, False])
def test_reference_without_an_fp16_or_int8_onnx_is_exit_2(calibrated, tmp_path, monkeypatch, capsys, onnx_given,
                                                          no_tensorrt):
    fp32, _ = calibrated
    args = ["--onnx", str(fp32)] if onnx_given else ["--checkpoint", str(tmp_path / "none.pt")]
    code, _, err = _build(tmp_path, monkeypatch, capsys, *args, "--reference", str(fp32))
    assert code == 2 and len(err.splitlines()) == 1 and "--reference gates an FP16 or INT8 graph" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_the_zero_scale_graph_never_reaches_the_gate(calibrated, tmp_path, monkeypatch, capsys, no_tensorrt):
    from onnx import numpy_helper

    fp32, qdq = calibrated
    model = onnx.load(str(qdq))
    scale = next(i for i in model.graph.initializer if i.name.endswith("_qdq_scale"))
    scale.CopyFrom(numpy_helper.from_array(np.array(0.0, np.float32), scale.name))
    path = tmp_path / "zero.qdq.onnx"
    onnx.save(model, str(path))
    code, _, err = _build(tmp_path, monkeypatch, capsys, "--onnx", str(path), "--reference", str(fp32))
    assert code == 2 and f"{path}: QuantizeLinear node" in err and "is 0, not a positive normal float32" in err
