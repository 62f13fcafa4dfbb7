"""The pycuda loop and TensorRT runner against the recording fakes (unit tests of our adapter, no GPU)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.cuda import DeviceInfo
from resnet_deploy.engine import build_engine
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.export import export_onnx
from resnet_deploy.models import create_model
from resnet_deploy.runners import RunnerStateError, load_runner
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.sidecar import check_compatible, read_sidecar, sidecar_path
from tests.fakes import fake_pycuda, fake_tensorrt

ORIN = DeviceInfo(0, "NVIDIA Jetson AGX Orin", "8.7")


@pytest.fixture
def fakes(monkeypatch):
    rec = fake_pycuda.install(monkeypatch)
    trt = fake_tensorrt.install(monkeypatch, "10.3", device_memory=rec.memory)
    trt.calls = rec.calls
    return rec, trt


@pytest.fixture(scope="module")
def onnx_path(tmp_path_factory):
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("trt") / "tiny.onnx"
    export_onnx(create_model("resnet18", width=0.0625).eval(), path)
    return path


@pytest.fixture
def engine(fakes, onnx_path, tmp_path):
    return build_engine(onnx_path, tmp_path, precision="fp32", opt_batch=8, max_batch=16, device_info=ORIN,
                        log=lambda _: None).engine_path


def test_runner_matches_onnx_runtime_on_real_images(engine, onnx_path, data_dir):
    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:12])
    with load_runner(engine) as runner:
        meta = runner.input_metadata()[0]
        assert (meta.name, meta.shape, meta.dtype) == ("input", (-1, 1, 28, 28), np.float32)
        logits = runner.infer({"input": images})["logits"]
        assert set(runner.last_timings) == {"h2d", "compute", "d2h", "enqueue"}
        assert runner.last_timings["compute"] > 0
    with OnnxRuntimeRunner(onnx_path) as reference:
        np.testing.assert_allclose(logits, reference.infer({"input": images})["logits"], rtol=1e-5, atol=1e-5)


def test_loop_order_on_one_stream_and_everything_freed(fakes, engine):
    rec, _ = fakes
    with load_runner(engine) as runner:
        start = len(rec.calls)
        runner.infer({"input": np.zeros((3, 1, 28, 28), np.float32)})
        calls = [c for c in rec.calls[start:] if c[0] != "event"]
    names = [c[1] if c[0] in ("IExecutionContext",) else c[0] for c in calls]
    assert names.index("set_input_shape") < names.index("set_tensor_address") < names.index("htod")
    assert names.index("htod") < names.index("execute_async_v3") < names.index("dtoh") < names.index("synchronize")
    assert calls[names.index("set_input_shape")][3] == (3, 1, 28, 28)
    assert sum(n == "set_tensor_address" for n in names) == 2
    handles = {c[-1] for c in calls if c[0] in ("htod", "dtoh", "synchronize")}
    handles.add(calls[names.index("execute_async_v3")][2])
    assert handles == {0xABC}
    assert set(rec.memory) == rec.freed, "every device allocation is freed on deactivate"
    assert rec.context_depth == 0 and ("detach",) in rec.calls


def test_buffers_are_pinned_and_sized_for_the_max_batch(fakes, engine):
    rec, _ = fakes
    with load_runner(engine) as runner:
        assert runner.max_batch == 16
        sizes = sorted(array.size for array in rec.pinned)
        assert sizes == [16 * 10, 16 * 28 * 28]


def test_batch_beyond_the_profile_is_a_clear_error(engine):
    with load_runner(engine) as runner:
        with pytest.raises(ResnetDeployError, match="batch 17 is outside the engine's profile 1..16"):
            runner.infer({"input": np.zeros((17, 1, 28, 28), np.float32)})


def test_infer_after_deactivate_is_an_error_not_a_crash(engine):
    runner = load_runner(engine)
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    runner.activate()
    runner.deactivate()
    runner.deactivate()
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})


def rewrite_sidecar(engine, **changes):
    path = sidecar_path(engine)
    sidecar = json.loads(path.read_text())
    sidecar.update(changes)
    path.write_text(json.dumps(sidecar))


@pytest.mark.parametrize("changes, message", [
    ({"tensorrt_version": "10.16.1.11"}, "built with TensorRT 10.16.1.11, this runtime is TensorRT 10.3.0"),
    ({"compute_capability": "9.0"}, "built for compute capability 9.0"),
])
def test_mismatched_engine_is_refused_before_deserializing(fakes, engine, changes, message, capsys):
    rec, _ = fakes
    rewrite_sidecar(engine, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_runner(engine).activate()
    assert not any(c[1] == "deserialize_cuda_engine" for c in rec.calls if len(c) > 1)
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", str(engine), "--count", "2"])
    assert exit_info.value.code == 2 and "rebuild" in capsys.readouterr().err


def test_compatibility_rules():
    sidecar = {"tensorrt_version": "10.3.0", "compute_capability": "8.6", "precision": "fp16"}
    check_compatible(sidecar, "10.3.0", "8.6")
    with pytest.raises(ArtifactError):
        check_compatible(sidecar, "10.3.0", "8.9")
    check_compatible({**sidecar, "hardware_compatibility": "ampere_plus"}, "10.3.0", "8.9")
    with pytest.raises(ArtifactError):
        check_compatible({**sidecar, "hardware_compatibility": "ampere_plus"}, "10.3.0", "7.5")
    check_compatible({**sidecar, "version_compatible": True}, "10.16.1.11", "8.6")
    with pytest.raises(ArtifactError):
        check_compatible({**sidecar, "version_compatible": True}, "11.4.0.106", "8.6")


def test_missing_or_broken_sidecar_is_refused(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="no sidecar x.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{")
    with pytest.raises(ArtifactError, match="malformed JSON"):
        read_sidecar(engine)


def test_parity_accepts_the_tensorrt_backend(engine, onnx_path, data_dir, tmp_path):
    from resnet_deploy.parity import parity_for_artifacts

    report = parity_for_artifacts(onnx_path, [engine], tmp_path / "p.json", limit=256, data_dir=data_dir)
    (entry,) = report["artifacts"]
    assert entry["backend"] == "tensorrt" and entry["agreement"] == 1.0


def test_inspect_prints_the_engine_sidecar(engine, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(engine)])
    assert exit_info.value.code == 0 and '"compute_capability": "8.7"' in capsys.readouterr().out


def test_engine_runtime_imports_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import resnet_deploy.runners.tensorrt, resnet_deploy.cuda, resnet_deploy.sidecar, resnet_deploy.engine\n"
            "import resnet_deploy.parity, resnet_deploy.bench, resnet_deploy.cli\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
