"""The pycuda loop and the TensorRT runner against the recording fakes (unit tests of our adapter, no GPU)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.runners import RunnerStateError, load_runner
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.trt import cuda
from resnet_deploy.trt.compat import TensorRTMissing
from resnet_deploy.trt.builder import build_engine
from resnet_deploy.trt.runner import TensorRTRunner
from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.sidecar import sidecar_path
from tests import fakes
from tests.fakes import fake_pycuda
from tests.fakes.fake_pycuda import H100, ORIN
from tests.fake_engines import build, engine, gpu, graphs  # noqa: F401 (fixtures)

pytestmark = pytest.mark.runtime


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


def test_loop_order_on_one_stream_and_everything_freed(gpu, engine):
    rec, _ = gpu
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
    assert len(handles) == 1
    assert set(rec.memory) == rec.freed, "every device allocation is freed on deactivate"
    assert rec.pinned and rec.pinned_alive() == 0, "every page-locked buffer is freed on deactivate"
    assert rec.context_depth == 0


def test_buffers_are_pinned_and_sized_for_the_max_batch(gpu, engine):
    rec, _ = gpu
    with load_runner(engine) as runner:
        assert runner.max_batch == 16
        assert sorted(len(h) for h in rec.pinned) == [16 * 10 * 4, 16 * 28 * 28 * 4]


def test_one_primary_context_per_device_for_the_life_of_the_process(gpu, graphs, tmp_path):
    """autoprimaryctx: retained once, pushed and popped around work, never detached; reading names needs none."""
    rec, _ = gpu
    engine = build(graphs, tmp_path)
    for _ in range(3):
        with load_runner(engine) as runner:
            runner.infer({"input": np.zeros((2, 1, 28, 28), np.float32)})
    build(graphs, tmp_path, max_batch=32)
    assert rec.retained == {0: 1} and [c for c in rec.calls if c[0] == "retain"] == [("retain", 0)]
    assert not [c for c in rec.calls if c[0].startswith("detach")] and rec.context_depth == 0


def test_device_info_reads_the_device_without_a_context(monkeypatch):
    rec = fake_pycuda.install(monkeypatch, devices=[H100, ORIN])
    assert cuda.device_info(1) == cuda.DeviceInfo(1, "NVIDIA Jetson AGX Orin", "8.7", True, cuda.host_platform())
    assert cuda.device_info(0).integrated is False
    assert rec.retained == {} and rec.context_depth == 0
    with pytest.raises(ResnetDeployError, match="no CUDA device 2: this machine has 2"):
        cuda.device_info(2)


def test_the_fake_context_stack_catches_a_detach_outside_a_push(monkeypatch):
    """pycuda's detach of a context that is not current pushes it and releases it without a pop."""
    rec = fake_pycuda.install(monkeypatch)
    import pycuda.driver as driver

    driver.init()
    context = driver.Device(0).retain_primary_context()
    context.detach()
    assert rec.context_depth == 1 and rec.stale == [context]
    with pytest.raises(RuntimeError, match="cannot push a detached context"):
        context.push()
    other = driver.Device(0).retain_primary_context()
    other.push()
    other.detach()
    assert rec.stack() == [] and rec.retained == {0: 0}
    with pytest.raises(RuntimeError, match="cannot pop non-current context"):
        driver.Context.pop()


def test_events_are_read_only_after_the_stream_is_synchronized(monkeypatch):
    """cuEventElapsedTime fails on an event that has not completed; the loop reads them after synchronize."""
    fake_pycuda.install(monkeypatch)
    with cuda.pushed(0):
        stream = cuda.driver().Stream()
        timer = cuda.EventTimer(stream, ("compute",))
        timer.start("compute")
        timer.stop("compute")
        with pytest.raises(RuntimeError, match="device not ready"):
            timer.seconds()
        stream.synchronize()
        assert timer.seconds()["compute"] > 0


