"""Engine sidecars: fields, the file-name scheme, and refusing engines built for another TensorRT or GPU."""

from __future__ import annotations

import json

import pytest

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import sha256_file
from resnet_deploy.runners import load_runner
from resnet_deploy.trt.builder import build_engine
from resnet_deploy.trt.cuda import DeviceInfo, host_platform
from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.sidecar import check_compatible, engine_file_name, read_sidecar, sidecar_path
from tests import fakes
from tests.fakes.graphs import tiny_graphs

pytestmark = pytest.mark.runtime


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tiny_graphs(tmp_path_factory.mktemp("sidecar"))


@pytest.fixture
def gpu(monkeypatch):
    return fakes.install(monkeypatch, "10.3")


@pytest.fixture
def engine(gpu, graphs, tmp_path):
    settings = EngineSettings(precision="int8", opt_batch=8, max_batch=16, timing_cache=tmp_path / "timing.cache")
    return build_engine(graphs["int8"], settings, tmp_path, log=lambda _: None).engine_path


def test_sidecar_fields(engine, graphs):
    sidecar = read_sidecar(engine)
    assert sidecar["engine"] == engine.name and sidecar_path(engine) == engine.with_suffix(".json")
    assert (sidecar["tensorrt_version"], sidecar["gpu_name"], sidecar["compute_capability"]) == (
        "10.3.0", "NVIDIA Jetson AGX Orin", "8.7")
    assert sidecar["precision"] == "int8" and sidecar["strongly_typed"] is True
    assert sidecar["profile"] == {"min": [1, 1, 28, 28], "opt": [8, 1, 28, 28], "max": [16, 1, 28, 28]}
    assert sidecar["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}]
    assert sidecar["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}]
    assert sidecar["source_onnx"] == str(graphs["int8"]) and sidecar["source_onnx_sha256"] == sha256_file(graphs["int8"])
    assert sidecar["calibration"] == {"method": "qdq-graph"} and sidecar["legacy_calibrator"] is False
    assert sidecar["hardware_compatibility"] == "none" and sidecar["version_compatible"] is False
    assert (sidecar["platform"], sidecar["integrated_gpu"], sidecar["tf32"], sidecar["dla_core"]) == (
        host_platform(), True, False, None)
    assert sidecar["build_settings"]["workspace_mib"] == 1024 and sidecar["build_settings"]["timing_cache"].endswith("timing.cache")
    assert sidecar["normalization"] == {"mean": data.MEAN, "std": data.STD}
    assert sidecar["class_names"] == list(data.CLASS_NAMES)


def test_engine_names_differ_in_everything_that_makes_another_engine():
    base = ("resnet18-w0.25", "int8", 256, "NVIDIA RTX A4000", "8.6", "10.3.0")
    assert engine_file_name(*base) == "resnet18-w0.25_int8_b256_sm86-nvidia-rtx-a4000_trt10.3.0.engine"
    variants = [base, ("resnet18-w0.5", *base[1:]), (base[0], "fp16", *base[2:]), (*base[:2], 64, *base[3:]),
                (*base[:3], "NVIDIA A10", "8.6", "10.3.0"), (*base[:4], "8.9", "10.3.0"), (*base[:5], "10.16.1.11")]
    names = {engine_file_name(*v) for v in variants}
    fixed = {"min_batch": 8, "opt_batch": 8, "max_batch": 8}
    tagged = {engine_file_name(*base, tags=EngineSettings(**options).tags()) for options in [
        {"legacy_calibrator": True}, {"legacy_calibrator": True, "layer_precisions": "a.layer-precisions.json"},
        {"strongly_typed": False}, {"dla_core": 0, **fixed}, {"dla_core": 1, **fixed},
        {"hardware_compatibility": "ampere_plus"}, {"hardware_compatibility": "same_compute_capability"},
        {"version_compatible": True}, {"tf32": True}]}
    assert len(names) == len(variants) and len(tagged) == 9 and not names & tagged
    assert EngineSettings(hardware_compatibility="none").tags() == [] and EngineSettings().tags() == []


SIDECAR = {"tensorrt_version": "10.3.0", "compute_capability": "8.6", "gpu_name": "NVIDIA RTX A4000",
           "precision": "fp16", "platform": "x86_64", "integrated_gpu": False}
A4000 = DeviceInfo(0, "NVIDIA RTX A4000", "8.6", False, "x86_64")


def here(cc="8.6", name="NVIDIA RTX A4000", integrated=False, platform="x86_64"):
    return DeviceInfo(0, name, cc, integrated, platform)


@pytest.mark.parametrize("changes, runtime, cc", [
    ({}, "10.3.0", "8.6"),
    ({}, "10.3.0.30", "8.6"),
    ({"version_compatible": True}, "10.16.1.11", "8.6"),
    ({"version_compatible": True}, "11.4.0.106", "8.6"),
    ({"version_compatible": True, "tensorrt_version": "8.6.1"}, "10.3.0", "8.6"),
    ({"version_compatible": True, "tensorrt_version": "8.6.1"}, "9.3.0", "8.6"),
    ({"version_compatible": True, "tensorrt_version": "11.1.0"}, "11.4.0.106", "8.6"),
    ({"hardware_compatibility": "ampere_plus"}, "10.3.0", "8.9"),
    ({"hardware_compatibility": "ampere_plus"}, "10.3.0", "12.0"),
])
def test_compatible_engines_pass(changes, runtime, cc):
    assert check_compatible({**SIDECAR, **changes}, runtime, here(cc)) == []


@pytest.mark.parametrize("changes, runtime, cc, message", [
    ({}, "10.16.1.11", "8.6", "built with TensorRT 10.3.0, this runtime is TensorRT 10.16.1.11"),
    ({}, "10.3.1", "8.6", "built with TensorRT 10.3.0"),
    ({"version_compatible": True}, "10.2.0", "8.6", "runs on the TensorRT that built it or a later release of major "
                                                    "10 or 11"),
    ({"version_compatible": True, "tensorrt_version": "8.6.1"}, "11.4.0.106", "8.6", "later release of major 8 or 9 "
                                                                                     "or 10"),
    ({"version_compatible": True, "tensorrt_version": "8.5.3"}, "10.3.0", "8.6", "needs TensorRT 8.6 or later"),
    ({"version_compatible": True, "tensorrt_version": "11.4.0.106"}, "10.16.1.11", "8.6", r"major 11\)"),
    ({}, "10.3.0", "8.9", r"built for compute capability 8.6 \(NVIDIA RTX A4000\), this GPU has 8.9"),
    ({"hardware_compatibility": "ampere_plus"}, "10.3.0", "7.5", "this GPU has 7.5"),
    ({"hardware_compatibility": "same_compute_capability"}, "10.3.0", "8.9", "this GPU has 8.9"),
])
def test_incompatible_engines_are_refused(changes, runtime, cc, message):
    with pytest.raises(ArtifactError, match=message):
        check_compatible({**SIDECAR, **changes}, runtime, here(cc), engine_path="x.engine")


@pytest.mark.parametrize("device, message", [
    (here(platform="aarch64"), "built on x86_64 with a discrete GPU, this is aarch64 with a discrete GPU"),
    (here(integrated=True, platform="aarch64"), "this is aarch64 with an integrated GPU \\(Jetson\\)"),
])
@pytest.mark.parametrize("level", ["none", "ampere_plus"])
def test_engines_run_only_on_the_platform_that_built_them(device, message, level):
    """Hardware compatibility crosses GPU architectures, never platforms (x86_64 / SBSA aarch64 / Jetson)."""
    with pytest.raises(ArtifactError, match=message + ".*not portable across platforms"):
        check_compatible({**SIDECAR, "hardware_compatibility": level}, "10.3.0", device, "x.engine")


def test_another_gpu_of_the_same_compute_capability_is_a_warning():
    (warning,) = check_compatible(SIDECAR, "10.3.0", here(name="NVIDIA A10"))
    assert "built on NVIDIA RTX A4000, running on NVIDIA A10" in warning
    assert check_compatible(SIDECAR, "10.3.0", A4000) == []


def test_missing_or_broken_sidecar_is_refused(tmp_path):
    engine = tmp_path / "x.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="no sidecar x.json"):
        read_sidecar(engine)
    sidecar_path(engine).write_text("{")
    with pytest.raises(ArtifactError, match="malformed JSON"):
        read_sidecar(engine)
    sidecar_path(engine).write_text(json.dumps({"precision": "fp16"}))
    with pytest.raises(ArtifactError, match="lacks tensorrt_version, compute_capability, platform, integrated_gpu"):
        read_sidecar(engine)


def rewrite_sidecar(engine, **changes):
    path = sidecar_path(engine)
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


@pytest.mark.parametrize("changes, message", [
    ({"tensorrt_version": "10.16.1.11"}, "built with TensorRT 10.16.1.11, this runtime is TensorRT 10.3.0"),
    ({"compute_capability": "9.0"}, "built for compute capability 9.0"),
])
def test_mismatched_engine_is_refused_before_deserializing_and_the_cli_exits_2(gpu, engine, changes, message,
                                                                             capsys):
    rec, _ = gpu
    rewrite_sidecar(engine, **changes)
    with pytest.raises(ArtifactError, match=message):
        load_runner(engine).activate()
    assert not any(len(c) > 1 and c[1] == "deserialize_cuda_engine" for c in rec.calls)
    assert rec.context_depth == 0 and ("detach",) not in rec.calls
    for command in (["infer", str(engine), "--count", "2"], ["inspect", str(engine)]):
        with pytest.raises(SystemExit) as exit_info:
            main(command)
        assert exit_info.value.code == 2 and "rebuild" in capsys.readouterr().err


def test_inspect_prints_the_sidecar_and_says_the_engine_runs_here(engine, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(engine)])
    out, err = capsys.readouterr()
    assert exit_info.value.code == 0 and json.loads(out)["compute_capability"] == "8.7"
    assert "runs here: TensorRT 10.3.0 on NVIDIA Jetson AGX Orin" in err


def test_infer_classifies_real_images_through_the_engine(engine, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", str(engine), "--count", "4", "--split", "val", "--offset", "10"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and "(tensorrt): 4 val images" in out
    with pytest.raises(SystemExit) as exit_info:
        main(["infer", str(engine), "--offset", "10000"])
    assert exit_info.value.code == 2
