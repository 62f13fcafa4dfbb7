"""Sidecar edges pinned exactly (whole messages, boundaries, file names), written to kill the mutants
tools/mutation.sh found surviving in resnet_deploy/trt/sidecar.py beyond what tests/test_sidecar.py checks."""

from __future__ import annotations

import json
import sys
import types

import pytest

from resnet_deploy.errors import ArtifactError
from resnet_deploy.trt import cuda, sidecar
from resnet_deploy.trt.cuda import DeviceInfo
from resnet_deploy.trt.sidecar import (check_compatible, check_runs_here, engine_file_name, read_sidecar,
                                       sidecar_path, write_sidecar)

SIDECAR = {"tensorrt_version": "10.3.0", "compute_capability": "8.6", "gpu_name": "NVIDIA RTX A4000",
           "precision": "fp16", "platform": "x86_64", "integrated_gpu": False}


def here(cc="8.6", name="NVIDIA RTX A4000", integrated=False, platform="x86_64"):
    return DeviceInfo(0, name, cc, integrated, platform)


def test_file_names():
    assert sidecar_path("a/b.engine") == sidecar_path("a/b.plan") and str(sidecar_path("a/b.engine")) == "a/b.json"
    assert engine_file_name("--ResNet18 W+0.25--", "int8", 8, " Orin (nvgpu) ", "8.7", "10.3.0", ("dla1", "tf32")) == \
        "resnet18-w+0.25_int8-dla1-tf32_b8_sm87-orin-nvgpu_trt10.3.0.engine"


def test_write_and_read_round_trip(tmp_path):
    engine = tmp_path / "m.engine"
    assert write_sidecar(engine, SIDECAR) == tmp_path / "m.json"
    assert read_sidecar(engine) == SIDECAR


def test_read_refusals_in_full(tmp_path):
    engine = tmp_path / "m.engine"
    with pytest.raises(ArtifactError) as error:
        read_sidecar(engine)
    assert str(error.value) == (f"{engine}: no sidecar m.json; engines are only run with the metadata written when "
                                "they were built")
    (tmp_path / "m.json").write_text("[1]")
    with pytest.raises(ArtifactError) as error:
        read_sidecar(engine)
    assert str(error.value) == f"{tmp_path / 'm.json'}: expected a JSON object, got list"
    (tmp_path / "m.json").write_bytes(b"\xff\xfe{")
    with pytest.raises(ArtifactError, match=r"m\.json: malformed JSON: "):
        read_sidecar(engine)
    (tmp_path / "m.json").write_text(json.dumps({k: v for k, v in SIDECAR.items() if k != "platform"}))
    with pytest.raises(ArtifactError) as error:
        read_sidecar(engine)
    assert str(error.value) == (f"{tmp_path / 'm.json'}: sidecar lacks platform; rebuild the engine with "
                                "`resnet-deploy build`")


def test_version_mismatch_message_in_full():
    with pytest.raises(ArtifactError) as error:
        check_compatible(SIDECAR, "10.4.0", here(), "x.engine")
    assert str(error.value) == ("x.engine: built with TensorRT 10.3.0, this runtime is TensorRT 10.4.0; rebuild it "
                                "here with `resnet-deploy build` (or build it --version-compatible)")
    with pytest.raises(ArtifactError, match=r"^engine: built with"):
        check_compatible(SIDECAR, "10.4.0", here())


def test_platform_message_in_full():
    with pytest.raises(ArtifactError) as error:
        check_compatible({**SIDECAR, "integrated_gpu": 1, "platform": "aarch64"}, "10.3.0", here(), "x.engine")
    assert str(error.value) == ("x.engine: built on aarch64 with an integrated GPU (Jetson), this is x86_64 with a "
                                "discrete GPU; engines are not portable across platforms (hardware compatibility "
                                "included): rebuild it here with `resnet-deploy build`")
    with pytest.raises(ArtifactError, match="built on x86_64 with a discrete GPU, this is x86_64 with an integrated"):
        check_compatible(SIDECAR, "10.3.0", here(integrated=True))
    assert check_compatible({**SIDECAR, "integrated_gpu": 0}, "10.3.0", here()) == []


