"""Runners: state errors, metadata with a dynamic batch, PyTorch vs ONNX Runtime on real images."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.runners import BACKENDS, RunnerStateError, artifact_labels, backend_for, load_runner
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.runners.torch_runner import TorchRunner

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def tiny_model():
    """The model `untrained_onnx` was exported from (same seed and width)."""
    torch = pytest.importorskip("torch")
    from resnet_deploy.models import create_model

    torch.manual_seed(0)
    return create_model("resnet18", width=0.125).eval()


@pytest.fixture(scope="module")
def tiny_onnx(untrained_onnx):
    return untrained_onnx


def make_runner(backend: str, request):
    """A torch or ONNX Runtime runner of the same tiny model, asking only for the fixture it needs."""
    if backend == "torch":
        return TorchRunner(request.getfixturevalue("tiny_model"))
    return OnnxRuntimeRunner(request.getfixturevalue("tiny_onnx"))


@pytest.fixture(scope="module")
def test_images(data_dir) -> np.ndarray:
    return data.normalize(data.load_fashion_mnist(data_dir).test_images[:64])


def test_backends_and_suffixes():
    assert BACKENDS == ("torch", "onnxruntime", "openvino", "tensorrt")
    assert [backend_for(f"a/b{suffix}") for suffix in (".pt", ".pth", ".onnx", ".engine", ".plan")] == [
        "torch", "torch", "onnxruntime", "tensorrt", "tensorrt"]
    assert backend_for("a/b.onnx", "tensorrt") == "tensorrt" and backend_for("a/b.onnx", "openvino") == "openvino"
    assert backend_for("a/b.pth", "onnxruntime") == backend_for("a/B.PT", "tensorrt") == "torch"
    with pytest.raises(ResnetDeployError, match="suffix"):
        backend_for("model.bin")
    with pytest.raises(ResnetDeployError, match="unknown backend"):
        backend_for("model.onnx", "tvm")


def test_labels_are_file_names_unless_two_artifacts_share_one():
    assert artifact_labels(["a/m.onnx", "b/n.onnx"]) == ["m.onnx", "n.onnx"]
    assert artifact_labels(["a/m.onnx", "b/m.onnx", "c/x.pt"]) == ["a/m.onnx", "b/m.onnx", "x.pt"]
    with pytest.raises(ResnetDeployError, match="a/m.onnx: given more than once"):
        artifact_labels(["a/m.onnx", "./a/m.onnx"])


def test_threads_reach_each_backend_under_its_own_name(trained_checkpoint, tiny_onnx, tmp_path):
    import shutil

    import torch

    onnx_runner = load_runner(tiny_onnx, threads=3)
    assert isinstance(onnx_runner, OnnxRuntimeRunner) and onnx_runner.intra_op_threads == 3
    pth = shutil.copy(trained_checkpoint, tmp_path / "m.pth")
    shutil.copy(trained_checkpoint.with_suffix(".json"), tmp_path / "m.json")
    before = torch.get_num_threads()
    other = 1 if before > 1 else 2
    with load_runner(pth, "onnxruntime", threads=other) as torch_runner:
        assert isinstance(torch_runner, TorchRunner) and torch.get_num_threads() == other
    assert torch.get_num_threads() == before


def test_load_runner_refuses_missing_files_and_foreign_onnx_before_running(tmp_path):
    from tests.classifier_graphs import write_classifier

    with pytest.raises(ArtifactError, match="gone.pth: file not found"):
        load_runner(tmp_path / "gone.pth")
    (tmp_path / "folder.onnx").mkdir()
    with pytest.raises(ArtifactError, match="folder.onnx: is a folder"):
        load_runner(tmp_path / "folder.onnx")
    foreign = write_classifier(tmp_path / "rgb.onnx", channels=3)
    with pytest.raises(ArtifactError, match=r"rgb.onnx: not a Fashion-MNIST classifier: expected .* found inputs "
                                            r"'input' \[N, 3, 28, 28\] float32"):
        load_runner(foreign)


@pytest.mark.parametrize("make", ["torch", "onnxruntime"])
def test_infer_before_activate_raises(make, request, test_images):
    runner = make_runner(make, request)
    with pytest.raises(RunnerStateError, match="activate"):
        runner.infer({"input": test_images[:1]})
    with pytest.raises(RunnerStateError):
        runner.input_metadata()
    runner.activate()
    with pytest.raises(RunnerStateError, match="already active"):
        runner.activate()
    runner.deactivate()
    runner.deactivate()
    assert not runner.is_active
    with pytest.raises(RunnerStateError):
        runner.infer({"input": test_images[:1]})


@pytest.mark.parametrize("make", ["torch", "onnxruntime"])
def test_metadata_has_dynamic_batch(make, request):
    runner = make_runner(make, request)
    with runner:
        (meta,) = runner.input_metadata()
    assert meta.name == "input"
    assert meta.dtype == np.float32
    assert meta.shape == (-1, 1, 28, 28)


def test_onnxruntime_matches_torch_on_real_images(tiny_model, tiny_onnx, test_images):
    with TorchRunner(tiny_model) as reference, OnnxRuntimeRunner(tiny_onnx, intra_op_threads=1) as candidate:
        expected = reference.infer({"input": test_images})["logits"]
        got = candidate.infer({"input": test_images})["logits"]
        assert candidate.last_inference_time > 0
    assert got.shape == (64, 10)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_session_settings_reach_onnxruntime(tiny_onnx, test_images):
    import onnxruntime as ort

    default = OnnxRuntimeRunner(tiny_onnx)._options()
    with pytest.raises(RuntimeError, match="allow_spinning"):  # not set: ONNX Runtime's default
        default.get_session_config_entry("session.intra_op.allow_spinning")
    assert default.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert not default.enable_profiling
    tuned = OnnxRuntimeRunner(tiny_onnx, allow_spinning=False, graph_optimization="basic")._options()
    assert tuned.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert tuned.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    spinning = OnnxRuntimeRunner(tiny_onnx, allow_spinning=True, graph_optimization="extended")._options()
    assert spinning.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert spinning.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    with (
        OnnxRuntimeRunner(tiny_onnx, ["CPUExecutionProvider"], 1) as all_opt,
        OnnxRuntimeRunner(
            tiny_onnx, ["CPUExecutionProvider"], 1, allow_spinning=False, graph_optimization="basic"
        ) as basic,
    ):
        # a single feed under another name goes to the graph's input
        np.testing.assert_allclose(
            basic.infer({"images": test_images})["logits"], all_opt.infer({"input": test_images})["logits"], atol=1e-4
        )
    with pytest.raises(ValueError, match="'layout': use one of basic, extended, all"):
        OnnxRuntimeRunner(tiny_onnx, graph_optimization="layout")


def test_profiler_trace_has_every_run(tiny_onnx, test_images, tmp_path):
    import json

    runner = OnnxRuntimeRunner(tiny_onnx, ["CPUExecutionProvider"], 1, profile_prefix=tmp_path / "ort")
    with runner:
        for _ in range(3):
            runner.infer({"input": test_images[:1]})
        trace = runner.end_profiling()
    assert trace.parent == tmp_path and trace.name.startswith("ort")
    events = json.loads(trace.read_text())
    assert sum(e["name"] == "model_run" for e in events) == 3
    assert {e["args"]["op_name"] for e in events if e.get("cat") == "Node"} >= {"Conv", "Gemm"}
    with pytest.raises(RunnerStateError, match="end_profiling"):
        runner.end_profiling()


def test_load_runner_picks_backend_by_suffix(trained_checkpoint, tiny_onnx, data_dir):
    torch_runner = load_runner(trained_checkpoint)
    ort_runner = load_runner(tiny_onnx, providers=["CPUExecutionProvider"])
    assert isinstance(torch_runner, TorchRunner) and isinstance(ort_runner, OnnxRuntimeRunner)
    dataset = data.load_fashion_mnist(data_dir)
    with torch_runner:
        logits = torch_runner.infer({"input": data.normalize(dataset.test_images[:500])})["logits"]
    assert (logits.argmax(1) == dataset.test_labels[:500]).mean() > 0.6


def test_missing_and_corrupt_onnx_raise_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="missing.onnx"):
        OnnxRuntimeRunner(tmp_path / "missing.onnx").activate()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07 not a protobuf model")
    with pytest.raises(ArtifactError, match="corrupt.onnx"):
        OnnxRuntimeRunner(corrupt).activate()


def test_runtime_path_does_not_import_torch_or_tensorrt():
    """The engine runtime (Jetson, no torch) imports the runners, parity, bench and every CLI command without torch."""
    import subprocess
    import sys

    code = ("import sys, resnet_deploy.runners, resnet_deploy.runners.onnxrt, resnet_deploy.parity, "
            "resnet_deploy.onnx_info, resnet_deploy.onnx_io, resnet_deploy.bench, resnet_deploy.cli; "
            "print(sorted({'torch', 'tensorrt', 'pycuda'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
