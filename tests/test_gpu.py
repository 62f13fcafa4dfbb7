"""Real TensorRT + pycuda integration: skipped only where tensorrt or pycuda cannot be imported.

Where both import, every test runs and a broken driver, GPU or pycuda build fails them (no silent
skip). Builds an engine of each precision from real ONNX graphs of a trained model, checks accuracy
parity on the full 10k test split, the legacy calibrator where TensorRT still has it, and runs
10,000 batches (and repeated activations) watching free device memory for a leak smaller than one
activation's I/O buffers, and compares CUDA-graph replays with plain enqueues.
"""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.trt.compat import missing_modules

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(bool(missing_modules()),
                                                  reason=f"{' and '.join(missing_modules())} not importable here")]


@pytest.fixture(scope="session", autouse=True)
def gpu_stack():
    """TensorRT imports and GPU 0 answers through pycuda; otherwise every test here errors at once."""
    import tensorrt

    from resnet_deploy.trt.cuda import device_info

    return tensorrt.__version__, device_info(0)


@pytest.fixture(scope="module")
def portable_artifacts(tmp_path_factory, trained_checkpoint, data_dir):
    """The whole build chain per precision, parity gates on the full test split included."""
    from resnet_deploy.pipeline import BuildOptions, build
    from resnet_deploy.trt.settings import EngineSettings

    out = tmp_path_factory.mktemp("gpu")
    artifacts = {}
    for precision in ("fp32", "fp16", "int8"):
        options = BuildOptions(precision=precision, checkpoint=trained_checkpoint, artifacts_dir=out / "artifacts",
                               calibration_dir=out / "calibration", engines_dir=out / "engines",
                               reports_dir=out / "reports", data_dir=data_dir,
                               engine=EngineSettings(precision=precision, max_batch=256))
        artifacts[precision] = build(options, log=lambda _: None)
    return artifacts


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_and_keeps_accuracy_parity(portable_artifacts, precision):
    import tensorrt

    from resnet_deploy.trt.sidecar import read_sidecar

    result = portable_artifacts[precision]
    assert result.engine is not None and result.engine.is_file()
    (stage,) = [s for s in result.stages if s.name == "engine parity"]
    assert stage.details["passed"] and stage.details["dataset"] == {"split": "test", "count": 10_000}
    sidecar = read_sidecar(result.engine)
    assert sidecar["tensorrt_version"] == tensorrt.__version__ and sidecar["precision"] == precision


def test_legacy_calibrator_engine_keeps_parity(portable_artifacts, tmp_path, data_dir):
    import tensorrt

    from resnet_deploy.parity import parity_for_artifacts
    from resnet_deploy.trt.builder import build_engine
    from resnet_deploy.trt.compat import capabilities
    from resnet_deploy.trt.settings import EngineSettings

    if not capabilities(tensorrt).legacy_calibrator:
        pytest.skip(f"TensorRT {tensorrt.__version__} has no calibrators")
    stages = {s.name: s for s in portable_artifacts["int8"].stages}
    fp32_onnx, cache = stages["export"].outputs[0], stages["int8"].outputs[1]
    info = build_engine(fp32_onnx, EngineSettings(precision="int8", legacy_calibrator=True), tmp_path,
                        calibration_cache=cache, log=lambda _: None)
    report = parity_for_artifacts(fp32_onnx, [info.engine_path], tmp_path / "parity.json", data_dir=data_dir)
    assert report["passed"]


def test_no_device_memory_leak_over_10000_batches(portable_artifacts, data_dir):
    """Free device memory stays flat over 10,000 batches and 20 activations, within one activation's I/O buffers."""
    from resnet_deploy import data
    from resnet_deploy.runners import load_runner
    from resnet_deploy.trt.cuda import driver, pushed

    batch = data.normalize(data.load_fashion_mnist(data_dir).test_images[:32])
    engine = portable_artifacts["int8"].engine

    def free_bytes() -> int:
        with pushed(0):
            return driver().mem_get_info()[0]

    with load_runner(engine) as runner:
        runner.infer({"input": batch})
        io_bytes = runner.io_bytes
        before = free_bytes()
        for _ in range(10_000):
            runner.infer({"input": batch})
        after_batches = free_bytes()
        assert np.isfinite(runner.last_timings["compute"]) and runner.last_timings["compute"] > 0
    for _ in range(20):
        with load_runner(engine) as runner:
            runner.infer({"input": batch})
    after_cycles = free_bytes()
    assert io_bytes >= 256 * 28 * 28 * 4, "buffers sized for the profile's max batch"
    assert before - after_batches < io_bytes
    assert before - after_cycles < io_bytes, "20 activations must not leak even one activation's I/O buffers"


def test_cuda_graph_replays_match_plain_enqueues(portable_artifacts, data_dir):
    """--cuda-graph on a real GPU: every batch shape is captured (no fallback) and replays give the outputs of
    plain enqueues, for shapes seen again after others."""
    from resnet_deploy import data
    from resnet_deploy.runners import load_runner

    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:512])
    sizes = [1, 32, 7, 1, 32, 256, 7]
    starts = np.cumsum([0, *sizes[:-1]]) % 256
    batches = [images[s:s + n] for s, n in zip(starts, sizes)]
    engine = portable_artifacts["fp16"].engine
    with load_runner(engine) as plain:
        expected = [plain.infer({"input": b})["logits"] for b in batches]
    notices = []
    with load_runner(engine, cuda_graph=True, notice=notices.append) as graphed:
        outputs = [graphed.infer({"input": b})["logits"] for b in batches]
        status = graphed.cuda_graphs
    assert notices == [] and status["fallback"] is None
    assert sorted(status["captured"]) == sorted([n, 1, 28, 28] for n in set(sizes))
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3)
