"""CUDA graphs in the TensorRT runner (`cuda_graph=True`) and the fake driver's capture rules, on the fakes.

No GPU ran this: the order of calls and the outputs are checked against fake_pycuda's `FakeLibcuda`
and the fake TensorRT, which record work queued on a capturing stream and replay it on launch.
"""

from __future__ import annotations

import ctypes
import json
import threading

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.runners import load_runner
from resnet_deploy.trt import cuda, cudagraph
from tests.fake_engines import engine, gpu, graphs  # noqa: F401 (fixtures)
from tests.fakes import fake_pycuda

pytestmark = pytest.mark.runtime
SHAPES = [8, 3, 8, 3, 1, 8]


@pytest.fixture(scope="module")
def images(data_dir):
    return data.normalize(data.load_fashion_mnist(data_dir).test_images[:64])


def batches(images):
    start = 0
    for size in SHAPES:
        yield images[start:start + size]
        start += size


def run_all(engine, images, notices=None, **options):
    notices = [] if notices is None else notices
    with load_runner(engine, cuda_graph=True, notice=notices.append, **options) as runner:
        outputs = [runner.infer({"input": batch})["logits"] for batch in batches(images)]
        status = runner.cuda_graphs
    return outputs, status


def test_graph_replays_give_the_outputs_of_plain_enqueues(engine, images):
    with load_runner(engine) as plain:
        expected = [plain.infer({"input": batch})["logits"] for batch in batches(images)]
        assert plain.cuda_graphs is None
    notices = []
    outputs, status = run_all(engine, images, notices)
    assert notices == [] and status == {"requested": True, "captured": [[8, 1, 28, 28], [3, 1, 28, 28],
                                                                        [1, 1, 28, 28]], "fallback": None}
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)


def test_warm_up_enqueue_then_capture_then_replays_of_that_shape(gpu, engine, images):
    rec, _ = gpu
    with load_runner(engine, cuda_graph=True) as runner:
        first_start = len(rec.calls)
        runner.infer({"input": images[:4]})
        first = [c for c in rec.calls[first_start:] if c[0] not in ("event", "push", "pop")]
        replay_start = len(rec.calls)
        replayed = runner.infer({"input": images[4:8]})["logits"]
        replay = [c for c in rec.calls[replay_start:] if c[0] not in ("event", "push", "pop")]
    names = [c[1] if c[0] in ("IExecutionContext", "ICudaEngine") else c[0] for c in first]
    executes = [i for i, n in enumerate(names) if n == "execute_async_v3"]
    assert len(executes) == 2, "one warm-up enqueue and one captured enqueue"
    warm_up, captured = executes
    assert names.index("htod") < warm_up < names.index("synchronize") < names.index("begin_capture") < captured
    assert captured < names.index("end_capture") < names.index("instantiate") < names.index("graph_destroy")
    assert names.index("graph_destroy") < names.index("dtoh")
    assert ("captured", "execute_async_v3", first[captured][2]) in first, "the captured enqueue did not run"
    assert names.index("create_execution_context") < names.index("set_input_shape") < warm_up
    assert first[names.index("begin_capture")][2] == cudagraph.CAPTURE_MODE_THREAD_LOCAL
    replay_names = [c[1] if c[0] == "IExecutionContext" else c[0] for c in replay]
    assert replay_names == ["htod", "graph_launch", "dtoh", "synchronize"], "a replay only launches the graph"
    with load_runner(engine) as plain:
        np.testing.assert_array_equal(replayed, plain.infer({"input": images[4:8]})["logits"])
    handles = {c[-1] for c in replay if c[0] in ("htod", "graph_launch", "dtoh", "synchronize")}
    assert len(handles) == 1 and 0 not in handles, "one non-default stream"


def test_one_graph_and_one_execution_context_per_batch_shape_all_freed(gpu, engine, images):
    rec, _ = gpu
    contexts_before = sum(c[:2] == ("ICudaEngine", "create_execution_context") for c in rec.calls)
    run_all(engine, images)
    assert sum(c[0] == "instantiate" for c in rec.calls) == len(set(SHAPES))
    assert sum(c[0] == "begin_capture" for c in rec.calls) == len(set(SHAPES))
    contexts = sum(c[:2] == ("ICudaEngine", "create_execution_context") for c in rec.calls) - contexts_before
    assert contexts == 1 + len(set(SHAPES)), "the main context and one per captured shape"
    assert rec.executables == {} and rec.graphs == {} and rec.captures == {}
    assert set(rec.memory) == rec.freed and rec.pinned_alive() == 0 and rec.context_depth == 0


