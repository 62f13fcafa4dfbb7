"""The CLI contract, through the CLI: exit 1 only for a failed gate, 2 for bad usage or input, 3 when a
file cannot be read or written, 4 for an internal error; every refusal is one line on stderr that
names the file or option, never a traceback, and leaves no partial output behind.

Each case of issue 14 ("cases that end in a traceback", "bad input that passes silently", "small
truths", "offline data") is a test here.
"""

from __future__ import annotations

import errno
import json
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")


from resnet_deploy import fileio
from resnet_deploy.checkpoint import meta_path, save_checkpoint
from resnet_deploy.cli import run
from resnet_deploy.models import create_model
from resnet_deploy.quantize.cache import write_calibration_cache
from resnet_deploy.quantize.fp16 import convert_to_fp16
from tests.classifier_graphs import write_classifier
from tests.cli_runner import Result

REPO = Path(__file__).resolve().parents[1]



def refused(result: Result, code: int, *fragments: str) -> None:
    """Exit `code` with one line on stderr holding every fragment, and no traceback anywhere."""
    assert result.code == code, (result.code, result.err)
    assert "Traceback" not in result.out + result.err
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> dict[str, Path]:
    """A contract-conforming FP32 classifier, its FP16 and CPU/TensorRT INT8 variants, and other models."""
    root = tmp_path_factory.mktemp("graphs")
    paths = {
        "fp32": write_classifier(root / "tiny.onnx"),
        "rgb224": write_classifier(root / "rgb224.onnx", channels=3, size=224),
        "classes1000": write_classifier(root / "classes1000.onnx", classes=1000),
        "fixed_batch": write_classifier(root / "fixed.onnx", batch=1),
        "int8_cpu": write_classifier(root / "tiny.int8-cpu.onnx", zero_point=np.array(128, np.uint8)),
        "int8_qdq": write_classifier(root / "tiny.int8-max.qdq.onnx", zero_point=np.array(0, np.int8)),
    }
    convert_to_fp16(paths["fp32"], root / "tiny.fp16.onnx")
    paths["fp16"] = root / "tiny.fp16.onnx"
    return paths


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ckpt") / "m.pt", create_model("resnet18", width=0.0625).eval())


# ---- Numeric options: click range types, exit 2 naming the option --------------------------------------

@pytest.mark.parametrize("args, option", [
    (["train", "--epochs", "0"], "--epochs"),
    (["train", "--batch-size", "0"], "--batch-size"),
    (["train", "--width", "0"], "--width"),
    (["train", "--threads", "-3"], "--threads"),
    (["train", "--lr", "nan"], "--lr"),
    (["train", "--lr", "inf"], "--lr"),
    (["train", "--train-limit", "55001"], "--train-limit"),
    (["models", "--width", "-1"], "--width"),
    (["build", "--calibration-count", "0"], "--calibration-count"),
    (["build", "--calibration-count", "55001"], "--calibration-count"),
    (["calibrate", "--onnx", "x.onnx", "--count", "0"], "--count"),
    (["parity", "--checkpoint", "a.pt", "b.onnx", "--batch-size", "0"], "--batch-size"),
    (["parity", "--checkpoint", "a.pt", "b.onnx", "--max-drop", "-1"], "--max-drop"),
    (["bench", "a.onnx", "--rounds", "0"], "--rounds"),
    (["bench", "a.onnx", "--batch-sizes", "0,8"], "--batch-sizes"),
    (["bench", "a.onnx", "--max-regression", "nan"], "--max-regression"),
    (["export", "--checkpoint", "m.pt", "--check-images", "0"], "--check-images"),
    (["infer", "a.onnx", "--count", "0"], "--count"),
    (["evaluate", "--checkpoint", "m.pt", "--width", "0"], "--width"),
])
def test_numeric_options_are_bounded(cli, args, option):
    refused(cli(*args), 2, option)


def test_update_baseline_needs_a_baseline_in_both_commands(cli, graphs):
    refused(cli("bench", graphs["fp32"], "--update-baseline"), 2, "--update-baseline needs --baseline")
    refused(cli("parity", "--checkpoint", graphs["fp32"], graphs["fp32"], "--update-baseline"), 2,
            "--update-baseline needs --baseline")


# ---- ONNX files of another model: the I/O contract, checked up front ---------------------------------