def test_the_runner_is_thread_safe_by_default(gpu, engine):
    """Threads share one runner; the lock keeps them out of the execution context at once (the fake raises)."""
    batches = [np.full((2, 1, 28, 28), i / 10, np.float32) for i in range(6)]
    errors, results = [], {}
    with load_runner(engine) as runner:
        expected = [runner.infer({"input": b})["logits"] for b in batches]

        def work(index):
            try:
                for _ in range(3):
                    results[index] = runner.infer({"input": batches[index]})["logits"]
            except Exception as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert errors == []
    for index, logits in results.items():
        np.testing.assert_array_equal(logits, expected[index])


def test_a_runner_made_not_thread_safe_refuses_a_second_thread(gpu, engine):
    runner = TensorRTRunner(engine, thread_safe=False).activate()
    runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    failures = []

    def work():
        try:
            runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
        except RunnerStateError as exc:
            failures.append(str(exc))

    worker = threading.Thread(target=work)
    worker.start()
    worker.join()
    runner.deactivate()
    assert len(failures) == 1 and "thread_safe=False" in failures[0]


def test_the_fake_execution_context_refuses_two_threads_at_once(gpu, engine):
    """Without a lock, two threads in one execution context collide (what the runner's lock prevents)."""
    runner = TensorRTRunner(engine).activate()
    runner._exclusive = contextlib.nullcontext
    errors = []

    def work():
        try:
            for _ in range(5):
                runner.infer({"input": np.zeros((2, 1, 28, 28), np.float32)})
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    runner.deactivate()
    assert errors and "not thread-safe" in errors[0]


def test_the_runner_uses_the_engine_tensor_dtypes(monkeypatch, tmp_path, graphs):
    """An engine with FP16 I/O gets FP16 buffers; the fake reports the plan's real dtypes, not FLOAT."""
    import onnx
    from onnxconverter_common import float16

    fakes.install(monkeypatch, "10.16")
    half_io = tmp_path / "tiny.half-io.onnx"
    onnx.save(float16.convert_float_to_float16(onnx.load(str(graphs["fp32"])), keep_io_types=False), str(half_io))
    engine = build({"half": half_io}, tmp_path, graph="half", precision="fp16")
    assert json.loads(sidecar_path(engine).read_text())["inputs"][0]["dtype"] == "float16"
    images = np.random.default_rng(0).normal(size=(4, 1, 28, 28)).astype(np.float32)
    with load_runner(engine) as runner:
        assert runner.input_metadata()[0].dtype == np.float16
        logits = runner.infer({"input": images})["logits"]
    with OnnxRuntimeRunner(half_io) as reference:
        expected = reference.infer({"input": images.astype(np.float16)})["logits"]
    assert logits.dtype == np.float16
    np.testing.assert_allclose(logits, expected, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("built_with, run_with", [("10.3", "10.16"), ("10.16", "11.4")])
def test_the_fake_runtime_refuses_a_plan_of_another_tensorrt(monkeypatch, tmp_path, graphs, built_with, run_with):
    """Even past our sidecar check (sidecar rewritten), TensorRT itself refuses a plan of another release."""
    fakes.install(monkeypatch, built_with)
    engine = build(graphs, tmp_path)
    rec, trt = fakes.install(monkeypatch, run_with)
    sidecar = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**sidecar, "tensorrt_version": trt.__version__}))
    with pytest.raises(ArtifactError, match="could not deserialize"):
        load_runner(engine).activate()
    assert "not compatible with this version of TensorRT" in [c for c in rec.calls if c[1:2] == ("error",)][0][2]


def test_the_fake_runtime_refuses_a_plan_of_another_gpu(monkeypatch, tmp_path, graphs):
    fakes.install(monkeypatch, "11.4", [H100])
    engine = build(graphs, tmp_path)
    rec, _ = fakes.install(monkeypatch, "11.4", [fake_pycuda.FakeDevice("NVIDIA L4", (8, 9), False, 0)])
    sidecar = json.loads(sidecar_path(engine).read_text())
    sidecar_path(engine).write_text(json.dumps({**sidecar, "compute_capability": "8.9", "gpu_name": "NVIDIA L4"}))
    with pytest.raises(ArtifactError, match="could not deserialize"):
        load_runner(engine).activate()
    assert rec.context_depth == 0


@pytest.mark.parametrize("built_with, run_with", [("10.3", "10.16"), ("10.16", "11.4")])
def test_version_compatible_engine_loads_on_a_later_allowed_release(monkeypatch, tmp_path, graphs, built_with,
                                                                    run_with):
    fakes.install(monkeypatch, built_with)
    engine = build(graphs, tmp_path, version_compatible=True)
    rec, _ = fakes.install(monkeypatch, run_with)
    with load_runner(engine) as runner:
        assert runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})["logits"].shape == (1, 10)
    assert ("Runtime", "set", "engine_host_code_allowed", True) in rec.calls


def test_a_dla_engine_sets_the_runtime_dla_core_before_deserializing(monkeypatch, tmp_path, graphs):
    """trtexec sets IRuntime::setDLACore before deserializeCudaEngine; without it the engine runs on the GPU."""
    rec, _ = fakes.install(monkeypatch, "10.3")
    engine = build(graphs, tmp_path, graph="fp16", precision="fp16", min_batch=4, opt_batch=4, max_batch=4, dla_core=1)
    with load_runner(engine) as runner:
        assert runner._engine._dla_core == 1
        runner.infer({"input": np.zeros((4, 1, 28, 28), np.float32)})
    runtime_calls = [c[1:] for c in rec.calls if c[0] == "Runtime"]
    assert runtime_calls.index(("set", "DLA_core", 1)) < [c[0] for c in runtime_calls].index("deserialize_cuda_engine")
    fakes.install(monkeypatch, "10.3", [fake_pycuda.FakeDevice("NVIDIA Jetson Orin NX", (8, 7), True, dla_cores=1)])
    with pytest.warns(UserWarning, match="running on NVIDIA Jetson Orin NX"), \
            pytest.raises(ArtifactError, match="built for DLA core 1; this device has 1 DLA cores"):
        load_runner(engine).activate()


def test_batch_beyond_the_profile_or_of_another_shape_is_a_clear_error(engine):
    with load_runner(engine) as runner:
        with pytest.raises(ResnetDeployError, match="batch 17 is outside the engine's profile 1..16"):
            runner.infer({"input": np.zeros((17, 1, 28, 28), np.float32)})
        with pytest.raises(ResnetDeployError, match=r"input shape \(2, 28, 28\) does not fit"):
            runner.infer({"input": np.zeros((2, 28, 28), np.float32)})


def test_infer_before_activate_and_after_deactivate_is_an_error_not_a_crash(gpu, engine):
    rec, _ = gpu
    runner = load_runner(engine)
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    runner.activate()
    runner.deactivate()
    runner.deactivate()
    with pytest.raises(RunnerStateError):
        runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})
    assert set(rec.memory) == rec.freed and rec.context_depth == 0


def test_a_failed_activation_frees_what_it_had_taken(gpu, engine):
    rec, _ = gpu
    engine.write_bytes(b"not a plan")
    with pytest.raises(Exception, match="could not deserialize"):
        load_runner(engine).activate()
    assert set(rec.memory) == rec.freed and rec.context_depth == 0


