"""Issue 18, through the CLI: no command writes over its own inputs (by any name) or over a file of
another kind, special files are never replaced, --threads and batch limits cannot take the machine
down, every float option refuses nan and inf, and a closed or broken stdout follows Unix convention.
Each case checks the exit code, one line on stderr, no traceback, and that no user file changed
(content hash and inode type, before and after).
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import click
import pytest

torch = pytest.importorskip("torch")

from resnet_deploy.checkpoint import meta_path, save_checkpoint
from resnet_deploy.cli import cli as cli_group
from resnet_deploy.cli.options import MAX_THREADS, FiniteFloatRange
from resnet_deploy.models import create_model
from tests.classifier_graphs import write_classifier
from tests.cli_runner import Result
from tests.test_cli_contract import REPO, refused


def snapshot(*roots: Path) -> dict[str, tuple[str, str]]:
    """Every path under `roots` (symlinks not followed) -> (inode type, sha256 of a regular file's content)."""
    state = {}
    for root in roots:
        for path in [root, *root.rglob("*")] if root.is_dir() and not root.is_symlink() else [root]:
            mode = path.lstat().st_mode
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(mode) else ""
            state[str(path)] = (stat.filemode(mode)[0], digest)
    return state


@pytest.fixture
def user_files(tmp_path) -> dict[str, Path]:
    """A model, a checkpoint with its sidecar, a photo-like PNG name, a symlink, a hard link and a FIFO."""
    files = {"onnx": write_classifier(tmp_path / "m.onnx")}
    torch.manual_seed(0)
    files["pt"] = save_checkpoint(tmp_path / "ck.pt", create_model("resnet18", width=0.0625).eval())
    files["other_onnx"] = write_classifier(tmp_path / "other.onnx")
    files["hardlink"] = tmp_path / "hard.json"
    os.link(files["onnx"], files["hardlink"])
    files["symlink"] = tmp_path / "link.json"
    files["symlink"].symlink_to(files["onnx"])
    files["fifo"] = tmp_path / "pipe"
    os.mkfifo(files["fifo"])
    return files


def unchanged(call, tmp_path, *args) -> Result:
    """Run the CLI and assert no file under `tmp_path` (nor /dev/null) changed content or inode type."""
    before = snapshot(tmp_path, Path("/dev/null"))
    result = call(*args)
    after = snapshot(tmp_path, Path("/dev/null"))
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed, changed
    return result


# ---- No command writes over its own inputs, by any name --------------------------------------------------

@pytest.mark.parametrize("args, named", [
    (["infer", "{onnx}", "--count", "1", "--json", "{onnx}"], "m.onnx"),
    (["infer", "{onnx}", "--count", "1", "--json", "{hardlink}"], "hard.json"),
    (["infer", "{onnx}", "--count", "1", "--json", "{symlink}"], "link.json"),
    (["infer", "{pt}", "--count", "1", "--json", "{sidecar}"], "ck.json"),
    (["export", "--checkpoint", "{pt}", "--out", "{pt}"], "ck.pt"),
    (["layers", "{onnx}", "{other_onnx}", "--json", "{other_onnx}"], "other.onnx"),
    (["parity", "--checkpoint", "{onnx}", "{other_onnx}", "--json", "{onnx}"], "m.onnx"),
    (["bench", "{onnx}", "--json", "{hardlink}"], "hard.json"),
    (["calibrate", "--onnx", "{onnx}", "--out-dir", "{onnx}"], "m.onnx"),
])
def test_no_command_writes_over_its_inputs(cli, tmp_path, user_files, args, named):
    paths = {**{k: str(v) for k, v in user_files.items()}, "sidecar": str(meta_path(user_files["pt"]))}
    result = unchanged(cli, tmp_path, *[a.format(**paths) for a in args])
    refused(result, 2, named, "input of this command")


@pytest.mark.parametrize("args, named, kind", [
    (["infer", "{onnx}", "--count", "1", "--json", "{other_onnx}"], "other.onnx", "ONNX model"),
    (["infer", "{onnx}", "--count", "1", "--json", "{pt}"], "ck.pt", "PyTorch checkpoint"),
    (["layers", "{onnx}", "{onnx}", "--plot", "{sidecar}"], "ck.json", "JSON file"),
    (["export", "--checkpoint", "{pt}", "--out", "{hardlink}"], "hard.json", "JSON file"),
])
def test_no_output_replaces_a_file_of_another_kind(cli, tmp_path, user_files, args, named, kind):
    paths = {**{k: str(v) for k, v in user_files.items()}, "sidecar": str(meta_path(user_files["pt"]))}
    result = unchanged(cli, tmp_path, *[a.format(**paths) for a in args])
    refused(result, 2, named, f"existing {kind}")


def test_no_output_is_added_to_a_bundle(cli, tmp_path, user_files):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "manifest.json").write_text("{}")
    refused(unchanged(cli, tmp_path, "infer", user_files["onnx"], "--json", bundle / "r.json"), 2, "inside the bundle")