def test_a_capture_that_fails_falls_back_with_one_notice(gpu, engine, images):
    """An engine whose plugin synchronizes inside enqueue cannot be captured: one notice, right outputs, no graphs."""
    rec, _ = gpu
    with load_runner(engine) as plain:
        expected = [plain.infer({"input": batch})["logits"] for batch in batches(images)]
    plan = json.loads(engine.read_bytes())
    engine.write_bytes(json.dumps({**plan, "plugin_synchronizes": True}).encode())
    notices = []
    outputs, status = run_all(engine, images, notices)
    (notice,) = notices
    assert notice.startswith(f"{engine.name}: CUDA graph capture failed for batch shape (8, 1, 28, 28): ")
    assert "execute_async_v3 failed" in notice and notice.endswith("running without CUDA graphs (as trtexec does)")
    assert status == {"requested": True, "captured": [], "fallback": notice.split(": ", 1)[1]}
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)
    assert sum(c[0] == "begin_capture" for c in rec.calls) == 1, "no capture is tried after the fallback"
    end = [c for c in rec.calls if c[0] == "end_capture"]
    assert len(end) == 1 and rec.captures == {} and rec.graphs == {} and rec.executables == {}
    assert ("IExecutionContext", "error") in [c[:2] for c in rec.calls]


