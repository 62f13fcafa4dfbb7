"""The command line's TensorRT side: one line and exit 2 without TensorRT, and the `build` engine options."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from resnet_deploy.cli import main
from resnet_deploy.cli.options import engine_options, engine_settings
from resnet_deploy.trt import compat
from resnet_deploy.trt.settings import EngineSettings


@pytest.fixture
def no_tensorrt(monkeypatch):
    """This machine as a host without TensorRT and pycuda, whatever is installed."""
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)


@pytest.fixture
def engine_file(tmp_path) -> Path:
    engine = tmp_path / "tiny_fp16_b8_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine"
    engine.write_bytes(b"plan")
    sidecar = {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "precision": "fp16", "platform": "aarch64",
               "integrated_gpu": True, "gpu_name": "NVIDIA Jetson AGX Orin"}
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    return engine


@pytest.mark.parametrize("command", ["infer", "parity", "bench", "inspect"])
def test_engine_commands_without_tensorrt_exit_2_with_one_line(no_tensorrt, engine_file, tmp_path, capsys, command):
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"not used: the engine is refused first")
    args = {"infer": ["infer", str(engine_file), "--count", "2"],
            "parity": ["parity", "--checkpoint", str(checkpoint), str(engine_file), "--limit", "16"],
            "bench": ["bench", str(engine_file), "--batch-sizes", "1", "--iterations", "2"],
            "inspect": ["inspect", str(engine_file)]}[command]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert exit_info.value.code == 2 and len(lines) == 1, err
    assert "needs tensorrt and pycuda, not installed here" in lines[0] and "pip install" in lines[0]
    assert "Traceback" not in out + err
    if command == "inspect":
        assert json.loads(out)["precision"] == "fp16", "inspect still prints the sidecar"


def test_build_engine_options_make_engine_settings(monkeypatch):
    monkeypatch.setattr(compat, "_verbose", False)
    made = {}

    @click.command()
    @engine_options
    def command(**values):
        made["settings"] = engine_settings("fp16", values)

    result = CliRunner().invoke(command, ["--min-batch", "4", "--opt-batch", "4", "--max-batch", "4", "--dla-core", "1",
                                          "--tf32", "--device", "1", "--workspace-mib", "512", "--verbose"])
    assert result.exit_code == 0, result.output
    assert made["settings"] == EngineSettings(precision="fp16", min_batch=4, opt_batch=4, max_batch=4, dla_core=1,
                                              tf32=True, device=1, workspace_mib=512,
                                              timing_cache=Path("engines/timing.cache"))
    assert compat._verbose is True
    CliRunner().invoke(command, [])
    defaults = EngineSettings(precision="fp16", timing_cache=Path("engines/timing.cache"))
    assert made["settings"] == defaults, "the option defaults are EngineSettings' own"


def test_build_refuses_impossible_engine_settings_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "--precision", "fp16", "--dla-core", "0"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "DLA needs a fixed shape" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "artifacts").exists() and not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("legacy", [False, True])
def test_build_repeats_the_fallback_options_for_a_legacy_build_on_the_target(tmp_path, monkeypatch, legacy):
    """Without TensorRT here, a legacy build is redone on the target from the FP32 ONNX: the command suggested
    for it must keep the INT8 fallback, or the target would build all-INT8."""
    import importlib

    from resnet_deploy.pipeline import BuildResult

    made = {}

    def run_build(options, log):
        made["options"] = options
        return BuildResult([], tmp_path / "tiny.onnx", None, None, None)

    monkeypatch.setattr(importlib.import_module("resnet_deploy.cli.build"), "run_build", run_build)
    args = ["build", "--keep-fp32", "first", "--exclude", "layer2.0.conv1", "--max-batch", "64"]
    with pytest.raises(SystemExit) as exit_info:
        main(args + (["--legacy-calibrator"] if legacy else []))
    assert exit_info.value.code == 0
    flags = " ".join(made["options"].target_flags)
    assert "--max-batch 64" in flags and ("--legacy-calibrator" in flags) == legacy
    assert ("--keep-fp32 first" in flags and "--exclude layer2.0.conv1" in flags) == legacy