@pytest.mark.parametrize("model, found", [("rgb224", "[N, 3, 224, 224]"), ("classes1000", "[N, 1000]"),
                                          ("fixed_batch", "[1, 1, 28, 28]")])
def test_onnx_of_another_model_is_refused_by_every_command(cli, graphs, tmp_path, model, found):
    other = graphs[model]
    expected = "expected one input [N, 1, 28, 28] float32 and one output [N, 10] float32"
    for args in (["calibrate", "--onnx", other, "--out-dir", tmp_path / "cal"],
                 ["build", "--precision", "fp16", "--onnx", other],
                 ["build", "--precision", "int8", "--onnx", other],
                 ["parity", "--checkpoint", graphs["fp32"], other],
                 ["parity", "--checkpoint", other, graphs["fp32"]],
                 ["bench", other, "--duration-s", "0"],
                 ["infer", other, "--count", "1"]):
        refused(cli(*args), 2, str(other), expected, found)
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["calibrate", "--onnx", "{fp16}", "--out-dir", "cal"],
     "tiny.fp16.onnx: is an fp16 graph; calibrate needs the FP32 ONNX"),
    (["parity", "--checkpoint", "{fp16}", "{fp32}", "{int8_qdq}"],
     "tiny.fp16.onnx: is an fp16 graph; the parity reference must be the FP32 model"),
    (["build", "--precision", "int8", "--onnx", "{int8_cpu}"],
     "tiny.int8-cpu.onnx: is the ONNX Runtime CPU INT8 graph (uint8 activations), not for TensorRT"),
    (["build", "--precision", "int8", "--onnx", "{fp16}"], "is an fp16 graph; --precision int8 needs the FP32 ONNX"),
], ids=["fp16-to-calibrate", "fp16-parity-reference", "cpu-int8-to-tensorrt", "fp16-to-int8-build"])
def test_graph_of_the_wrong_kind_is_refused_before_anything_is_written(cli, graphs, tmp_path, args, message):
    refused(cli(*[arg.format(**graphs) for arg in args]), 2, message)
    assert files_under(tmp_path) == []


# ---- Calibration caches and engine sidecars -----------------------------------------------------------

HEADER = "TRT-100300-EntropyCalibration2"


@pytest.mark.parametrize("body, message", [
    ("input: 00000000\n", "line 2: scale 0 of 'input' is not a positive normal float32"),
    ("input: 00000001\n", "line 2: scale 1.4013e-45 of 'input' is not a positive normal float32"),
    ("input: 3c010204\nrelu: 3c010204\ninput: 3f800000\n", "line 4: tensor 'input' is listed twice (first on line 2)"),
])
def test_calibration_cache_with_a_bad_scale_or_a_duplicate_is_refused(cli, tmp_path, body, message):
    (tmp_path / "bad.cache").write_text(f"{HEADER}\n{body}")
    refused(cli("inspect", tmp_path / "bad.cache"), 2, f"bad.cache: {message}")


def test_zero_range_is_written_as_the_qdq_floor_and_reads_back(cli, tmp_path):
    write_calibration_cache(tmp_path / "zero.cache", {"dead": 0.0, "input": 2.5})
    result = cli("inspect", tmp_path / "zero.cache")
    assert result.code == 0 and '"tensors": 2' in result.out


@pytest.mark.parametrize("content", [b"\xff\xfe\x00\x01garbage", b"{\"tensorrt_version\": ", b"[1, 2]", b"{}"])
def test_malformed_engine_sidecar_is_refused_by_inspect(cli, tmp_path, content):
    (tmp_path / "x.engine").write_bytes(os.urandom(64))
    (tmp_path / "x.json").write_bytes(content)
    refused(cli("inspect", tmp_path / "x.engine"), 2, "x.json")


