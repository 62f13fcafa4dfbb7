"""`resnet-deploy triton-repo`: model repositories for stock Triton, every config.pbtxt parsed with
Triton's own protobuf, plans matched to NGC releases and target GPUs through their sidecar, and the
real tritonserver binary (from the PyTriton wheel) reading the generated configs."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
from pathlib import Path

import pytest

from resnet_deploy.cli import main
from resnet_deploy.data import CLASS_NAMES
from resnet_deploy.fileio import sha256_file

pb = pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="serve extra not installed")
text_format = pytest.importorskip("google.protobuf.text_format")


def triton_repo(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["triton-repo", *map(str, args)])
    return exit_info.value.code


def read_config(path: Path):
    return text_format.Parse(path.read_text(), pb.ModelConfig())


@pytest.fixture
def engine(tmp_path) -> Path:
    """An engine file with the sidecar `resnet-deploy build` writes (TensorRT is never loaded here)."""
    path = tmp_path / "engines" / "tiny_int8_b256_sm86-nvidia-rtx-a4000_trt10.3.0.engine"
    path.parent.mkdir()
    path.write_bytes(b"serialized engine bytes")
    path.with_suffix(".json").write_text(json.dumps({
        "tensorrt_version": "10.3.0", "compute_capability": "8.6", "gpu_name": "NVIDIA RTX A4000",
        "platform": "x86_64", "integrated_gpu": False,
        "precision": "int8", "profile": {"min": [1, 1, 28, 28], "opt": [64, 1, 28, 28], "max": [256, 1, 28, 28]},
        "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}],
        "outputs": [{"name": "logits", "dtype": "float32", "shape": [-1, 10]}],
        "class_names": list(CLASS_NAMES)}))
    return path


def test_onnx_repository_parses_and_matches_the_artifact(untrained_onnx, tmp_path):
    out = tmp_path / "repo"
    assert triton_repo(untrained_onnx, "--out", out, "--preferred-batch-sizes", "8,16", "--instances", "2",
                       "--max-queue-delay-us", "500") == 0
    config = read_config(out / "tiny" / "config.pbtxt")
    assert (config.name, config.platform, config.max_batch_size) == ("tiny", "onnxruntime_onnx", 64)
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [("input", pb.TYPE_FP32, [1, 28, 28])]
    assert [(t.name, t.dims, t.label_filename) for t in config.output] == [("logits", [10], "labels.txt")]
    assert list(config.dynamic_batching.preferred_batch_size) == [8, 16]
    assert config.dynamic_batching.max_queue_delay_microseconds == 500
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, pb.ModelInstanceGroup.KIND_CPU)]
    assert sha256_file(out / "tiny" / "1" / "model.onnx") == sha256_file(untrained_onnx)
    assert (out / "tiny" / "labels.txt").read_text().splitlines() == list(CLASS_NAMES)
    assert json.loads((out / "tiny" / "provenance.json").read_text())["sha256"] == sha256_file(untrained_onnx)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no staging folder left behind


def test_onnx_on_gpu_uses_the_tensorrt_accelerator(untrained_onnx, tmp_path):
    assert triton_repo(untrained_onnx, "--out", tmp_path, "--onnx-on-gpu", "--no-dynamic-batching") == 0
    config = read_config(tmp_path / "tiny" / "config.pbtxt")
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP32"
    assert not config.HasField("dynamic_batching")


@pytest.mark.parametrize("breakage, message", [
    (lambda text: text.replace("max_batch_size: 64", 'max_batch_size: "sixty-four"'), "not a valid Triton model config"),
    (lambda text: text.replace("dims: 1\n", "dims: 3\n", 1), "does not match the model file"),
    (lambda text: text.replace('name: "tiny"', 'name: "other"'), "differs from its folder"),
    (lambda text: text.replace("onnxruntime_onnx", "tensorflow_savedmodel"), "platform"),
])
def test_a_broken_config_fails_the_check(untrained_onnx, tmp_path, capsys, breakage, message):
    assert triton_repo(untrained_onnx, "--out", tmp_path) == 0
    assert triton_repo("--check", tmp_path) == 0
    config_path = tmp_path / "tiny" / "config.pbtxt"
    config_path.write_text(breakage(config_path.read_text()))
    assert triton_repo("--check", tmp_path) == 2
    err = " ".join(capsys.readouterr().err.split())  # the console wraps long lines
    assert "config.pbtxt" in err and message in err


def test_existing_model_needs_force(untrained_onnx, tmp_path, capsys):
    assert triton_repo(untrained_onnx, "--out", tmp_path) == 0
    assert triton_repo(untrained_onnx, "--out", tmp_path) == 2 and "--force" in capsys.readouterr().err
    assert triton_repo(untrained_onnx, "--out", tmp_path, "--force", "--max-batch-size", "8") == 0
    assert read_config(tmp_path / "tiny" / "config.pbtxt").max_batch_size == 8


def test_plan_repository_from_the_sidecar(engine, tmp_path):
    out = tmp_path / "repo"
    assert triton_repo(engine, "--out", out, "--name", "tiny-int8", "--triton-release", "24.08") == 0
    config = read_config(out / "tiny-int8" / "config.pbtxt")
    assert (config.platform, config.max_batch_size, config.default_model_filename) == ("tensorrt_plan", 256, "model.plan")
    assert config.instance_group[0].kind == pb.ModelInstanceGroup.KIND_GPU
    assert [list(t.dims) for t in config.input] == [[1, 28, 28]]
    assert (out / "tiny-int8" / "1" / "model.plan").read_bytes() == engine.read_bytes()
    provenance = json.loads((out / "tiny-int8" / "provenance.json").read_text())
    assert provenance["ngc_releases"] == ["24.08"] and provenance["compute_capability"] == "8.6"
    assert provenance["ngc_images"] == ["nvcr.io/nvidia/tritonserver:24.08-trtllm-python-py3"]


@pytest.mark.parametrize("args, message", [
    (["--triton-release", "25.01"], "built with TensorRT 10.3.0, this runtime is TensorRT 10.8.0.43"),
    (["--container-tensorrt", "10.16.1"], "built with TensorRT 10.3.0"),
    (["--target-cc", "8.9"], "compute capability 8.6"),
    (["--max-batch-size", "512"], "exceeds the engine profile's max batch 256"),
    (["--triton-release", "19.01"], "not in the table of releases"),
])
def test_plan_that_cannot_run_on_the_target_is_refused(engine, tmp_path, capsys, args, message):
    assert triton_repo(engine, "--out", tmp_path / "repo", *args) == 2
    assert message in " ".join(capsys.readouterr().err.split())
    assert not (tmp_path / "repo" / engine.stem).exists()


def test_plan_of_a_tensorrt_no_release_carries(engine, tmp_path):
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    engine.with_suffix(".json").write_text(json.dumps({**sidecar, "tensorrt_version": "11.4.0.106"}))
    assert triton_repo(engine, "--out", tmp_path, "--name", "tiny") == 0
    assert json.loads((tmp_path / "tiny" / "provenance.json").read_text())["ngc_releases"] == []


@pytest.mark.parametrize("args, message", [
    (["--preferred-batch-sizes", "128"], "exceed the max batch size (64 for ONNX by default) 64"),
    (["--max-batch-size", "8", "--preferred-batch-sizes", "16"], "exceed --max-batch-size 8"),
])
def test_preferred_sizes_above_the_effective_max_exit_2(untrained_onnx, tmp_path, capsys, args, message):
    assert triton_repo(untrained_onnx, "--out", tmp_path / "repo", *args) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "repo" / "tiny").exists()


def test_preferred_sizes_above_the_engine_profile_exit_2(engine, tmp_path, capsys):
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    engine.with_suffix(".json").write_text(json.dumps({**sidecar, "profile": {**sidecar["profile"], "max": [16, 1, 28, 28]}}))
    assert triton_repo(engine, "--out", tmp_path / "repo", "--preferred-batch-sizes", "32") == 2
    assert "exceed the engine profile's max 16" in " ".join(capsys.readouterr().err.split())


@pytest.mark.parametrize("breakage, message", [
    (lambda text: text.replace("preferred_batch_size: 8", "preferred_batch_size: 128"), "must lie in 1..max_batch_size 64"),
    (lambda text: text.replace("max_batch_size: 64", "max_batch_size: 0"), "dynamic batching needs max_batch_size > 0"),
    (lambda text: text.replace("count: 1", "count: 0"), "count 0 must be >= 1"),
    (lambda text: text.replace("KIND_CPU", "KIND_GPU\n  secondary_devices { kind: KIND_NVDLA device_id: 0 }"),
     "secondary_devices (KIND_NVDLA) apply to tensorrt_plan models only"),
])
def test_the_check_applies_tritons_own_rules(untrained_onnx, tmp_path, capsys, breakage, message):
    """Configs that parse as protobuf but that Triton refuses to load: --check exits 2 naming the rule."""
    assert triton_repo(untrained_onnx, "--out", tmp_path, "--preferred-batch-sizes", "8") == 0
    config_path = tmp_path / "tiny" / "config.pbtxt"
    config_path.write_text(breakage(config_path.read_text()))
    read_config(config_path)  # still valid protobuf
    assert triton_repo("--check", tmp_path) == 2
    assert message in " ".join(capsys.readouterr().err.split())


def test_onnx_on_gpu_refuses_the_cpu_int8_graph(tmp_path, capsys, monkeypatch):
    from resnet_deploy.serve import repository

    monkeypatch.setattr(repository, "_onnx_precision", lambda artifact: "int8-cpu")
    onnx = Path(__file__).parent  # any path: the precision is what is checked
    from resnet_deploy.serve.artifact import ServedArtifact

    artifact = ServedArtifact(onnx / "m.int8-cpu.onnx", "m", 1, "onnxruntime", "input", "float32", (1, 28, 28),
                              "logits", (10,))
    from resnet_deploy.errors import ArtifactError

    with pytest.raises(ArtifactError, match="--onnx-on-gpu .* cannot take this int8-cpu graph"):
        repository.build_config(artifact, repository.RepositorySettings(onnx_on_gpu=True))


def test_dla_and_version_compatible_plans(engine, tmp_path):
    """A DLA plan names its core as a KIND_NVDLA secondary device; a version-compatible plan puts Triton's
    backend flag into the repository's README."""
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    engine.with_suffix(".json").write_text(json.dumps({**sidecar, "dla_core": 1, "version_compatible": True}))
    out = tmp_path / "repo"
    assert triton_repo(engine, "--out", out, "--name", "tiny-dla") == 0
    (group,) = read_config(out / "tiny-dla" / "config.pbtxt").instance_group
    assert group.kind == pb.ModelInstanceGroup.KIND_GPU
    assert [(d.kind, d.device_id) for d in group.secondary_devices] == [
        (pb.ModelInstanceGroup.SecondaryDevice.KIND_NVDLA, 1)]
    readme = (out / "README.md").read_text()
    assert "--backend-config=tensorrt,version-compatible=true" in readme and "tiny-dla" in readme
    assert triton_repo("--check", out) == 0
    engine.with_suffix(".json").write_text(json.dumps(sidecar))
    assert triton_repo(engine, "--out", out, "--name", "tiny-dla", "--force") == 0
    assert "version-compatible" not in (out / "README.md").read_text()
    assert not read_config(out / "tiny-dla" / "config.pbtxt").instance_group[0].secondary_devices


