"""`resnet-deploy build`: the chain on a trained model, stage reuse, --strict, and the engine step on fakes.

Tests of the chain without TensorRT hide it (`no_tensorrt`), so they mean the same on a GPU runner
where TensorRT is installed; the engine step runs on the fakes.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

import pytest

from resnet_deploy.cli import main
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.pipeline import BuildOptions, build
from resnet_deploy.trt.settings import EngineSettings
from tests import fakes

pytestmark = pytest.mark.slow


def fp16_options(tmp_path, checkpoint, **kwargs) -> BuildOptions:
    return BuildOptions(precision="fp16", checkpoint=checkpoint, artifacts_dir=tmp_path / "artifacts",
                        calibration_dir=tmp_path / "calibration", engines_dir=tmp_path / "engines",
                        reports_dir=tmp_path / "reports", parity_limit=2000, **kwargs)


def test_int8_chain_without_tensorrt_then_reuse(int8_build, no_tensorrt):
    options, first = int8_build
    assert [s.name for s in first.stages] == ["export", "int8", "parity"]
    assert not any(s.skipped for s in first.stages)
    assert first.artifact.name.endswith(".qdq.onnx") and first.engine is None
    assert "TensorRT is not installed here (tensorrt and pycuda missing)" in first.engine_message
    assert "--onnx" in first.engine_message
    assert {a["precision"] for a in first.parity["artifacts"]} == {"fp32", "int8"} and first.parity["passed"]
    started = time.perf_counter()
    second = build(options, log=lambda _: None)
    assert all(s.skipped for s in second.stages) and time.perf_counter() - started < 10
    assert second.artifact == first.artifact


def test_changed_settings_rerun_the_stage(tmp_path, trained_checkpoint, no_tensorrt):
    build(fp16_options(tmp_path, trained_checkpoint), log=lambda _: None)
    again = build(fp16_options(tmp_path, trained_checkpoint, max_drop_pp=0.4), log=lambda _: None)
    assert [s.skipped for s in again.stages] == [True, True, False]


def test_cli_strict_exits_1_without_tensorrt(tmp_path, trained_checkpoint, monkeypatch, capsys, no_tensorrt):
    monkeypatch.chdir(tmp_path)
    args = ["build", "--precision", "fp16", "--checkpoint", str(trained_checkpoint)]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0 and "TensorRT is not installed here" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:
        main(args + ["--strict"])
    assert exit_info.value.code == 1 and "--strict" in capsys.readouterr().err


def test_engine_step_with_tensorrt_fakes(int8_build, monkeypatch):
    _, trt = fakes.install(monkeypatch, "11.4")
    engine = EngineSettings(precision="int8", max_batch=64, opt_batch=16)
    options = replace(int8_build[0], engine=engine)
    result = build(options, log=lambda _: None)
    assert [s.skipped for s in result.stages] == [True, True, True, False, False]
    assert result.engine.is_file() and result.engine_message is None
    sidecar = json.loads(result.engine.with_suffix(".json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["tensorrt_version"] == trt.__version__
    report = json.loads((options.reports_dir / f"parity-{result.engine.stem}.json").read_text())
    assert report["artifacts"][0]["backend"] == "tensorrt" and report["passed"]
    assert [s.name for s in result.stages][-2:] == ["engine", "engine parity"]
    again = build(options, log=lambda _: None)
    assert all(s.skipped for s in again.stages)
    tf32 = build(replace(options, engine=engine.replace(tf32=True)), log=lambda _: None)
    assert [s.name for s in tf32.stages if not s.skipped] == ["engine", "engine parity"]
    assert tf32.engine != result.engine and "-tf32_" in tf32.engine.name


def test_onnx_of_another_precision_is_refused(int8_build, no_tensorrt):
    qdq = int8_build[1].artifact
    with pytest.raises(ResnetDeployError, match="is an int8 graph; --precision fp16 needs the FP32 ONNX"):
        build(BuildOptions(precision="fp16", onnx=qdq), log=lambda _: None)


def test_engine_settings_of_another_precision_are_refused():
    with pytest.raises(ResnetDeployError, match="the engine settings say precision 'fp16', the build 'int8'"):
        BuildOptions(precision="int8", engine=EngineSettings(precision="fp16"))
    assert BuildOptions(precision="fp16").engine == EngineSettings(precision="fp16")


@pytest.mark.parametrize("name", ["best.pt", "last.pt", "./best.pt"])
def test_artifacts_are_named_after_the_run_folder_also_from_inside_it(tmp_path, monkeypatch, name):
    from pathlib import Path

    from resnet_deploy.pipeline import artifact_stem

    run = tmp_path / "resnet18-w0.125"
    run.mkdir()
    monkeypatch.chdir(run)
    assert artifact_stem(Path(name)) == "resnet18-w0.125"  # was "" (artifacts/.onnx, then exit 2 after parity)
    assert artifact_stem(run / name) == "resnet18-w0.125"
    assert artifact_stem(Path("model-a.pt")) == "model-a"