def test_compute_capability_message_and_the_ampere_boundary():
    with pytest.raises(ArtifactError) as error:
        check_compatible({k: v for k, v in SIDECAR.items() if k != "gpu_name"}, "10.3.0", here("8.9"), "x.engine")
    assert str(error.value) == ("x.engine: built for compute capability 8.6 (?), this GPU has 8.9; rebuild it on "
                                "this GPU (or, for Ampere and later GPUs, build it --hardware-compatibility "
                                "ampere_plus)")
    ampere = {**SIDECAR, "hardware_compatibility": "AMPERE_PLUS"}
    assert check_compatible(ampere, "10.3.0", here("8.0", name="A100")) == []
    with pytest.raises(ArtifactError):
        check_compatible(ampere, "10.3.0", here("7.5"))
    assert check_compatible({**SIDECAR, "compute_capability": "8.6.0"}, "10.3.0", here("8.6")) == []


def test_same_capability_other_gpu_warning_in_full():
    assert check_compatible(SIDECAR, "10.3.0", here(name="NVIDIA A10"), "x.engine") == [
        "x.engine: built on NVIDIA RTX A4000, running on NVIDIA A10 (same compute capability 8.6); TensorRT supports "
        "this but tactics were timed on the other GPU"]
    assert check_compatible({**SIDECAR, "hardware_compatibility": None}, "10.3.0", here(name="A10")) != []
    assert check_compatible({**SIDECAR, "hardware_compatibility": "ampere_plus"}, "10.3.0", here(name="A10")) == []
    assert check_compatible({**SIDECAR, "gpu_name": ""}, "10.3.0", here(name="A10")) == []


def test_version_compatible_engine_on_a_later_release():
    compatible = {**SIDECAR, "version_compatible": True}
    assert check_compatible(compatible, "10.8.0", here()) == []
    with pytest.raises(ArtifactError, match=r"\(a version-compatible engine runs on the TensorRT that built it or a "
                                            r"later release of major 10 or 11\)$"):
        check_compatible(compatible, "10.2.0", here())


def test_check_runs_here(monkeypatch, tmp_path):
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0.30"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    monkeypatch.setitem(sys.modules, "pycuda", types.ModuleType("pycuda"))
    asked = []
    monkeypatch.setattr(cuda, "device_info", lambda index: asked.append(index) or here(name="NVIDIA A10"))
    warnings, summary = check_runs_here(tmp_path / "m.engine", SIDECAR, device=1)
    assert asked == [1]
    assert summary == "runs here: TensorRT 10.3.0.30 on NVIDIA A10 (sm 8.6)"
    assert warnings == [f"{tmp_path / 'm.engine'}: built on NVIDIA RTX A4000, running on NVIDIA A10 (same compute "
                        "capability 8.6); TensorRT supports this but tactics were timed on the other GPU"]
    check_runs_here("m.engine", SIDECAR)
    assert asked == [1, 0]
    monkeypatch.setitem(sys.modules, "pycuda", None)
    with pytest.raises(Exception, match=r"^m\.engine: checking that the engine runs here needs pycuda"):
        check_runs_here("dir/m.engine", SIDECAR)
    assert sidecar.REQUIRED_FIELDS == ("tensorrt_version", "compute_capability", "precision", "platform",
                                       "integrated_gpu")


def test_jetson_engine_on_a_jetson_and_capabilities_by_major_minor():
    jetson = {**SIDECAR, "platform": "aarch64", "integrated_gpu": True, "compute_capability": "8.7"}
    assert check_compatible(jetson, "10.3.0", here("8.7", integrated=True, platform="aarch64")) == []
    assert check_compatible(SIDECAR, "10.3.0", here("8.6.0")) == []
