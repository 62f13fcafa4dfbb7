"""The pycuda loop and the TensorRT runner against the recording fakes (unit tests of our adapter, no GPU)."""

from __future__ import annotations

import subprocess
import sys
import threading

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.engine import build_engine
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.runners import RunnerStateError, load_runner
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from tests.fakes import fake_pycuda, fake_tensorrt
from tests.fakes.graphs import ORIN, tiny_graphs

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tiny_graphs(tmp_path_factory.mktemp("loop"))


@pytest.fixture(params=["10.3", "11.4"])
def fakes(monkeypatch, request):
    rec = fake_pycuda.install(monkeypatch)
    trt = fake_tensorrt.install(monkeypatch, request.param, device_memory=rec.memory)
    trt.calls = rec.calls
    return rec, trt


@pytest.fixture
def engine(fakes, graphs, tmp_path):
    return build_engine(graphs["fp32"], tmp_path, precision="fp32", opt_batch=8, max_batch=16, device_info=ORIN,
                        log=lambda _: None).engine_path


def test_runner_matches_onnx_runtime_on_real_images(engine, graphs, data_dir):
    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:12])
    with load_runner(engine) as runner:
        meta = runner.input_metadata()[0]
        assert (meta.name, meta.shape, meta.dtype) == ("input", (-1, 1, 28, 28), np.float32)
        logits = runner.infer({"input": images})["logits"]
        assert set(runner.last_timings) == {"h2d", "compute", "d2h", "enqueue"}
        assert all(runner.last_timings[k] > 0 for k in ("h2d", "compute", "d2h"))
        smaller = runner.infer({"input": images[:5]})["logits"]
    with OnnxRuntimeRunner(graphs["fp32"]) as reference:
        np.testing.assert_allclose(logits, reference.infer({"input": images})["logits"], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(smaller, logits[:5], rtol=1e-5, atol=1e-5)


def test_loop_order_on_one_stream_and_everything_freed(fakes, engine):
    rec, _ = fakes
    with load_runner(engine) as runner:
        start = len(rec.calls)
        runner.infer({"input": np.zeros((3, 1, 28, 28), np.float32)})
        calls = [c for c in rec.calls[start:] if c[0] not in ("event", "push", "pop")]
    names = [c[1] if c[0] == "IExecutionContext" else c[0] for c in calls]
    addresses = [i for i, n in enumerate(names) if n == "set_tensor_address"]
    assert names.index("set_input_shape") < addresses[0] and addresses[-1] < names.index("htod")
    assert names.index("htod") < names.index("execute_async_v3") < names.index("dtoh") < names.index("synchronize")
    assert calls[names.index("set_input_shape")][3] == (3, 1, 28, 28)
    assert len(addresses) == 2
    handles = {c[-1] for c in calls if c[0] in ("htod", "dtoh", "synchronize")}
    handles.add(calls[names.index("execute_async_v3")][2])
    assert handles == {0xABC}
    assert set(rec.memory) == rec.freed, "every device allocation is freed on deactivate"
    assert rec.pinned and rec.pinned_alive() == 0, "every page-locked buffer is freed on deactivate"
    assert rec.context_depth == 0 and ("detach",) in rec.calls


def test_buffers_are_pinned_and_sized_for_the_max_batch(fakes, engine):
    rec, _ = fakes
    with load_runner(engine) as runner:
        assert runner.max_batch == 16
        assert sorted(len(h) for h in rec.pinned) == [16 * 10 * 4, 16 * 28 * 28 * 4]


def test_the_runner_works_from_a_worker_thread(fakes, engine):
    """The context is pushed around each call, so the thread that activated need not be the one that infers."""
    rec, _ = fakes
    runner = load_runner(engine).activate()
    results = {}

    def work():
        results["logits"] = runner.infer({"input": np.ones((2, 1, 28, 28), np.float32)})["logits"]

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    runner.deactivate()
    assert results["logits"].shape == (2, 10) and rec.context_depth == 0


def test_batch_beyond_the_profile_or_of_another_shape_is_a_clear_error(engine):
    with load_runner(engine) as runner:
        with pytest.raises(ResnetDeployError, match="batch 17 is outside the engine's profile 1..16"):
            runner.infer({"input": np.zeros((17, 1, 28, 28), np.float32)})
        with pytest.raises(ResnetDeployError, match=r"input shape \(2, 28, 28\) does not fit"):
            runner.infer({"input": np.zeros((2, 28, 28), np.float32)})


def test_infer_before_activate_and_after_deactivate_is_an_error_not_a_crash(fakes, engine):
    rec, _ = fakes
    runner = load_runner(engine)
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    runner.activate()
    runner.deactivate()
    runner.deactivate()
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    assert set(rec.memory) == rec.freed and rec.context_depth == 0


def test_version_compatible_engine_is_loaded_with_host_code_allowed(fakes, graphs, tmp_path):
    rec, trt = fakes
    path = build_engine(graphs["fp32"], tmp_path, precision="fp32", max_batch=8, opt_batch=8,
                        version_compatible=True, device_info=ORIN, log=lambda _: None).engine_path
    with load_runner(path) as runner:
        assert runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})["logits"].shape == (1, 10)
    assert ("Runtime", "set", "engine_host_code_allowed", True) in rec.calls


def test_a_failed_activation_frees_what_it_had_taken(fakes, engine):
    rec, _ = fakes
    engine.write_bytes(b"not a plan")
    with pytest.raises(Exception, match="could not deserialize"):
        load_runner(engine).activate()
    assert set(rec.memory) == rec.freed and rec.context_depth == 0 and ("detach",) in rec.calls


def test_parity_accepts_the_tensorrt_backend(engine, graphs, data_dir, tmp_path):
    from resnet_deploy.parity import parity_for_artifacts

    report = parity_for_artifacts(graphs["fp32"], [engine], tmp_path / "p.json", limit=256, data_dir=data_dir)
    (entry,) = report["artifacts"]
    assert entry["backend"] == "tensorrt" and entry["agreement"] == 1.0


def test_engine_runtime_imports_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import resnet_deploy.runners.tensorrt, resnet_deploy.cuda, resnet_deploy.sidecar, resnet_deploy.engine\n"
            "import resnet_deploy.cli.engine, resnet_deploy.parity, resnet_deploy.bench, resnet_deploy.cli\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr
