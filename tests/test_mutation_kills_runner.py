"""The TensorRT runner's exact behaviour on the strict fakes, with engines built from a five-node ONNX graph (no
torch, milliseconds): buffer and activation sizes, the calls made per batch, batch checks and chunking, padding,
CUDA-graph slots, locking and every refusal's whole message. Written to kill the mutants tools/mutation.sh makes in
resnet_deploy/trt/runner.py; tests/test_cuda_loop.py and test_cuda_graphs.py cover the runner on exported ResNets."""

from __future__ import annotations

import sys
import threading
import warnings

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.runners.base import RunnerStateError, TensorMeta
from resnet_deploy.trt import cuda
from resnet_deploy.trt.builder import build_engine
from resnet_deploy.trt.compat import TensorRTMissing, trt_logger
from resnet_deploy.trt.runner import DLA_NO_GRAPHS, TensorRTRunner
from resnet_deploy.trt.settings import EngineSettings
from tests import fakes
from tests.fakes.fake_pycuda import ORIN, FakeDevice
from tests.test_mutation_kills_builder import conv_classifier, surfaces  # noqa: F401 (autouse fixture)

pytestmark = pytest.mark.runtime
ORIN_ONE_DLA = FakeDevice(ORIN.name, ORIN.compute_capability, ORIN.integrated, dla_cores=1)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    from resnet_deploy.quantize.fp16 import convert_to_fp16

    folder = tmp_path_factory.mktemp("graphs")
    fp32 = conv_classifier(folder / "tiny.onnx")
    return {"fp32": fp32, "fp16": convert_to_fp16(fp32, folder / "tiny.fp16.onnx") and folder / "tiny.fp16.onnx"}


@pytest.fixture(scope="module")
def images(data_dir):
    return data.normalize(data.load_fashion_mnist(data_dir).test_images[:40])


@pytest.fixture(scope="module")
def reference(graphs, images):
    """The FP32 graph's logits for `images` (ONNX Runtime)."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(graphs["fp32"]), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": images})[0]


def engine(tmp_path, graphs, graph="fp32", **changes):
    settings = {"precision": "fp32", "min_batch": 1, "opt_batch": 8, "max_batch": 16, **changes}
    return build_engine(graphs[graph], EngineSettings(**settings), tmp_path / "engines", log=lambda _: None).engine_path


@pytest.fixture
def gpu(monkeypatch):
    return fakes.install(monkeypatch, "10.3")


def calls(rec, owner, name):
    return [c[2:] for c in rec.calls if c[:2] == (owner, name)]


def message(error_type, call, *args, **kwargs) -> str:
    with pytest.raises(error_type) as raised:
        call(*args, **kwargs)
    return str(raised.value)


# -- construction and activation ---------------------------------------------------------------------------------


def test_constructor_settings_and_refusals(gpu, tmp_path, graphs):
    path = engine(tmp_path, graphs)
    runner = TensorRTRunner(str(path), device=0)
    assert (runner.name, runner.engine_path, runner.device, runner.thread_safe, runner.cuda_graph,
            runner.max_graph_shapes) == (path.name, path, 0, True, False, 4)
    assert TensorRTRunner(path, name="trt", thread_safe=False, cuda_graph=True, max_graph_shapes=1).name == "trt"
    assert message(ResnetDeployError, TensorRTRunner, path, max_graph_shapes=0) == (
        "max_graph_shapes must be at least 1, got 0")
    assert (runner.sidecar, runner.min_batch, runner.max_batch, runner.io_bytes, runner.activation_bytes,
            runner.cuda_graphs) == ({}, 0, 0, 0, 0, None)


def test_without_pycuda_the_runner_is_refused_when_made(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    text = message(TensorRTMissing, TensorRTRunner, tmp_path / "m.engine")
    assert text.startswith("m.engine: running a TensorRT engine needs tensorrt and pycuda, not installed here: ")


def test_activation_sizes_buffers_for_the_max_batch_and_frees_everything(gpu, tmp_path, graphs):
    rec, trt = gpu
    path = engine(tmp_path, graphs, min_batch=2, max_batch=12)
    with TensorRTRunner(path) as runner:
        assert (runner.min_batch, runner.max_batch, runner.fixed_batch) == (2, 12, False)
        assert runner.input_metadata() == [TensorMeta("input", np.dtype(np.float32), (-1, 1, 28, 28))]
        assert runner._outputs == [TensorMeta("logits", np.dtype(np.float32), (-1, 10))]
        assert sorted(len(h) for h in rec.pinned) == [12 * 10 * 4, 12 * 28 * 28 * 4]
        assert runner.io_bytes == 12 * 10 * 4 + 12 * 28 * 28 * 4
        size = runner._engine.device_memory_size_v2
        assert size > 256 and runner.activation_bytes == size
        assert calls(rec, "ICudaEngine", "create_execution_context") == [("USER_MANAGED",)]
        assert calls(rec, "IExecutionContext", "set_device_memory") == [(int(runner._activation), size)]
        assert runner.sidecar["precision"] == "fp32" and runner._owner == threading.get_ident()
        assert runner.cuda_graphs is None and runner._loop.stream.flags == 1
    assert (runner.io_bytes, runner.activation_bytes, runner.min_batch, runner.max_batch, runner.sidecar,
            runner._owner, runner._engine, runner._runtime) == (0, 0, 0, 0, {}, None, None, None)
    assert set(rec.memory) == rec.freed and rec.pinned_alive() == 0 and rec.context_depth == 0


def test_an_empty_activation_block_is_still_one_byte(gpu, tmp_path, graphs, monkeypatch):
    rec, trt = gpu
    path = engine(tmp_path, graphs)
    monkeypatch.setattr(trt.ICudaEngine, "device_memory_size_v2", property(lambda self: 0))
    with TensorRTRunner(path) as runner:
        block = int(runner._activation)
        assert runner.activation_bytes == 0 and ("alloc", block, 1) in rec.calls
        assert calls(rec, "IExecutionContext", "set_device_memory") == [(block, 0)]


@pytest.mark.parametrize("member", [True, False])
def test_without_user_managed_memory_each_context_has_its_own(gpu, tmp_path, graphs, images, reference, monkeypatch,
                                                              member):
    """A TensorRT before 10.1: ExecutionContextAllocationStrategy without USER_MANAGED (member) or none at all."""
    rec, trt = gpu
    path = engine(tmp_path, graphs)
    strategies, create = trt.ExecutionContextAllocationStrategy, trt.ICudaEngine.create_execution_context

    def older():
        if member:
            monkeypatch.setattr(trt, "ExecutionContextAllocationStrategy", type("S", (), {"STATIC": strategies.STATIC}))
        else:
            monkeypatch.delattr(trt, "ExecutionContextAllocationStrategy")

    def create_static(self, *strategy):
        assert strategy == (), "no strategy is passed where TensorRT has no USER_MANAGED"
        monkeypatch.setattr(trt, "ExecutionContextAllocationStrategy", strategies, raising=False)
        try:
            return create(self)
        finally:
            older()

    older()
    monkeypatch.setattr(trt.ICudaEngine, "create_execution_context", create_static)
    with TensorRTRunner(path) as runner:
        assert runner.activation_bytes == 0 and runner._strategy is None and runner._activation is None
        assert not calls(rec, "IExecutionContext", "set_device_memory")
        np.testing.assert_allclose(runner.infer({"input": images[:3]})["logits"], reference[:3], rtol=1e-5, atol=1e-5)


def test_a_foreign_gpu_name_is_a_warning(monkeypatch, tmp_path, graphs):
    fakes.install(monkeypatch, "10.3")
    path = engine(tmp_path, graphs)
    fakes.install(monkeypatch, "10.3", [FakeDevice("NVIDIA Jetson Orin NX", (8, 7), True)])
    with pytest.warns(UserWarning) as seen:
        TensorRTRunner(path).activate().deactivate()
    assert [str(w.message) for w in seen] == [
        f"{path}: built on NVIDIA Jetson AGX Orin, running on NVIDIA Jetson Orin NX (same compute capability 8.7); "
        "TensorRT supports this but tactics were timed on the other GPU"]


def test_an_engine_of_another_tensorrt_is_refused_naming_it(monkeypatch, tmp_path, graphs):
    fakes.install(monkeypatch, "10.3")
    path = engine(tmp_path, graphs)
    fakes.install(monkeypatch, "10.16")
    assert message(ArtifactError, TensorRTRunner(path).activate).startswith(
        f"{path}: built with TensorRT 10.3.0, this runtime is TensorRT 10.16.1.11; ")


def test_tensorrt_gone_by_activation_is_named(gpu, tmp_path, graphs, monkeypatch):
    path = engine(tmp_path, graphs)
    runner = TensorRTRunner(path)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    assert message(TensorRTMissing, runner.activate).startswith(
        f"{path.name}: running a TensorRT engine needs tensorrt, not installed here: ")


def test_the_runtime_logs_through_the_process_logger_and_reads_profile_zero(gpu, tmp_path, graphs, monkeypatch):
    rec, trt = gpu
    path = engine(tmp_path, graphs, min_batch=3, max_batch=9)
    profile_shape = trt.ICudaEngine.get_tensor_profile_shape

    def one_profile(self, name, profile_index):
        if profile_index != 0:  # TensorRT: an index beyond the engine's profiles is an error
            raise IndexError(f"profile {profile_index} of an engine with one profile")
        return profile_shape(self, name, profile_index)

    monkeypatch.setattr(trt.ICudaEngine, "get_tensor_profile_shape", one_profile)
    with TensorRTRunner(path) as runner:
        assert (runner.min_batch, runner.max_batch) == (3, 9)
    assert calls(rec, "Runtime", "init") == [(id(trt_logger(trt)),)]


def test_an_engine_tensorrt_cannot_load_or_run(gpu, tmp_path, graphs, monkeypatch):
    rec, trt = gpu
    path = engine(tmp_path, graphs)
    good = path.read_bytes()
    path.write_bytes(b"not a plan")
    assert message(ArtifactError, TensorRTRunner(path).activate) == (
        f"{path}: TensorRT could not deserialize the engine (see its log above)")
    path.write_bytes(good)
    monkeypatch.setattr(trt.ICudaEngine, "create_execution_context", lambda self, strategy=None: None)
    assert message(ArtifactError, TensorRTRunner(path).activate) == (
        f"{path}: TensorRT could not create an execution context")
    assert set(rec.memory) == rec.freed and rec.pinned_alive() == 0 and rec.context_depth == 0


def test_a_failed_allocation_frees_what_activation_had_taken(gpu, tmp_path, graphs):
    rec, _ = gpu
    path = engine(tmp_path, graphs)
    for index in range(3):  # the input's device buffer, the output's, the activation block
        rec.fail_allocation_after = index
        assert "CUDA_ERROR_OUT_OF_MEMORY" in message(Exception, TensorRTRunner(path).activate)
        assert set(rec.memory) == rec.freed and rec.pinned_alive() == 0 and rec.context_depth == 0, index


@pytest.mark.parametrize("mode, count", [("INPUT", 2), ("OUTPUT", 0)])
def test_an_engine_without_exactly_one_input_is_refused(gpu, tmp_path, graphs, monkeypatch, mode, count):
    rec, trt = gpu
    path = engine(tmp_path, graphs)
    monkeypatch.setattr(trt.ICudaEngine, "get_tensor_mode", lambda self, name: getattr(trt.TensorIOMode, mode))
    assert message(ArtifactError, TensorRTRunner(path).activate) == (
        f"{path}: expected one input tensor, the engine has {count}")
    assert set(rec.memory) == rec.freed and rec.context_depth == 0


def test_a_version_compatible_engine_allows_host_code(gpu, tmp_path, graphs):
    rec, trt = gpu
    path = engine(tmp_path, graphs, version_compatible=True)
    with TensorRTRunner(path) as runner:
        assert calls(rec, "Runtime", "set") == [("engine_host_code_allowed", True)]
        assert runner.infer({"input": np.zeros((1, 1, 28, 28), np.float32)})["logits"].shape == (1, 10)


# -- DLA: the core and a fixed batch ---------------------------------------------------------------------------


DLA = {"precision": "fp16", "min_batch": 4, "opt_batch": 4, "max_batch": 4}


def test_a_dla_engine_runs_on_its_core_in_chunks_of_its_batch(monkeypatch, tmp_path, graphs, images):
    rec, trt = fakes.install(monkeypatch, "10.3")
    path = engine(tmp_path, graphs, dla_core=1, **DLA)
    notices: list[str] = []
    with TensorRTRunner(path, cuda_graph=True, notice=notices.append) as runner:
        assert calls(rec, "Runtime", "set")[-1] == ("DLA_core", 1) and runner.fixed_batch
        start = len(rec.calls)
        logits = runner.infer({"input": images[:10]})["logits"]
        shapes = [c[3] for c in rec.calls[start:] if c[:2] == ("IExecutionContext", "set_input_shape")]
        assert runner.cuda_graphs == {"requested": True, "captured": [], "fallback": DLA_NO_GRAPHS}
    assert notices == [f"{path.name}: CUDA graphs and DLA offloading are not simultaneously supported (as trtexec "
                       "says); running this DLA engine without CUDA graphs"] == [f"{path.name}: {DLA_NO_GRAPHS}"]
    assert shapes == [(4, 1, 28, 28)] * 3 and logits.shape == (10, 10)
    with TensorRTRunner(path) as runner:
        for rows in (1, 4, 7):
            np.testing.assert_array_equal(runner.infer({"input": images[:rows]})["logits"], logits[:rows])


@pytest.mark.parametrize("core, devices", [(1, [ORIN_ONE_DLA]), (0, [FakeDevice(ORIN.name, (8, 7), True, 0)])])
def test_a_dla_core_the_device_lacks_is_refused(monkeypatch, tmp_path, graphs, core, devices):
    fakes.install(monkeypatch, "10.3")
    path = engine(tmp_path, graphs, dla_core=core, **DLA)
    rec, _ = fakes.install(monkeypatch, "10.3", devices)
    assert message(ArtifactError, TensorRTRunner(path).activate) == (
        f"{path}: built for DLA core {core}; this device has {devices[0].dla_cores} DLA cores")
    assert set(rec.memory) == rec.freed and rec.context_depth == 0


def test_dla_core_zero_of_one_runs(monkeypatch, tmp_path, graphs):
    fakes.install(monkeypatch, "10.3")
    path = engine(tmp_path, graphs, dla_core=0, **DLA)
    rec, _ = fakes.install(monkeypatch, "10.3", [ORIN_ONE_DLA])
    with TensorRTRunner(path) as runner:
        assert runner.infer({"input": np.zeros((2, 1, 28, 28), np.float32)})["logits"].shape == (2, 10)
    assert calls(rec, "Runtime", "set") == [("DLA_core", 0)]


# -- one batch: checks, binding, chunks, padding, timings --------------------------------------------------------


def test_a_batch_runs_bound_on_one_stream_and_matches_onnx_runtime(gpu, tmp_path, graphs, images, reference):
    rec, _ = gpu
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path) as runner:
        start = len(rec.calls)
        logits = runner.infer({"input": images[:5]})
        buffers = {name: int(b.device) for name, b in runner._loop.buffers.items()}
        made = rec.calls[start:]
    assert list(logits) == ["logits"]
    np.testing.assert_allclose(logits["logits"], reference[:5], rtol=1e-5, atol=1e-5)
    execution = [c[1:] for c in made if c[0] == "IExecutionContext"]
    assert execution[:3] == [("set_input_shape", "input", (5, 1, 28, 28)),
                             ("set_tensor_address", "input", buffers["input"]),
                             ("set_tensor_address", "logits", buffers["logits"])]
    assert execution[3][0] == "execute_async_v3" and len(execution) == 4


def test_a_feed_under_another_name_is_taken_when_it_is_the_only_one(gpu, tmp_path, graphs, images, reference):
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path) as runner:
        got = runner.infer({"x": images[:2]})["logits"]
        also = runner.infer({"input": images[:2], "x": np.zeros(3)})["logits"]
        np.testing.assert_allclose(got, reference[:2], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(also, got)
        assert message(ResnetDeployError, runner.infer, {"b": images[:2], "a": images[:2]}) == (
            f"{path.name}: feed has ['a', 'b'], the engine's input is 'input'")


def test_batches_the_profile_refuses(gpu, tmp_path, graphs):
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path) as runner:
        for shape in [(2, 28, 28), (2, 1, 28, 27), (2, 2, 28, 28), (1, 2, 1, 28, 28)]:
            assert message(ResnetDeployError, runner.infer, {"input": np.zeros(shape, np.float32)}) == (
                f"{path.name}: input shape {shape} does not fit (-1, 1, 28, 28)")
        for rows in (0, 17):
            assert message(ResnetDeployError, runner.infer, {"input": np.zeros((rows, 1, 28, 28), np.float32)}) == (
                f"{path.name}: batch {rows} is outside the engine's profile 1..16; rebuild with a larger --max-batch")
        assert runner.infer({"input": np.zeros((16, 1, 28, 28), np.float32)})["logits"].shape == (16, 10)
        assert runner.infer({"input": [[[[0.0] * 28] * 28]]})["logits"].shape == (1, 10)


def test_a_batch_below_the_profiles_min_is_padded_and_the_padding_dropped(gpu, tmp_path, graphs, images, reference):
    rec, _ = gpu
    path = engine(tmp_path, graphs, min_batch=3, opt_batch=4, max_batch=4)
    with TensorRTRunner(path) as runner:
        start = len(rec.calls)
        got = runner.infer({"input": images[:2]})["logits"]
        host = runner._loop.buffers["input"].host
        shapes = [c[3] for c in rec.calls[start:] if c[:2] == ("IExecutionContext", "set_input_shape")]
        assert shapes == [(3, 1, 28, 28)] and np.count_nonzero(host[2]) == 0
        np.testing.assert_array_equal(host[:2], images[:2])
        np.testing.assert_allclose(got, reference[:2], rtol=1e-5, atol=1e-5)
        exact = runner.infer({"input": images[:3]})["logits"]
        np.testing.assert_allclose(exact, reference[:3], rtol=1e-5, atol=1e-5)


def test_chunks_of_a_fixed_batch_engine(gpu, tmp_path, graphs, images):
    path = engine(tmp_path, graphs, min_batch=4, opt_batch=4, max_batch=4)
    with TensorRTRunner(path) as runner:
        chunks = list(runner._chunks(images[:10]))
        assert [(len(c), rows) for c, rows in chunks] == [(4, 4), (4, 4), (4, 2)]
        np.testing.assert_array_equal(chunks[2][0][:2], images[8:10])
        assert chunks[2][0].dtype == np.float32 and np.count_nonzero(chunks[2][0][2:]) == 0
        np.testing.assert_array_equal(np.concatenate([chunks[0][0], chunks[1][0]]), images[:8])
        assert [rows for _, rows in runner._chunks(images[:8])] == [4, 4]


def test_a_large_batch_on_a_fixed_engine_concatenates_in_order(gpu, tmp_path, graphs, images, reference):
    path = engine(tmp_path, graphs, min_batch=8, opt_batch=8, max_batch=8)
    with TensorRTRunner(path) as runner:
        got = runner.infer({"input": images[:21]})
    assert list(got) == ["logits"] and got["logits"].shape == (21, 10)
    np.testing.assert_allclose(got["logits"], reference[:21], rtol=1e-5, atol=1e-5)


def test_timings_add_up_over_the_chunks(gpu, tmp_path, graphs, images, monkeypatch):
    run = cuda.StreamLoop.run

    def timed(self, *args):
        outputs = run(self, *args)
        self.last_timings = {"h2d": 1.0, "compute": 2.0, "d2h": 3.0, "enqueue": 0.5}
        return outputs

    monkeypatch.setattr(cuda.StreamLoop, "run", timed)
    path = engine(tmp_path, graphs, min_batch=4, opt_batch=4, max_batch=4)
    with TensorRTRunner(path) as runner:
        runner.infer({"input": images[:9]})
        assert runner.last_timings == {"h2d": 3.0, "compute": 6.0, "d2h": 9.0, "enqueue": 1.5}
        runner.infer({"input": images[:4]})
        assert runner.last_timings == {"h2d": 1.0, "compute": 2.0, "d2h": 3.0, "enqueue": 0.5}


def test_refused_shapes_addresses_and_enqueues_are_one_line_errors(gpu, tmp_path, graphs, monkeypatch):
    rec, trt = gpu
    path = engine(tmp_path, graphs)
    batch = {"input": np.zeros((2, 1, 28, 28), np.float32)}
    with TensorRTRunner(path) as runner, pytest.MonkeyPatch.context() as patch:
        patch.setattr(trt.IExecutionContext, "execute_async_v3", lambda self, handle: False)
        assert message(ResnetDeployError, runner.infer, batch) == (
            f"{path.name}: execute_async_v3 failed (see the TensorRT log)")
        patch.setattr(trt.IExecutionContext, "set_input_shape", lambda self, name, shape: False)
        assert message(ResnetDeployError, runner.infer, batch) == (
            f"{path.name}: TensorRT rejected input shape (2, 1, 28, 28)")
    rec.misalign = 64
    with TensorRTRunner(path) as runner:
        address = int(runner._loop.buffers["input"].device)
        assert message(ResnetDeployError, runner.infer, batch) == (
            f"{path.name}: TensorRT refused address {address:#x} for tensor 'input' (null or not 256-byte aligned; "
            "see the TensorRT log)")
    assert not calls(rec, "IExecutionContext", "execute_async_v3")[1:], "only the first runner enqueued"


def test_bind_sets_the_shape_and_every_address_and_returns_the_output_shapes(gpu, tmp_path, graphs):
    rec, _ = gpu
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path) as runner:
        execution = runner._new_context()
        assert runner._bind(execution, (7, 1, 28, 28)) == {"logits": (7, 10)}
        assert execution._addresses == {name: int(b.device) for name, b in runner._loop.buffers.items()}


def test_an_inactive_runners_loop_is_an_error(gpu, tmp_path, graphs):
    runner = TensorRTRunner(engine(tmp_path, graphs), name="r")
    assert message(RunnerStateError, lambda: runner._active_loop) == "infer() called on inactive runner 'r'"
    assert message(RunnerStateError, runner._infer, {"input": np.zeros((1, 1, 28, 28), np.float32)}) == (
        "infer() called on inactive runner 'r'")


# -- threads -----------------------------------------------------------------------------------------------------


def in_thread(call):
    result = {}

    def target():
        try:
            result["value"] = call()
        except Exception as exc:  # noqa: BLE001 - handed to the test
            result["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    return result


def test_a_thread_safe_runner_serves_other_threads_under_its_lock(gpu, tmp_path, graphs, images, reference,
                                                                   monkeypatch):
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path) as runner:
        held = []
        run = cuda.StreamLoop.run
        monkeypatch.setattr(cuda.StreamLoop, "run", lambda self, *a: held.append(runner._lock.locked()) or run(self, *a))
        result = in_thread(lambda: runner.infer({"input": images[:2]})["logits"])
        np.testing.assert_allclose(result["value"], reference[:2], rtol=1e-5, atol=1e-5)
        assert held == [True] and not runner._lock.locked()


def test_a_runner_made_not_thread_safe_serves_only_its_thread_without_the_lock(gpu, tmp_path, graphs, images,
                                                                                monkeypatch):
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path, name="mine", thread_safe=False) as runner:
        held = []
        run = cuda.StreamLoop.run
        monkeypatch.setattr(cuda.StreamLoop, "run", lambda self, *a: held.append(runner._lock.locked()) or run(self, *a))
        assert runner.infer({"input": images[:1]})["logits"].shape == (1, 10) and held == [False]
        error = in_thread(lambda: runner.infer({"input": images[:1]}))["error"]
    assert isinstance(error, RunnerStateError) and str(error) == (
        "runner 'mine' was made with thread_safe=False and is used from another thread than the one that activated "
        "it; use one runner per thread")


# -- CUDA graphs -------------------------------------------------------------------------------------------------


def test_graph_slots_are_capped_with_one_notice(gpu, tmp_path, graphs, images, reference):
    rec, _ = gpu
    path = engine(tmp_path, graphs)
    notices: list[str] = []
    with TensorRTRunner(path, cuda_graph=True, notice=notices.append, max_graph_shapes=2) as runner:
        for rows in (1, 2, 3, 1, 4, 2, 3):
            np.testing.assert_allclose(runner.infer({"input": images[:rows]})["logits"], reference[:rows], rtol=1e-5,
                                       atol=1e-5)
        assert runner.cuda_graphs == {"requested": True, "captured": [[1, 1, 28, 28], [2, 1, 28, 28]],
                                      "fallback": None}
        assert sorted(runner._graph_contexts) == [(1, 1, 28, 28), (2, 1, 28, 28)]
    assert notices == [f"{path.name}: 2 batch shapes have CUDA graphs (the cap, max_graph_shapes); batch shape "
                       "(3, 1, 28, 28) and other new shapes run without a graph"]
    assert len(calls(rec, "ICudaEngine", "create_execution_context")) == 3, "the main context and one per graph"
    assert set(rec.memory) == rec.freed and rec.executables == {} and runner._graph_contexts == {}


def test_the_default_cap_is_four_shapes_and_the_default_notice_a_runtime_warning(gpu, tmp_path, graphs, images):
    path = engine(tmp_path, graphs)
    with TensorRTRunner(path, cuda_graph=True) as runner:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            for rows in (1, 2, 3, 4, 5, 6):
                runner.infer({"input": images[:rows]})
        assert len(runner.cuda_graphs["captured"]) == 4
    assert [(w.category, str(w.message)) for w in seen] == [(RuntimeWarning, (
        f"{path.name}: 4 batch shapes have CUDA graphs (the cap, max_graph_shapes); batch shape (5, 1, 28, 28) and "
        "other new shapes run without a graph"))]


def test_after_a_failed_capture_the_graph_contexts_are_dropped(gpu, tmp_path, graphs, images, reference):
    rec, trt = gpu
    path = engine(tmp_path, graphs)
    notices: list[str] = []
    with TensorRTRunner(path, cuda_graph=True, notice=notices.append) as runner:
        runner._engine._plan["plugin_synchronizes"] = True
        np.testing.assert_allclose(runner.infer({"input": images[:2]})["logits"], reference[:2], rtol=1e-5, atol=1e-5)
        assert runner._graph_contexts == {} and runner.cuda_graphs["fallback"] is not None
        np.testing.assert_allclose(runner.infer({"input": images[:3]})["logits"], reference[:3], rtol=1e-5, atol=1e-5)
        assert runner._graph_contexts == {}
    assert len(notices) == 1 and notices[0].startswith(f"{path.name}: CUDA graph capture failed for batch shape")
