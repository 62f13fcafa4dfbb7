"""The trtexec command line generated from EngineSettings names every setting that changes the engine."""

from __future__ import annotations

import json
import shlex

import pytest

from resnet_deploy.errors import ArtifactError
from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.trtexec import trtexec_args, trtexec_command

pytestmark = pytest.mark.runtime


def flags(settings: EngineSettings, **kwargs) -> list[str]:
    return trtexec_args(settings, "m.onnx", "m.engine", **kwargs)[1:]


def test_defaults_are_strongly_typed_with_the_profile_workspace_and_tf32_off():
    args = flags(EngineSettings())
    assert args == ["--onnx=m.onnx", "--saveEngine=m.engine", "--stronglyTyped", "--minShapes=input:1x1x28x28",
                    "--optShapes=input:32x1x28x28", "--maxShapes=input:256x1x28x28", "--memPoolSize=workspace:1024M",
                    "--noTF32"]


def test_every_setting_appears(tmp_path):
    """Each non-default field of EngineSettings changes the command line; none is silently dropped."""
    settings = EngineSettings(precision="fp16", min_batch=4, opt_batch=4, max_batch=4, workspace_mib=512,
                              timing_cache=tmp_path / "t.cache", dla_core=1, version_compatible=True,
                              strongly_typed=False, tf32=True, device=2)
    args = flags(settings)
    for expected in ("--fp16", "--minShapes=input:4x1x28x28", "--optShapes=input:4x1x28x28",
                     "--maxShapes=input:4x1x28x28", "--memPoolSize=workspace:512M",
                     f"--timingCacheFile={tmp_path / 't.cache'}", "--useDLACore=1", "--allowGPUFallback",
                     "--versionCompatible", "--device=2"):
        assert expected in args
    assert "--noTF32" not in args and "--stronglyTyped" not in args
    hardware = flags(EngineSettings(hardware_compatibility="ampere_plus"))
    assert "--hardwareCompatibilityLevel=ampere+" in hardware
    same = flags(EngineSettings(hardware_compatibility="same_compute_capability"))
    assert "--hardwareCompatibilityLevel=sameComputeCapability" in same
    # Strongly typed, the precision is the graph's (--onnx names the FP16 or Q/DQ file), not a flag.
    default = set(flags(EngineSettings()))
    for field, value in (("workspace_mib", 2048), ("opt_batch", 64), ("max_batch", 128), ("tf32", True),
                         ("version_compatible", True), ("device", 1), ("timing_cache", tmp_path / "x"),
                         ("strongly_typed", False), ("legacy_calibrator", True)):
        changed = EngineSettings(**{field: value})
        assert set(flags(changed, calibration_cache="c.cache")) != default, field


def test_legacy_int8_uses_the_cache_and_both_precision_flags():
    args = flags(EngineSettings(precision="int8", legacy_calibrator=True), calibration_cache="model/m.cache")
    assert {"--int8", "--fp16", "--calib=model/m.cache"} <= set(args) and "--stronglyTyped" not in args
    with pytest.raises(ArtifactError, match="--calib"):
        flags(EngineSettings(precision="int8", legacy_calibrator=True))
    weak = flags(EngineSettings(precision="int8", strongly_typed=False))
    assert {"--int8", "--fp16"} <= set(weak) and not any(a.startswith("--calib") for a in weak)
    assert not any(a in ("--int8", "--fp16", "--stronglyTyped") for a in flags(EngineSettings(precision="fp32",
                                                                                             strongly_typed=False)))


def test_fallback_layer_precisions_are_obeyed(tmp_path):
    spec = tmp_path / "m.layer-precisions.json"
    spec.write_text(json.dumps({"format": "resnet-deploy-layer-precisions", "source_onnx_sha256": "0" * 64,
                                "layers": [{"name": "conv1", "precision": "fp16"}, {"name": "fc", "precision": "fp32"}]}))
    from resnet_deploy.quantize.fallback import LAYER_PRECISIONS_FORMAT

    spec.write_text(spec.read_text().replace("resnet-deploy-layer-precisions", LAYER_PRECISIONS_FORMAT))
    settings = EngineSettings(precision="int8", legacy_calibrator=True, layer_precisions=spec)
    args = flags(settings, calibration_cache="c.cache")
    assert "--layerPrecisions=conv1:fp16,fc:fp32" in args and "--precisionConstraints=obey" in args
    assert "--int8" in args and "--fp16" in args


def test_the_command_is_one_shell_line_that_splits_back():
    line = trtexec_command(EngineSettings(), "my model.onnx", "out/m.engine", input_name="x", input_shape=(3, 8, 8))
    assert shlex.split(line)[1:3] == ["--onnx=my model.onnx", "--saveEngine=out/m.engine"]
    assert "--minShapes=x:1x3x8x8" in shlex.split(line)
