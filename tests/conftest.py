"""Shared fixtures: the real Fashion-MNIST files and small models trained on them."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
CANDIDATE_DATA_DIRS = [
    os.environ.get("RESNET_DEPLOY_DATA"),
    REPO.parent / "shared" / "data" / "fashion-mnist",
    "/usr/share/datasets/fashion-mnist",
]


def _user_cache() -> Path:
    from resnet_deploy.data import cache_dir

    return cache_dir()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real Fashion-MNIST folder; the suite fails (never skips) without it."""
    from resnet_deploy.data import has_all_files

    for candidate in [*CANDIDATE_DATA_DIRS, _user_cache()]:
        if candidate and has_all_files(Path(candidate)):
            return Path(candidate)
    pytest.fail("Fashion-MNIST not found; set RESNET_DEPLOY_DATA or place ../shared/data/fashion-mnist")


@pytest.fixture(scope="session", autouse=True)
def offline_data(data_dir):
    """Every test finds the real files locally, and any download attempt goes to a closed local port."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RESNET_DEPLOY_DATA", str(data_dir))
        patch.setenv("RESNET_DEPLOY_MIRROR", "http://127.0.0.1:9/")
        # CI=true makes a skipped latency check fail (bench.ci_strict); tests that mean it set it themselves,
        # so the suite asserts the same under CI as on a laptop.
        patch.delenv("CI", raising=False)
        yield


TINY_RECIPE = dict(model="resnet18", width=0.125, epochs=2, train_limit=8192, batch_size=128,
                   lr=0.2, seed=0, threads=2)


@pytest.fixture
def cli(capsys, monkeypatch, tmp_path):
    """Run `resnet-deploy ARGS` in-process in `tmp_path`; returns a `cli_runner.Result` (exit code, output)."""
    from resnet_deploy.cli import run
    from tests.cli_runner import Result

    monkeypatch.chdir(tmp_path)

    def call(*args) -> Result:
        capsys.readouterr()
        code = run([str(a) for a in args])
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


@pytest.fixture
def no_tensorrt(monkeypatch):
    """This machine as a host without TensorRT and pycuda, whatever is installed (for GPU runners too)."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)


@pytest.fixture(scope="session")
def untrained_onnx(tmp_path_factory) -> Path:
    """An untrained resnet18 at width 0.125 exported to ONNX (BN folded), for graph-level tests."""
    from tests.exported import untrained_onnx as export_untrained

    return export_untrained("resnet18-w0.125", tmp_path_factory.mktemp("untrained-onnx") / "tiny.onnx")


@pytest.fixture(scope="session")
def untrained_amax(untrained_onnx, data_dir) -> dict[str, float]:
    """`max` activation ranges of `untrained_onnx` from 64 train-split images."""
    from resnet_deploy import data
    from resnet_deploy.quantize.calibrate import calibrate_onnx

    return calibrate_onnx(untrained_onnx, data.calibration_images(64, data_dir=data_dir), "max")


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, data_dir) -> Path:
    """A resnet18 at width 0.125 trained for two short epochs on 8k real images (about 75-80% top-1)."""
    pytest.importorskip("torch")
    from resnet_deploy.train import TrainConfig, train

    result = train(TrainConfig(**TINY_RECIPE), tmp_path_factory.mktemp("tiny-run"), data_dir=data_dir)
    return result.best_checkpoint


@pytest.fixture(scope="session")
def trained_onnx(request, tmp_path_factory) -> Path:
    """The FP32 ONNX export of `trained_checkpoint` (without torch: the one the torch side exported)."""
    path = tmp_path_factory.mktemp("trained-onnx") / "tiny.onnx"
    try:
        from resnet_deploy.checkpoint import load_checkpoint
    except ImportError:
        from tests.exported import trained_onnx_from_folder

        return trained_onnx_from_folder(path)
    from resnet_deploy.export import export_onnx

    model, _ = load_checkpoint(request.getfixturevalue("trained_checkpoint"))
    export_onnx(model, path)
    return path


@pytest.fixture(scope="session")
def int8_build(tmp_path_factory, trained_checkpoint, data_dir):
    """`build --precision int8` from the trained checkpoint without TensorRT, once per session: the FP32
    export, the Q/DQ graph and calibration cache of every method (256 train images), the parity report.
    Tests read these artifacts instead of calibrating the trained model again. Returns (options, result)."""
    from resnet_deploy.pipeline import BuildOptions, build

    root = tmp_path_factory.mktemp("int8-build")
    options = BuildOptions(precision="int8", checkpoint=trained_checkpoint, artifacts_dir=root / "artifacts",
                           calibration_dir=root / "calibration", engines_dir=root / "engines",
                           reports_dir=root / "reports", calibration_count=256, parity_limit=2000, data_dir=data_dir)
    with pytest.MonkeyPatch.context() as patch:  # the chain as on a host without TensorRT, whatever is installed
        patch.setitem(sys.modules, "tensorrt", None)
        patch.setitem(sys.modules, "pycuda", None)
        return options, build(options, log=lambda _: None)


@pytest.fixture(scope="session")
def int8_artifacts(int8_build):
    """(the FP32 ONNX the build exported, its `Int8Paths`, the calibration summary)."""
    import json

    from resnet_deploy.quantize.int8 import Int8Paths

    options, result = int8_build
    fp32_onnx = result.stages[0].outputs[0]
    paths = Int8Paths(options.calibration_dir, fp32_onnx.stem)
    return fp32_onnx, paths, json.loads(paths.summary.read_text())