def test_without_tensorrt_a_runner_says_what_is_missing_in_one_line(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    (tmp_path / "x.engine").write_bytes(b"plan")
    with pytest.raises(TensorRTMissing) as missing:
        load_runner(tmp_path / "x.engine")
    message = str(missing.value)
    assert message.startswith("x.engine: running a TensorRT engine needs tensorrt and pycuda, not installed here")
    assert "pip install" in message and "\n" not in message


def test_parity_accepts_the_tensorrt_backend(engine, graphs, data_dir, tmp_path):
    from resnet_deploy.parity import parity_for_artifacts

    report = parity_for_artifacts(graphs["fp32"], [engine], tmp_path / "p.json", limit=256, data_dir=data_dir)
    (entry,) = report["artifacts"]
    assert entry["backend"] == "tensorrt" and entry["agreement"] == 1.0


def test_engine_runtime_imports_no_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import resnet_deploy.trt.runner, resnet_deploy.trt.cuda, resnet_deploy.trt.sidecar\n"
            "import resnet_deploy.trt.builder, resnet_deploy.trt.compat, resnet_deploy.trt.settings\n"
            "import resnet_deploy.cli.inspect, resnet_deploy.cli.infer, resnet_deploy.parity, resnet_deploy.bench, resnet_deploy.cli\n"
            "print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.stdout.strip() == "ok", result.stderr


def _imported_modules(source: str) -> set[str]:
    """Top-level names of the modules `source` imports: import statements and import_module("...") calls."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value.split(".")[0])
    return names


def test_import_finder_sees_every_form_of_import_and_not_text():
    source = "import tensorrt as trt\nfrom pycuda import driver\nimportlib.import_module('pycuda.driver')\n"
    assert _imported_modules(source) == {"tensorrt", "pycuda"}
    assert _imported_modules("device_md = 'python -c \"import tensorrt, pycuda.driver\"'\n") == set()


def test_nothing_outside_the_trt_package_imports_tensorrt_or_pycuda():
    import resnet_deploy

    package = Path(resnet_deploy.__file__).parent
    offenders = [str(p.relative_to(package)) for p in package.rglob("*.py") if p.parent.name != "trt"
                 and _imported_modules(p.read_text()) & {"tensorrt", "pycuda"}]
    assert offenders == []


def test_gpu_tests_fail_rather_than_skip_when_tensorrt_imports_but_the_gpu_does_not(tmp_path):
    """tests/test_gpu.py skips only where tensorrt/pycuda cannot be imported; a broken driver is an error."""
    (tmp_path / "tensorrt").mkdir()
    (tmp_path / "tensorrt" / "__init__.py").write_text("__version__ = '10.3.0'\n")
    (tmp_path / "pycuda").mkdir()
    (tmp_path / "pycuda" / "__init__.py").write_text("")
    (tmp_path / "pycuda" / "driver.py").write_text(
        "def init():\n    raise RuntimeError('cuInit failed: no CUDA-capable device is detected')\n")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{root}"}
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests" /
                             "test_gpu.py")], capture_output=True, text=True, env=env, cwd=root, timeout=300)
    summary = result.stdout.strip().splitlines()[-1]
    assert result.returncode == 1 and "error" in summary and "skipped" not in summary, result.stdout[-2000:]
    assert "no CUDA-capable device" in result.stdout


# ---- strictness of the fakes: each rule, and a runner that breaks it failing -----------------------------

def reads_before_synchronize(self, inputs, output_shapes, enqueue):
    """StreamLoop.run with the bug the async fake must catch: outputs copied out before the stream is synchronized."""
    driver = cuda.driver()
    for name, array in inputs.items():
        host = self.buffers[name].host_view(array.shape)
        np.copyto(host, array)
        driver.memcpy_htod_async(self.buffers[name].device, host, self.stream)
    enqueue(self.stream)
    outputs = {name: self.buffers[name].host_view(shape) for name, shape in output_shapes.items()}
    for name, host in outputs.items():
        driver.memcpy_dtoh_async(host, self.buffers[name].device, self.stream)
    early = {name: host.copy() for name, host in outputs.items()}
    self.stream.synchronize()
    return early


def test_a_device_to_host_copy_holds_stale_bytes_until_the_stream_or_an_event_is_synchronized(monkeypatch):
    rec = fake_pycuda.install(monkeypatch)
    with cuda.pushed(0):
        driver = cuda.driver()
        stream, device = driver.Stream(), driver.mem_alloc(16)
        source, dest = driver.pagelocked_empty((4,), np.float32), driver.pagelocked_empty((4,), np.float32)
        source[:], dest[:] = [1, 2, 3, 4], -1
        driver.memcpy_htod_async(device, source, stream)
        driver.memcpy_dtoh_async(dest, device, stream)
        assert dest.tolist() == [-1] * 4, "the copy has not run: the stream was not synchronized"
        stream.synchronize()
        assert dest.tolist() == [1, 2, 3, 4]
        source[:] = 7
        driver.memcpy_htod_async(device, source, stream)
        driver.memcpy_dtoh_async(dest, device, stream)
        event = driver.Event()
        event.record(stream)
        assert dest.tolist() == [1, 2, 3, 4] and not event.query()
        event.synchronize()
        assert dest.tolist() == [7] * 4 and event.query()
        device.free()
    assert rec.memory[int(device)].view(np.float32).tolist() == [7] * 4


def test_a_runner_that_reads_outputs_before_synchronize_gets_stale_logits(gpu, engine, monkeypatch):
    rec, _ = gpu
    images = np.random.default_rng(0).normal(size=(2, 4, 1, 28, 28)).astype(np.float32)
    with load_runner(engine) as runner:
        right = [runner.infer({"input": batch})["logits"] for batch in images]
    monkeypatch.setattr(cuda.StreamLoop, "run", reads_before_synchronize)
    with load_runner(engine) as runner:
        early = [runner.infer({"input": batch})["logits"] for batch in images]
    assert not np.allclose(early[0], right[0]) and not np.allclose(early[1], right[1])
    assert np.count_nonzero(early[0]) == 0, "the first read sees the buffer's bytes before any copy ran"


def test_set_tensor_address_refuses_null_misaligned_and_unknown_tensors(gpu, engine):
    rec, _ = gpu
    with load_runner(engine) as runner:
        execution = runner._execution
        address = int(runner._loop.buffers["input"].device)
        assert address % 512 == 0 and execution.set_tensor_address("input", address) is True
        assert execution.set_tensor_address("input", 0) is False
        assert execution.set_tensor_address("input", address + 64) is False
        assert execution.set_tensor_address("nope", address) is False
    assert len([c for c in rec.calls if c[1:2] == ("error",) and "setTensorAddress" in c[2]]) == 3


def test_the_runner_checks_set_tensor_address(gpu, engine):
    """A buffer TensorRT refuses (here misaligned) is a one-line error naming the tensor, not a failed enqueue."""
    rec, _ = gpu
    rec.misalign = 64
    with load_runner(engine) as runner:
        with pytest.raises(ResnetDeployError) as refused:
            runner.infer({"input": np.zeros((2, 1, 28, 28), np.float32)})
    message = str(refused.value)
    assert re_match(r"^tiny_fp32_b16_.*\.engine: TensorRT refused address 0x[0-9a-f]+ for tensor 'input' \(null or "
                    r"not 256-byte aligned; see the TensorRT log\)$", message)
    assert not [c for c in rec.calls if c[1:2] == ("execute_async_v3",)], "nothing was enqueued"


def re_match(pattern, text):
    import re

    return re.match(pattern, text) is not None


@pytest.mark.parametrize("version", ["10.3", "11.4"])
def test_execution_contexts_account_device_memory_with_the_names_of_each_version(monkeypatch, tmp_path, graphs,
                                                                                 version):
    rec, trt = fakes.install(monkeypatch, version)
    engine_path = build(graphs, tmp_path)
    with cuda.pushed(0):
        runtime = trt.Runtime(trt.Logger())
        engine = runtime.deserialize_cuda_engine(engine_path.read_bytes())
        size, before = engine.device_memory_size_v2, rec.device_bytes_in_use()
        static = engine.create_execution_context()
        assert size > 0 and rec.device_bytes_in_use() == before + size, "a STATIC context allocates its memory"
        del static
        assert rec.device_bytes_in_use() == before, "and frees it when destroyed"
        user = engine.create_execution_context(trt.ExecutionContextAllocationStrategy.USER_MANAGED)
        assert rec.device_bytes_in_use() == before, "a USER_MANAGED context allocates nothing"
        user.set_input_shape("input", (1, 1, 28, 28))
        buffers = [cuda.driver().mem_alloc(4 * 28 * 28), cuda.driver().mem_alloc(40)]
        for name, buffer in zip(("input", "logits"), buffers):
            assert user.set_tensor_address(name, int(buffer))
        stream = cuda.driver().Stream()
        assert user.execute_async_v3(stream.handle) is False, "no device memory given yet"
        block = cuda.driver().mem_alloc(size)
        user.set_device_memory(int(block), size - 1)
        assert user.execute_async_v3(stream.handle) is False, "too small a block is refused"
        user.set_device_memory(int(block), size)
        assert user.execute_async_v3(stream.handle) is True
        stream.synchronize()
        for allocation in [*buffers, block]:
            allocation.free()
    assert hasattr(engine, "device_memory_size") == (version == "10.3")  # gone in TensorRT 11


def test_a_failed_allocation_while_loading_frees_everything_taken_so_far(gpu, engine):
    """Each device allocation of an activation fails in turn (input, output, activation block): nothing leaks."""
    rec, _ = gpu
    failures = 0
    for index in range(10):
        rec.fail_allocation_after = index
        runner = load_runner(engine)
        try:
            runner.activate()
        except Exception as exc:  # noqa: BLE001 - pycuda's error, passed on
            assert "CUDA_ERROR_OUT_OF_MEMORY" in str(exc)
            failures += 1
            assert set(rec.memory) == rec.freed and rec.pinned_alive() == 0 and rec.context_depth == 0, index
            continue
        runner.deactivate()
        break
    assert failures == 3 and rec.fail_allocation_after is not None


# ---- DLA: fixed-shape engines, no CUDA graphs ----------------------------------------------------------------

@pytest.fixture
def dla_engine(monkeypatch, tmp_path, graphs):
    rec, _ = fakes.install(monkeypatch, "10.3")
    path = build(graphs, tmp_path, graph="fp16", precision="fp16", min_batch=48, opt_batch=48, max_batch=48, dla_core=0)
    return rec, path


def test_a_fixed_shape_engine_answers_10000_images_in_parity(dla_engine, graphs, data_dir):
    """DLA needs min = opt = max: 10,000 = 208 x 48 + 16, the last chunk is padded to 48 (the fake refuses 16)."""
    from resnet_deploy.parity import run_parity

    rec, path = dla_engine
    dataset = data.load_fashion_mnist(data_dir)
    images, labels = data.normalize(dataset.test_images), dataset.test_labels
    report = run_parity(OnnxRuntimeRunner(graphs["fp32"]), {"dla": load_runner(path)}, images, labels,
                        precisions={"dla": "fp16"})
    (entry,) = report["artifacts"]
    assert report["dataset"]["count"] == 10_000 and entry["agreement"] > 0.99
    shapes = {c[3] for c in rec.calls if c[1:2] == ("set_input_shape",)}
    assert shapes == {(48, 1, 28, 28)}
    with load_runner(path) as runner:
        one = runner.infer({"input": images[:100]})["logits"]
        assert one.shape == (100, 10)
        np.testing.assert_array_equal(one[96:], runner.infer({"input": images[96:100]})["logits"])


def test_a_dla_engine_runs_without_cuda_graphs_with_one_notice(dla_engine):
    from resnet_deploy.trt.runner import DLA_NO_GRAPHS

    rec, path = dla_engine
    batch = np.random.default_rng(1).normal(size=(48, 1, 28, 28)).astype(np.float32)
    with load_runner(path) as plain:
        expected = plain.infer({"input": batch})["logits"]
    notices = []
    with load_runner(path, cuda_graph=True, notice=notices.append) as runner:
        outputs = [runner.infer({"input": batch})["logits"] for _ in range(3)]
        assert runner.cuda_graphs == {"requested": True, "captured": [], "fallback": DLA_NO_GRAPHS}
    assert notices == [f"{path.name}: {DLA_NO_GRAPHS}"]
    assert not [c for c in rec.calls if c[0] == "begin_capture"]
    for got in outputs:
        np.testing.assert_array_equal(got, expected)


def test_the_fake_refuses_to_capture_a_dla_engine(dla_engine):
    from resnet_deploy.trt import cudagraph

    rec, path = dla_engine
    with load_runner(path) as runner, cuda.pushed(0):
        runner.infer({"input": np.zeros((48, 1, 28, 28), np.float32)})  # the warm-up enqueue
        api, stream = cudagraph.load_graph_api(), runner._loop.stream
        api.begin_capture(stream.handle)
        assert runner._execution.execute_async_v3(stream.handle) is False
        with pytest.raises(cudagraph.CudaGraphError, match="INVALIDATED"):
            api.end_capture(stream.handle)
    assert "a DLA engine cannot be captured" in [c for c in rec.calls if c[1:2] == ("error",)][-1][2]


# ---- the fake engine computes in the precision it was built with ---------------------------------------------

def test_tf32_rounding_keeps_ten_mantissa_bits():
    from tests.fakes.precision import per_channel_int8, tf32_round

    values = np.array([1 + 2 ** -10, 1 + 2 ** -11 - 2 ** -20, 1 + 2 ** -11 + 2 ** -20, -3.0], np.float32)
    assert tf32_round(values).tolist() == [1 + 2 ** -10, 1.0, 1 + 2 ** -10, -3.0]
    weights = np.array([[0.5, -1.0, 0.25], [2.0, 0.01, -0.02]], np.float32)
    np.testing.assert_allclose(per_channel_int8(weights), [[64 / 127, -1.0, 32 / 127], [2.0, 2 / 127, -2 / 127]],
                               rtol=1e-6)


@pytest.mark.parametrize("settings", [{"precision": "fp16", "legacy_calibrator": True},
                                      {"precision": "fp32", "tf32": True}])
def test_fp16_and_tf32_engines_do_not_compute_in_fp32(monkeypatch, tmp_path, graphs, data_dir, settings):
    """An FP16 (FP16 flag) or TF32 engine's logits differ from FP32 by rounding-sized amounts; an FP32 one does not."""
    fakes.install(monkeypatch, "10.3")
    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:16])
    with OnnxRuntimeRunner(graphs["fp32"]) as reference:
        expected = reference.infer({"input": images})["logits"]
    diffs = {}
    for name, options in [("fp32", {"precision": "fp32"}), ("reduced", settings)]:
        with load_runner(build(graphs, tmp_path / name, **options)) as runner:
            diffs[name] = float(np.abs(runner.infer({"input": images})["logits"] - expected).max())
    scale = float(np.abs(expected).max())
    assert diffs["fp32"] < 1e-5 * scale < 1e-4 * scale < diffs["reduced"] < 1e-2 * scale, diffs