def test_the_default_notice_is_a_runtime_warning(engine, images, monkeypatch):
    def no_library():
        raise OSError("libcuda.so.1: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(cudagraph, "cuda_library", no_library)
    with pytest.warns(RuntimeWarning, match="CUDA graphs are not available here .libcuda.so.1 cannot be loaded"):
        with load_runner(engine, cuda_graph=True) as runner:
            runner.infer({"input": images[:2]})
            assert runner.cuda_graphs["fallback"].endswith("running without them")


def test_a_driver_without_the_graph_functions_is_a_notice_not_an_error(gpu, engine, images, monkeypatch):
    rec, _ = gpu
    monkeypatch.delattr(rec.libcuda, "cuGraphInstantiateWithFlags")
    notices = []
    outputs, status = run_all(engine, images, notices)
    assert notices == [f"{engine.name}: CUDA graphs are not available here (the CUDA driver has no "
                       "cuGraphInstantiateWithFlags (CUDA 11.4 or later needed)); running without them"]
    assert status["captured"] == [] and len(outputs) == len(SHAPES)


# ---- the fake driver's capture rules (what CUDA refuses), each tested -------------------------------

@pytest.fixture
def driver_api(monkeypatch):
    rec = fake_pycuda.install(monkeypatch)
    with cuda.pushed(0):
        yield rec, cudagraph.load_graph_api(), cuda.driver().Stream()


def test_capture_on_the_legacy_default_stream_is_refused(driver_api):
    _, api, _ = driver_api
    with pytest.raises(cudagraph.CudaGraphError, match="CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED .900."):
        api.begin_capture(0)


@pytest.mark.parametrize("call", [
    lambda stream: stream.synchronize(),
    lambda stream: cuda.driver().mem_alloc(64),
    lambda stream: cuda.driver().pagelocked_empty((4,), np.float32),
    lambda stream: cuda.driver().Context.synchronize(),
])
def test_synchronizing_or_allocating_while_capturing_is_refused_and_invalidates(driver_api, call):
    rec, api, stream = driver_api
    api.begin_capture(stream.handle)
    with pytest.raises(RuntimeError, match="CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED"):
        call(stream)
    with pytest.raises(cudagraph.CudaGraphError, match="CUDA_ERROR_STREAM_CAPTURE_INVALIDATED .901."):
        api.end_capture(stream.handle)
    assert rec.captures == {} and rec.graphs == {}


def test_captured_work_runs_only_when_the_graph_is_launched(driver_api):
    rec, api, stream = driver_api
    ran = []
    api.begin_capture(stream.handle)
    rec.launch(stream, lambda: ran.append(len(ran)))
    graph = api.end_capture(stream.handle)
    executable = api.instantiate(graph)
    api.destroy_graph(graph)
    assert ran == []
    api.launch(executable, stream.handle)
    api.launch(executable, stream.handle)
    assert ran == [], "launched work runs asynchronously, when the stream is synchronized"
    stream.synchronize()
    assert ran == [0, 1]
    api.destroy_executable(executable)
    with pytest.raises(cudagraph.CudaGraphError, match="CUDA_ERROR_INVALID_HANDLE"):
        api.launch(executable, stream.handle)


def test_a_capture_is_ended_by_the_thread_that_began_it(driver_api):
    rec, api, stream = driver_api
    api.begin_capture(stream.handle)
    errors = []

    def other_thread():
        with cuda.pushed(0):
            try:
                api.end_capture(stream.handle)
            except cudagraph.CudaGraphError as exc:
                errors.append(exc.code)

    worker = threading.Thread(target=other_thread)
    worker.start()
    worker.join()
    assert errors == [908]
    with pytest.raises(cudagraph.CudaGraphError, match="CUDA_ERROR_ILLEGAL_STATE"):
        api.begin_capture(stream.handle)
    api.destroy_graph(api.end_capture(stream.handle))


def test_capturing_the_first_enqueue_after_a_shape_change_fails_as_tensorrt_issue_2603(gpu, engine):
    """Why the runner enqueues once before capturing: without that warm-up TensorRT's capture fails."""
    rec, _ = gpu
    with load_runner(engine) as runner, cuda.pushed(0):
        execution = runner._engine.create_execution_context()
        runner._bind(execution, (2, 1, 28, 28))
        api, stream = cudagraph.load_graph_api(), runner._loop.stream
        api.begin_capture(stream.handle)
        assert execution.execute_async_v3(stream.handle) is False
        with pytest.raises(cudagraph.CudaGraphError, match="INVALIDATED"):
            api.end_capture(stream.handle)
        assert execution.execute_async_v3(stream.handle) is True  # the warm-up
        stream.synchronize()
        api.begin_capture(stream.handle)
        assert execution.execute_async_v3(stream.handle) is True
        api.destroy_graph(api.end_capture(stream.handle))


def test_the_fake_driver_checks_ctypes_arguments_like_the_prototypes(driver_api):
    rec, _, stream = driver_api
    function = rec.libcuda.cuStreamBeginCapture_v2
    with pytest.raises(ctypes.ArgumentError, match="argtypes None, cuda.h declares"):
        fake_pycuda.FakeFunction("cuStreamBeginCapture_v2", lambda *a: 0)(ctypes.c_void_p(1), ctypes.c_int(1))
    with pytest.raises(ctypes.ArgumentError, match="argument 2: expected c_int, got int"):
        function(ctypes.c_void_p(stream.handle), 1)
    with pytest.raises(ctypes.ArgumentError, match="expected LP_c_void_p, got c_void_p"):
        rec.libcuda.cuStreamEndCapture(ctypes.c_void_p(stream.handle), ctypes.c_void_p())


def test_graph_api_signatures_are_the_fake_prototypes():
    """Our C signatures (checked against cuda.h in test_fakes_match_real) give the fake's ctypes prototypes."""
    assert set(cudagraph.SIGNATURES) == set(fake_pycuda.PROTOTYPES)
    for name, parameters in cudagraph.SIGNATURES.items():
        assert tuple(cudagraph.CTYPES[p] for p in parameters) == fake_pycuda.PROTOTYPES[name], name


# ---- CUDA graphs that fit a Jetson ---------------------------------------------------------------------------

def test_a_second_batch_shape_does_not_double_the_context_memory(gpu, engine, images):
    """Every execution context (the main one and one per captured shape) shares one user-managed activation block."""
    rec, trt = gpu
    with load_runner(engine, cuda_graph=True) as runner:
        runner.infer({"input": images[:8]})
        with_one_shape = rec.device_bytes_in_use()
        runner.infer({"input": images[:3]})
        runner.infer({"input": images[:1]})
        assert rec.device_bytes_in_use() == with_one_shape and len(runner.cuda_graphs["captured"]) == 3
        size = runner._engine.device_memory_size_v2
        assert runner.activation_bytes == size > 0
    strategies = [c[2] for c in rec.calls if c[:2] == ("ICudaEngine", "create_execution_context")]
    assert strategies == ["USER_MANAGED"] * 4
    blocks = {c[2:] for c in rec.calls if c[:2] == ("IExecutionContext", "set_device_memory")}
    assert len(blocks) == 1 and next(iter(blocks))[1] == size
    assert set(rec.memory) == rec.freed


def test_captured_shapes_are_capped_with_one_notice(engine, images):
    notices = []
    outputs, status = run_all(engine, images, notices, max_graph_shapes=2)
    assert status["captured"] == [[8, 1, 28, 28], [3, 1, 28, 28]] and status["fallback"] is None
    assert notices == [f"{engine.name}: 2 batch shapes have CUDA graphs (the cap, max_graph_shapes); batch shape "
                       "(1, 1, 28, 28) and other new shapes run without a graph"]
    with load_runner(engine) as plain:
        for got, batch in zip(outputs, batches(images)):
            np.testing.assert_array_equal(got, plain.infer({"input": batch})["logits"])


def test_the_runner_captures_on_a_non_blocking_stream(gpu, engine, images):
    rec, _ = gpu
    with load_runner(engine, cuda_graph=True) as runner:
        runner.infer({"input": images[:2]})
        handle = runner._loop.stream.handle
    assert ("stream", handle, 1) in rec.calls


@pytest.mark.parametrize("flags, survives", [(0, False), (1, True)])
def test_legacy_stream_work_from_another_thread_breaks_only_a_blocking_capture(monkeypatch, flags, survives):
    """CUDA: the legacy default stream synchronizes with blocking streams, so its use during their capture is an
    error (CUDA_ERROR_STREAM_CAPTURE_IMPLICIT) that invalidates the capture; a non-blocking stream is unaffected."""
    rec = fake_pycuda.install(monkeypatch)
    errors = []

    def other_thread():
        with cuda.pushed(0):
            driver = cuda.driver()
            host = driver.pagelocked_empty((4,), np.float32)
            try:
                driver.memcpy_htod_async(driver.mem_alloc(16), host)
            except RuntimeError as exc:
                errors.append(str(exc))

    with cuda.pushed(0):
        api, stream = cudagraph.load_graph_api(), cuda.driver().Stream(flags=flags)
        api.begin_capture(stream.handle)
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
        if survives:
            api.destroy_graph(api.end_capture(stream.handle))
        else:
            with pytest.raises(cudagraph.CudaGraphError, match="INVALIDATED"):
                api.end_capture(stream.handle)
    assert bool(errors) != survives and all("CAPTURE_IMPLICIT" in e for e in errors)