def engine_with_sidecar(folder: Path, precision: str = "fp32") -> Path:
    engine = folder / "m.engine"
    engine.write_bytes(os.urandom(256))
    engine.with_suffix(".json").write_text(json.dumps(
        {"tensorrt_version": "10.3.0", "compute_capability": "8.7", "precision": precision,
         "gpu_name": "Orin", "platform": "aarch64", "integrated_gpu": True,
         "inputs": [{"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}]}))
    return engine


def test_inspect_describes_an_engine_then_says_tensorrt_is_needed_to_check_it(cli, tmp_path, no_tensorrt):
    result = cli("inspect", engine_with_sidecar(tmp_path))
    assert '"compute_capability": "8.7"' in result.out
    refused(result, 2, "TensorRT")


@pytest.mark.parametrize("command", ["infer", "parity", "bench"])
def test_engine_commands_without_tensorrt_exit_2(cli, graphs, tmp_path, command, no_tensorrt):
    engine = engine_with_sidecar(tmp_path)
    args = {"infer": ["infer", engine, "--count", "1"],
            "parity": ["parity", "--checkpoint", graphs["fp32"], engine, "--json", tmp_path / "p.json"],
            "bench": ["bench", engine, "--batch-sizes", "1", "--duration-s", "0", "--json", tmp_path / "b.json"]}
    refused(cli(*args[command]), 2, "TensorRT")
    assert not (tmp_path / "p.json").exists() and not (tmp_path / "b.json").exists()


# ---- Checkpoints: sidecar schema, unsafe pickles, settings on --resume ----------------------------------

@pytest.mark.parametrize("content, code, message", [
    (b"{}", 2, "m.json: not a valid checkpoint sidecar: the object lacks the field 'model'"),
    (b"[1, 2]", 2, "m.json: not a valid checkpoint sidecar: the content: expected an object, found [1, 2]"),
    (b"\x80\x04binary", 2, "m.json: checkpoint sidecar is not UTF-8 text"),
    (b'{"model": {"name": "resnet18", "width": "wide"}}', 2, "model.width: expected a finite number, found 'wide'"),
    (b'{"model": {"name": 18}}', 2, "model.name: expected a string, found 18"),
    (b'{"model": {"name": "resnet18"}, "training": {"epochs": "many"}}', 2, "training.epochs: expected an integer"),
])
def test_malformed_checkpoint_sidecar_is_refused(cli, checkpoint, tmp_path, content, code, message):
    copy = Path(shutil.copy(checkpoint, tmp_path / "m.pt"))
    meta_path(copy).write_bytes(content)
    for command in ("evaluate", "export"):
        refused(cli(command, "--checkpoint", copy), code, message)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json", "m.pt"]


def test_unreadable_checkpoint_sidecar_is_an_environment_failure(cli, checkpoint, tmp_path, monkeypatch):
    copy = Path(shutil.copy(checkpoint, tmp_path / "m.pt"))
    shutil.copy(meta_path(checkpoint), meta_path(copy))
    real_read_text = pathlib.Path.read_text

    def denied(self, *args, **kwargs):
        if self.name == "m.json":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_read_text(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    refused(cli("evaluate", "--checkpoint", copy), 3, "m.json: cannot read: Permission denied")


@pytest.mark.parametrize("content", [os.urandom(512), b"PK\x03\x04 not a zip"])
def test_random_bytes_checkpoint_never_suggests_the_unsafe_load(cli, tmp_path, content):
    (tmp_path / "junk.pt").write_bytes(content)
    result = cli("evaluate", "--checkpoint", tmp_path / "junk.pt", "--model", "resnet18")
    refused(result, 2, "junk.pt: not a PyTorch checkpoint or corrupt")
    assert "weights_only" not in result.err


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_code_carrying_pickle_is_refused_unrun_and_without_unsafe_advice(cli, tmp_path):
    import pickle

    with open(tmp_path / "evil.pt", "wb") as handle:
        pickle.dump({"fc.weight": RunsCode()}, handle, protocol=2)
    result = cli("evaluate", "--checkpoint", tmp_path / "evil.pt", "--model", "resnet18")
    refused(result, 2, "evil.pt: refused: it holds code or objects")
    assert "weights_only" not in result.err and not (tmp_path / "pwned").exists()


QUICK_TRAIN = ["--width", "0.0625", "--epochs", "1", "--train-limit", "512", "--batch-size", "64", "--threads", "1"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, data_dir) -> Path:
    """A one-epoch run trained through the CLI (a few seconds)."""
    run_dir = tmp_path_factory.mktemp("tiny-run")
    assert run(["train", *QUICK_TRAIN, "--out-dir", str(run_dir), "--data-dir", str(data_dir)]) == 0
    return run_dir


@pytest.mark.slow
@pytest.mark.parametrize("change, says", [(["--lr", "0.01"], "lr 0.01 (the run used 0.2)"),
                                          (["--width", "0.5"], "width 0.5 (the run used 0.0625)"),
                                          (["--epochs", "3"], "epochs 3 (the run used 1)")])
def test_resume_with_other_settings_names_them_and_refuses(cli, tiny_run, change, says):
    before = (tiny_run / "last.pt").read_bytes()
    refused(cli("train", "--resume", "--out-dir", tiny_run, *change), 2, "cannot resume with other settings", says)
    assert (tiny_run / "last.pt").read_bytes() == before


@pytest.mark.slow
def test_resume_may_change_the_thread_count(cli, tiny_run, tmp_path):
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    result = cli("train", "--resume", "--out-dir", run_dir, "--threads", "2")
    assert result.code == 0, result.err
    assert "training resnet18-w0.0625 for 1 epochs" in result.out


@pytest.mark.slow
def test_diverging_run_stops_and_keeps_the_good_best_checkpoint(cli, tiny_run, tmp_path):
    run_dir = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    good = {name: (run_dir / name).read_bytes() for name in ("best.pt", "best.json", "last.pt", "last.json")}
    result = cli("train", *QUICK_TRAIN, "--lr", "1e9", "--out-dir", run_dir)
    refused(result, 2, "training diverged in epoch 1: the loss is", "lower --lr")
    assert {name: (run_dir / name).read_bytes() for name in good} == good
    assert sorted(p.name for p in run_dir.iterdir()) == sorted(good)


# ---- Failed writes: read-only folder, disk full, a folder or a file in the way -------------------------

def test_output_under_a_file_is_refused_before_any_work(cli, tmp_path):
    (tmp_path / "file.txt").write_text("x")
    refused(cli("models", "--width", "0.0625", "--json", tmp_path / "file.txt" / "zoo.json"), 3,
            "zoo.json: cannot write:", "file.txt is a file, not a folder")


def test_folder_in_place_of_the_output_file(cli, tmp_path):
    (tmp_path / "zoo.json").mkdir()
    refused(cli("models", "--width", "0.0625", "--json", tmp_path / "zoo.json"), 3,
            "zoo.json: cannot write: it is a folder, not a file")


def test_read_only_folder_is_refused_up_front(cli, tmp_path, monkeypatch):
    """Tests may run as root, for whom chmod does not stop writes: the OS answer is simulated."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: Path(path) != locked and real_access(path, mode, **kw))
    refused(cli("models", "--width", "0.0625", "--json", locked / "zoo.json"), 3,
            "zoo.json: cannot write: no write permission in")
    assert files_under(tmp_path) == []


@pytest.mark.parametrize("error", [errno.EACCES, errno.EROFS])
def test_write_refused_by_the_os_midway_leaves_nothing(cli, tmp_path, monkeypatch, error):
    real_open = os.open

    def refuse(path, flags, *args, **kwargs):
        if Path(path).parent == tmp_path and flags & os.O_CREAT:
            raise OSError(error, os.strerror(error), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", refuse)
    refused(cli("models", "--width", "0.0625", "--json", tmp_path / "zoo.json"), 3,
            f"zoo.json: cannot write: {os.strerror(error)}")
    assert files_under(tmp_path) == []


def test_disk_full_keeps_the_previous_file_and_leaves_no_temporary(cli, tmp_path, monkeypatch):
    target = tmp_path / "zoo.json"
    target.write_text("previous report\n")

    def half_then_enospc(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_enospc)
    refused(cli("models", "--width", "0.0625", "--json", target), 3, "zoo.json: cannot write: No space left on device")
    assert target.read_text() == "previous report\n" and files_under(tmp_path) == [target]


def test_bench_plots_folder_with_a_folder_in_place_of_a_png(cli, graphs, tmp_path):
    (tmp_path / "plots" / "latency.png").mkdir(parents=True)
    refused(cli("bench", graphs["fp32"], "--plots", tmp_path / "plots", "--json", tmp_path / "bench.json"), 3,
            "latency.png: cannot write: it is a folder, not a file")
    assert not (tmp_path / "bench.json").exists()


def test_bench_plots_path_that_is_a_file(cli, graphs, tmp_path):
    (tmp_path / "plots").write_text("not a folder")
    refused(cli("bench", graphs["fp32"], "--plots", tmp_path / "plots", "--json", tmp_path / "bench.json"), 3,
            "plots is a file, not a folder")
    assert not (tmp_path / "bench.json").exists()


def test_build_with_a_folder_in_place_of_a_stage_output(cli, graphs, tmp_path):
    source = Path(shutil.copy(graphs["fp32"], tmp_path / "tiny.onnx"))
    (tmp_path / "tiny.fp16.onnx").mkdir()
    refused(cli("build", "--precision", "fp16", "--onnx", source), 3,
            "tiny.fp16.onnx: cannot write: it is a folder, not a file")
    assert not list((tmp_path / "reports").glob("*.json"))


# ---- bench: memory estimate, distinct labels --------------------------------------------------------------

def test_bench_refuses_batch_sizes_that_do_not_fit_in_memory(cli, graphs, tmp_path, monkeypatch):
    monkeypatch.setattr("resnet_deploy.bench.available_memory_bytes", lambda: 256 << 20)
    refused(cli("bench", graphs["fp32"], "--batch-sizes", "1,100000", "--json", tmp_path / "b.json"), 2,
            "--batch-sizes 100000: needs about", "GiB is available")
    assert not (tmp_path / "b.json").exists()


def test_bench_labels_two_files_of_one_name_by_their_paths(cli, graphs, tmp_path):
    first, second = (Path(shutil.copy(graphs["fp32"], ensure(tmp_path / d) / "m.onnx")) for d in ("a", "b"))
    result = cli("bench", first, second, "--batch-sizes", "1", "--duration-s", "0", "--warmup-ms", "0",
                 "--iterations", "2", "--rounds", "1", "--json", tmp_path / "b.json")
    assert result.code == 0, result.err
    report = json.loads((tmp_path / "b.json").read_text())
    assert set(report["artifacts"]) == {str(first), str(second)}
    assert set(report["results"]["1"]) == {str(first), str(second)}
    refused(cli("bench", first, first, "--json", tmp_path / "c.json"), 2, "given more than once")


def ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ---- build: the suggested target command, the folder lock ---------------------------------------------------

def test_target_command_quotes_paths_and_keeps_the_engine_flags(cli, graphs, tmp_path):
    source = Path(shutil.copy(graphs["fp32"], ensure(tmp_path / "my models") / "tiny.onnx"))
    result = cli("build", "--precision", "fp32", "--onnx", source, "--max-batch", "64", "--version-compatible",
                 "--hardware-compatibility", "ampere_plus")
    assert result.code == 0, result.err
    line = next(line.strip() for line in result.out.splitlines() if line.strip().startswith("resnet-deploy build"))
    assert shlex.split(line) == ["resnet-deploy", "build", "--precision", "fp32", "--onnx", str(source),
                                 "--max-batch", "64", "--hardware-compatibility", "ampere_plus",
                                 "--version-compatible"]


def test_second_build_in_a_folder_waits_for_the_first(graphs, tmp_path):
    """Two builds writing one folder would read each other's stages: the second waits for the lock."""
    source = Path(shutil.copy(graphs["fp32"], tmp_path / "tiny.onnx"))
    folders = [tmp_path / name for name in ("artifacts", "calibration", "engines", "reports")]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    log = tmp_path / "second.log"
    with fileio.folder_lock(folders, log=lambda _: None), log.open("w") as out:
        second = subprocess.Popen([sys.executable, "-m", "resnet_deploy", "build", "--precision", "fp32",
                                   "--onnx", str(source)], cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while "waiting for another resnet-deploy run" not in log.read_text() and time.monotonic() < deadline:
            assert second.poll() is None, log.read_text()
            time.sleep(0.2)
        time.sleep(1.0)
        assert second.poll() is None, log.read_text()
    assert second.wait(timeout=120) == 0, log.read_text()
    assert "TensorRT is not installed here" in log.read_text()


# ---- Small truths: umask, leftovers of a killed run -----------------------------------------------------------

@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_artifacts_respect_the_umask(cli, tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        assert cli("models", "--width", "0.0625", "--json", tmp_path / "zoo.json").code == 0
    finally:
        os.umask(previous)
    assert (tmp_path / "zoo.json").stat().st_mode & 0o777 == mode


def test_temporaries_left_by_a_killed_writer_are_removed_by_the_next_write(cli, tmp_path):
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    stale = tmp_path / f".zoo.json.{finished.pid}-0badc0de.tmp"
    live = tmp_path / f".zoo.json.{os.getpid()}-0123abcd.tmp"
    for leftover in (stale, live):
        leftover.write_text("half-written")
    assert cli("models", "--width", "0.0625", "--json", tmp_path / "zoo.json").code == 0
    assert not stale.exists() and live.exists()
    assert json.loads((tmp_path / "zoo.json").read_text())


# ---- Offline data ------------------------------------------------------------------------------------------

def test_offline_without_data_lists_where_it_looked_and_three_ways(cli, graphs, tmp_path, monkeypatch):
    from resnet_deploy import data

    monkeypatch.delenv("RESNET_DEPLOY_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("RESNET_DEPLOY_MIRROR", "http://127.0.0.1:9/")
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "no-debian")
    result = cli("infer", graphs["fp32"], "--count", "1")
    refused(result, 2, "Fashion-MNIST not found and the download from http://127.0.0.1:9/ failed",
            "$RESNET_DEPLOY_DATA (unset)", str(tmp_path / "no-debian"), str(tmp_path / "cache"),
            "--data-dir DIR", "RESNET_DEPLOY_DATA=DIR", "apt-get install dataset-fashion-mnist")


# ---- Internal errors and interrupts ----------------------------------------------------------------------------

def traceback_file(result: Result) -> Path:
    return Path(result.err.split("its traceback is in ")[1].split(";")[0])


def test_internal_error_is_one_line_with_the_traceback_in_a_file(cli, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr("resnet_deploy.models.list_models", bug)
    result = cli("models")
    refused(result, 4, "internal error: RuntimeError: an unforeseen bug", "its traceback is in")
    log = traceback_file(result)
    try:
        assert "Traceback" in log.read_text() and "an unforeseen bug" in log.read_text()
    finally:
        log.unlink()


def test_debug_shows_the_traceback_of_an_internal_error(cli, monkeypatch):
    def bug(*args, **kwargs):
        raise RuntimeError("an unforeseen bug")

    monkeypatch.setattr("resnet_deploy.models.list_models", bug)
    result = cli("--debug", "models")
    assert result.code == 4
    assert "Traceback" in result.err and result.err.strip().splitlines()[-1].startswith("internal error:")


def test_missing_package_is_an_environment_failure_but_a_missing_module_of_ours_is_a_bug(cli, monkeypatch):
    def needs(name):
        def load(*args, **kwargs):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return load

    monkeypatch.setattr("resnet_deploy.models.list_models", needs("torch.nn"))
    refused(cli("models"), 3, "this needs the Python package 'torch', which is not installed here")
    monkeypatch.setattr("resnet_deploy.models.list_models", needs("resnet_deploy.gone"))
    result = cli("models")
    refused(result, 4, "internal error: ModuleNotFoundError")
    traceback_file(result).unlink()


def test_interrupt_exits_130(cli, monkeypatch):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("resnet_deploy.models.list_models", interrupted)
    refused(cli("models"), 130, "aborted")


# ---- Exit 1 stays for gates ----------------------------------------------------------------------------------

def test_exit_1_is_a_failed_gate(cli, graphs, tmp_path, data_dir):
    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"top1": {"tiny.onnx": 1.0}}))
    result = cli("parity", "--checkpoint", graphs["fp32"], graphs["fp32"], "--limit", "200", "--baseline", baseline,
                 "--json", tmp_path / "p.json", "--data-dir", data_dir)
    assert result.code == 1 and result.err.startswith("gate failed: parity gate failed: tiny.onnx: baseline")


# ---- The hostile calls of the before-stop hook, as real processes ---------------------------------------------

def test_hostile_calls_as_processes(tmp_path):
    (tmp_path / "x.engine").write_bytes(os.urandom(4096))
    (tmp_path / "x.onnx").write_text("garbage\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    for args in (["inspect", "x.engine"], ["infer", "x.engine", "--count", "1"],
                 ["calibrate", "--onnx", "x.onnx", "--out-dir", "c"], ["models", "--width", "-1"]):
        done = subprocess.run([sys.executable, "-m", "resnet_deploy", *args], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode not in (0, 1) and "Traceback" not in done.stdout + done.stderr, (args, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (args, done.stderr)