def calibrated_cache(graphs, path, data_dir, factor=1.0):
    from resnet_deploy.quantize.cache import write_calibration_cache
    from resnet_deploy.quantize.calibrate import calibrate_onnx

    amax = calibrate_onnx(graphs["fp32"], data.calibration_images(256, data_dir=data_dir), "max")
    return write_calibration_cache(path, {name: value * factor for name, value in amax.items()})


def test_legacy_int8_engine_parity_sees_a_cache_with_wrong_scales(monkeypatch, tmp_path, graphs, data_dir):
    """The scales of the calibration cache quantize the fake engine: ranges 50x too small wreck its logits."""
    from resnet_deploy.parity import run_parity

    fakes.install(monkeypatch, "10.3")
    dataset = data.load_fashion_mnist(data_dir)
    images, labels = data.normalize(dataset.test_images[:1000]), dataset.test_labels[:1000]
    engines = {}
    for label, factor in [("right", 1.0), ("wrong", 1 / 50)]:
        cache = calibrated_cache(graphs, tmp_path / f"{label}.cache", data_dir, factor)
        engines[label] = load_runner(build_engine(graphs["fp32"], EngineSettings(
            precision="int8", legacy_calibrator=True, opt_batch=8, max_batch=256), tmp_path / label,
            calibration_cache=cache, log=lambda _: None).engine_path)
    report = run_parity(OnnxRuntimeRunner(graphs["fp32"]), engines, images, labels,
                        precisions={"right": "int8", "wrong": "int8"})
    right, wrong = report["artifacts"]
    assert right["agreement"] > 0.97 and wrong["agreement"] < 0.5
    assert 0 < right["logit_abs_diff"]["mean"] * 10 < wrong["logit_abs_diff"]["mean"]
    # The INT8 gate (top-1 drop) on labels this untrained model gets right: the FP32 graph's own predictions.
    with OnnxRuntimeRunner(graphs["fp32"]) as reference:
        predicted = reference.infer({"input": images})["logits"].argmax(1)
    gated = run_parity(OnnxRuntimeRunner(graphs["fp32"]), engines, images, predicted,
                       precisions={"right": "int8", "wrong": "int8"})
    assert [gate["passed"] for entry in gated["artifacts"] for gate in entry["gates"]] == [True, False]
    assert gated["passed"] is False
