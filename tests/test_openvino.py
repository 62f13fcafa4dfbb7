"""The OpenVINO runner (`--backend openvino`): the same logits as ONNX Runtime on the FP32 graph, the CPU INT8
graph run as INT8 with the same predictions, the CLI through it, and a clear exit 3 where OpenVINO is missing."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import EnvironmentFailure
from resnet_deploy.runners import load_runner

pytest.importorskip("openvino")


@pytest.fixture(scope="module")
def val_images(data_dir) -> np.ndarray:
    return data.normalize(data.load_fashion_mnist(data_dir).val_images[:300])


@pytest.fixture(scope="module")
def cpu_int8(untrained_onnx, data_dir, tmp_path_factory):
    from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu

    path = tmp_path_factory.mktemp("openvino") / "int8-cpu.onnx"
    quantize_for_cpu(untrained_onnx, path, data.calibration_images(64, data_dir=data_dir))
    return path


def logits(path, backend, images, threads=0) -> np.ndarray:
    with load_runner(path, backend, threads=threads) as runner:
        return runner.infer({"input": images})["logits"]


def test_fp32_graph_gives_onnxruntime_logits(untrained_onnx, val_images):
    ort, ov = logits(untrained_onnx, "onnxruntime", val_images), logits(untrained_onnx, "openvino", val_images, 1)
    assert ov.shape == ort.shape == (300, 10)
    np.testing.assert_allclose(ov, ort, rtol=1e-4, atol=1e-4)


def test_cpu_int8_graph_runs_as_int8_with_the_same_predictions(untrained_onnx, cpu_int8, val_images):
    fp32 = logits(untrained_onnx, "onnxruntime", val_images)
    ort_int8, ov_int8 = logits(cpu_int8, "onnxruntime", val_images), logits(cpu_int8, "openvino", val_images)
    assert not np.allclose(ov_int8, fp32, atol=1e-4)  # quantized, not silently run in FP32
    assert np.abs(ov_int8 - ort_int8).max() < 0.1 * np.abs(ort_int8).max()
    assert (ov_int8.argmax(1) == ort_int8.argmax(1)).mean() >= 0.97


def test_runner_reports_the_graph_input_and_refuses_inactive_use(untrained_onnx):
    from resnet_deploy.runners.base import RunnerStateError
    from resnet_deploy.runners.openvino import OpenVinoRunner

    runner = load_runner(untrained_onnx, "openvino", threads=2)
    assert isinstance(runner, OpenVinoRunner) and runner.threads == 2
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    with runner:
        (meta,) = runner.input_metadata()
        assert (meta.name, meta.dtype, meta.shape) == ("input", np.dtype(np.float32), (-1, 1, 28, 28))
        assert runner.bytes_per_image() > 28 * 28 * 4


def test_parity_through_the_cli_runs_on_openvino_and_gates_it(cli, untrained_onnx, tmp_path):
    report_path = tmp_path / "parity.json"
    result = cli(
        "parity", "--checkpoint", untrained_onnx, untrained_onnx, "--backend", "openvino", "--json", report_path
    )
    assert result.code == 0, result.err
    (entry,) = json.loads(report_path.read_text())["artifacts"]
    assert (entry["backend"], entry["precision"]) == ("openvino", "fp32")
    assert entry["agreement"] >= 0.9999 and entry["logit_abs_diff"]["max"] < 1e-4


def test_missing_openvino_is_an_environment_failure(untrained_onnx, monkeypatch, cli):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(EnvironmentFailure, match=r"pip install 'resnet-deploy\[openvino\]'"):
        load_runner(untrained_onnx, "openvino").activate()
    result = cli("infer", untrained_onnx, "--backend", "openvino", "--count", "4")
    assert result.code == 3 and "resnet-deploy[openvino]" in result.err and "Traceback" not in result.err