def _run_tritonserver(repository: Path, tmp_path: Path) -> str:
    """Start the PyTriton wheel's tritonserver on `repository` (it exits: the wheel has no onnxruntime backend)."""
    pytriton = pytest.importorskip("pytriton", reason="serve extra not installed")
    from resnet_deploy.serve.process import free_ports

    server_dir = Path(pytriton.__file__).parent / "tritonserver"
    http_port, grpc_port, metrics_port = free_ports(3)
    env = {**os.environ, "LD_LIBRARY_PATH": f"{sysconfig.get_config_var('LIBDIR')}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
    result = subprocess.run([server_dir / "bin" / "tritonserver", f"--model-repository={repository}",
                             f"--backend-directory={server_dir / 'backends'}", "--exit-on-error=true",
                             "--disable-auto-complete-config", "--allow-gpu-metrics=false", "--http-address=127.0.0.1",
                             "--grpc-address=127.0.0.1", f"--http-port={http_port}", f"--grpc-port={grpc_port}",
                             f"--metrics-port={metrics_port}"],
                            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert result.returncode != 0
    return result.stdout + result.stderr


def test_real_tritonserver_reads_the_generated_config(untrained_onnx, tmp_path):
    assert triton_repo(untrained_onnx, "--out", tmp_path / "repo") == 0
    log = _run_tritonserver(tmp_path / "repo", tmp_path)
    # Config parsed and accepted; loading stops only at the backend this wheel does not ship.
    assert "unable to find backend library for backend 'onnxruntime'" in log, log[-3000:]
    config_path = tmp_path / "repo" / "tiny" / "config.pbtxt"
    config_path.write_text(config_path.read_text().replace("max_batch_size: 64", "max_batch_size: sixty-four"))
    assert "failed to read text proto" in _run_tritonserver(tmp_path / "repo", tmp_path)