# ---- Special files: written through or directly, never replaced --------------------------------------------

def test_json_to_dev_null_writes_into_it_and_keeps_the_device(cli, tmp_path):
    result = unchanged(cli, tmp_path, "models", "--json", "/dev/null")
    assert result.code == 0, result.err
    assert stat.S_ISCHR(os.lstat("/dev/null").st_mode)


def test_json_through_a_symlink_updates_its_target_and_keeps_the_link(cli, tmp_path):
    target = tmp_path / "real" / "models.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    assert cli("models", "--json", link).code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert '"resnet18"' in target.read_text()


def test_json_to_a_fifo_reaches_its_reader_and_keeps_the_fifo(cli, tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    try:
        result = cli("models", "--json", fifo)
    finally:
        if reader.is_alive():  # unblock the reader if the command never opened the FIFO
            with open(fifo, "wb"):
                pass
        reader.join(timeout=30)
    assert result.code == 0, result.err
    assert b'"resnet18"' in received[0] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_fifo_nobody_reads_is_refused_without_waiting(cli, tmp_path, user_files):
    refused(unchanged(cli, tmp_path, "models", "--json", user_files["fifo"]), 2, "no process reads")


# ---- Limits that keep the machine up -------------------------------------------------------------------------

def commands_with(option: str) -> list[str]:
    return sorted(name for name, command in cli_group.commands.items()
                  if any(option in param.opts for param in command.params))


def test_every_command_with_threads_caps_them():
    assert {"train", "infer", "bench", "parity", "layers", "serve", "qat"} <= set(commands_with("--threads"))


@pytest.mark.parametrize("command", commands_with("--threads"))
def test_threads_above_the_cap_are_refused_naming_the_limit(cli, tmp_path, user_files, command):
    required = {"parity": ["--checkpoint", user_files["onnx"], user_files["onnx"]],
                "layers": [user_files["onnx"], user_files["onnx"]], "qat": ["--onnx", user_files["onnx"]]}
    args = [command, *required.get(command, [user_files["onnx"]] if command in ("infer", "bench", "serve") else []),
            "--threads", MAX_THREADS + 1]
    refused(unchanged(cli, tmp_path, *args), 2, "--threads", f"more than {MAX_THREADS}")


def test_serve_max_batch_size_that_cannot_fit_is_refused_naming_it(cli, tmp_path, user_files):
    refused(unchanged(cli, tmp_path, "serve", user_files["onnx"], "--max-batch-size", "10000000"), 2,
            "--max-batch-size 10000000", "GiB")


def test_width_is_bounded(cli, tmp_path):
    refused(cli("models", "--width", "1000"), 2, "--width")


# ---- Options checked before any work -------------------------------------------------------------------------

@pytest.mark.parametrize("opset", ["99", "28", "16"])
def test_export_opset_is_bounded_by_what_is_installed(cli, tmp_path, user_files, opset):
    refused(unchanged(cli, tmp_path, "export", "--checkpoint", user_files["pt"], "--opset", opset), 2,
            "--opset", f"opset {opset} is outside 17..")


@pytest.mark.parametrize("option, value", [("--timeout-s", "0"), ("--timeout-s", "-1"), ("--duration-s", "-1"),
                                           ("--duration-s", "0"), ("--warmup-s", "-5"), ("--batch-size", "0"),
                                           ("--timeout-s", "nan"), ("--duration-s", "inf")])
def test_loadtest_refuses_meaningless_settings(cli, tmp_path, option, value):
    refused(unchanged(cli, tmp_path, "loadtest", "localhost:1", "--model", "m", option, value), 2, option)


@pytest.mark.parametrize("args, option", [
    (["layers", "a.onnx", "b.onnx", "--min-snr", "nan"], "--min-snr"),
    (["layers", "a.onnx", "b.onnx", "--min-cosine", "inf"], "--min-cosine"),
    (["calibrate", "--onnx", "a.onnx", "--accuracy-budget", "nan"], "--accuracy-budget"),
    (["build", "--min-agreement", "nan"], "--min-agreement"),
    (["qat", "--onnx", "a.onnx", "--lr", "inf"], "--lr"),
])
def test_non_finite_floats_are_refused(cli, tmp_path, args, option):
    refused(unchanged(cli, tmp_path, *args), 2, option, "not a finite number")


def test_every_float_option_of_every_command_refuses_non_finite_values():
    """One float type everywhere: a plain click float or FloatRange would let nan through its bounds."""
    floats = [(name, param.name) for name, command in cli_group.commands.items() for param in command.params
              if isinstance(param.type, (click.types.FloatParamType, click.FloatRange))
              and not isinstance(param.type, FiniteFloatRange)]
    assert floats == []


# ---- Paths ---------------------------------------------------------------------------------------------------

def test_non_utf8_path_of_a_valid_onnx_exits_2_cleanly(cli, tmp_path):
    weird = Path(os.fsdecode(bytes(tmp_path) + b"/m\xff\xfe.onnx"))
    write_classifier(Path(os.fsdecode(bytes(tmp_path) + b"/plain.onnx"))).rename(weird)
    refused(unchanged(cli, tmp_path, "infer", weird, "--count", "1"), 2, "ARTIFACT", "not UTF-8")


def test_long_checkpoint_name_gets_a_shortened_default_report_name(cli, tmp_path, data_dir):
    torch.manual_seed(0)
    long_name = tmp_path / ("c" * 240 + ".pt")
    save_checkpoint(long_name, create_model("resnet18", width=0.0625).eval())
    result = cli("export", "--checkpoint", long_name, "--check-images", "1", "--data-dir", data_dir)
    assert result.code == 0, result.err
    written = list((tmp_path / "artifacts").glob("*.onnx"))
    assert len(written) == 1 and len(os.fsencode(written[0].name)) <= 200 and written[0].name.startswith("ccc")


def test_checkpoint_of_another_width_says_what_does_not_fit(cli, tmp_path):
    import json

    torch.manual_seed(0)
    path = save_checkpoint(tmp_path / "w.pt", create_model("resnet18", width=0.125).eval())
    sidecar = json.loads(meta_path(path).read_text())
    sidecar["model"]["width"] = 0.0625
    meta_path(path).write_text(json.dumps(sidecar))
    refused(unchanged(cli, tmp_path, "export", "--checkpoint", path), 2, "does not fit model resnet18",
            "conv1.weight is [8, 1, 3, 3] in the file, [4, 1, 3, 3] in the model", "width 0.125 in the file vs 0.0625")


# ---- Two different models given to `layers` ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def models_onnx(tmp_path_factory) -> dict[str, Path]:
    from resnet_deploy.export import export_onnx

    root = tmp_path_factory.mktemp("layers-models")
    torch.manual_seed(0)
    paths = {}
    for key, (name, width) in {"narrow": ("resnet18", 0.0625), "wide": ("resnet18", 0.125),
                               "deep": ("resnet34", 0.0625)}.items():
        paths[key] = root / f"{key}.onnx"
        export_onnx(create_model(name, width=width).eval(), paths[key])
    return paths


@pytest.mark.parametrize("other, says", [("wide", "values per image"), ("deep", "convolutions")])
def test_layers_of_two_different_models_names_both_and_what_differs(cli, tmp_path, models_onnx, data_dir, other, says):
    result = unchanged(cli, tmp_path, "layers", models_onnx["narrow"], models_onnx[other], "--count", "4",
                       "--data-dir", data_dir)
    refused(result, 2, "narrow.onnx", f"{other}.onnx", "different models", says)


# ---- stdout: a reader that goes away, or no stdout at all ------------------------------------------------------

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def test_broken_pipe_is_quiet_and_not_a_gate_failure(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run([sys.executable, "-m", "resnet_deploy", "models"], stdout=write_end,
                              stderr=subprocess.PIPE, cwd=tmp_path, env=ENV, timeout=120, check=False)
    finally:
        os.close(write_end)
    assert done.returncode == 141 and done.stderr == b"", (done.returncode, done.stderr)


def test_closed_stdout_still_works_and_never_writes_into_an_output(tmp_path):
    done = subprocess.run([sys.executable, "-m", "resnet_deploy", "models", "--json", "m.json"],
                          stderr=subprocess.PIPE, cwd=tmp_path, env=ENV, timeout=120, check=False,
                          preexec_fn=lambda: os.close(1))
    assert done.returncode == 0 and done.stderr == b"", done.stderr
    import json

    assert json.loads((tmp_path / "m.json").read_text())[0]["name"] == "resnet18"
