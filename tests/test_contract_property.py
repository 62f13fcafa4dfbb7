"""Property test of the CLI contract (issue 18): for every command and every one of its options, read
from the click definitions themselves, a hostile value (negative, zero, huge, nan, inf, empty,
non-UTF-8 path, special file, one of the command's own inputs) ends with exit 0, 1, 2 or 3, never a
traceback, one line on stderr for an error, and no user file changed. An output option given one of
the command's inputs is refused (exit 2).

Required inputs are small garbage files and --data-dir an empty folder, so no command gets far
enough to train, calibrate or serve: the run stays within seconds (RESNET_DEPLOY_PROPERTY_EXAMPLES
examples per command, 15 by default).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import click
import pytest

pytest.importorskip("torch")
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resnet_deploy.cli import cli as cli_group
from resnet_deploy.cli import run
from resnet_deploy.cli.options import OutputPath
from tests.test_cli_safety import snapshot

EXAMPLES = int(os.environ.get("RESNET_DEPLOY_PROPERTY_EXAMPLES", "15"))  # per command
INTS = ["-1", "0", "2147483648", "1000000000000", "", "nan"]
FLOATS = ["nan", "inf", "-inf", "-1", "0", "1e308", ""]
STRINGS = ["", "\udcff", "x" * 5000, "-1", "nan"]
# Paths relative to the example's folder: inputs, specials, a non-UTF-8 name, too long a name, under a file.
PATHS = ["", "bad.onnx", "bad.pt", "link-to-input", "hard-link-to-input", "/dev/null", "fifo", "folder",
         os.fsdecode(b"caf\xe9.json"), "n" * 300 + ".json", "bad.onnx/under.json"]
# Which input file each of these paths is (by name, symlink or hard link).
SAME_FILE = {"bad.onnx": "bad.onnx", "bad.pt": "bad.pt", "link-to-input": "bad.onnx", "hard-link-to-input": "bad.pt"}


def _options(command: click.Command) -> list[click.Parameter]:
    return [p for p in command.params if not getattr(p, "is_flag", False) and not getattr(p, "hidden", False)]


def _hostile_values(param: click.Parameter) -> list[str]:
    kind = param.type
    if isinstance(kind, click.Path):
        return PATHS
    if isinstance(kind, (click.types.IntParamType, click.IntRange)):
        return INTS
    if isinstance(kind, (click.types.FloatParamType, click.FloatRange)):
        return FLOATS
    if isinstance(kind, click.Choice):
        return ["", "not-a-choice"]
    return STRINGS


def _required(command: click.Command, hostile: click.Parameter) -> list[str]:
    """Tiny inputs for the required parameters other than `hostile`, and an empty --data-dir."""
    args: list[str] = []
    for param in command.params:
        if param is hostile or not (param.required or param.name == "data_dir"):
            continue
        if param.name == "data_dir":
            value = "empty"
        elif isinstance(param.type, click.Path):
            value = "bad.pt" if "checkpoint" in param.name else "bad.onnx"
        else:
            value = {"url": "localhost:1"}.get(param.name, "m")
        args += [value] if isinstance(param, click.Argument) else [param.opts[0], value]
    return args


def _user_files(root: Path) -> None:
    (root / "bad.onnx").write_bytes(b"\x08\x07garbage that is no protobuf")
    (root / "bad.pt").write_bytes(b"PK\x03\x04not a zip")
    (root / "link-to-input").symlink_to(root / "bad.onnx")
    os.link(root / "bad.pt", root / "hard-link-to-input")
    os.mkfifo(root / "fifo")
    (root / "folder").mkdir()
    (root / "empty").mkdir()


COMMANDS = sorted(cli_group.commands)


@pytest.mark.parametrize("name", COMMANDS)
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture],
          derandomize=True)
@given(which=st.integers(0, 1000), pick=st.integers(0, 1000))
def test_any_hostile_option_value_keeps_the_contract(capsys, name, which, pick):
    command = cli_group.commands[name]
    params = _options(command)
    param = params[which % len(params)]
    values = _hostile_values(param)
    value = values[pick % len(values)]
    hostile = [value] if isinstance(param, click.Argument) else [param.opts[0], value]
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        _user_files(root)
        before = snapshot(root, Path("/dev/null"))
        previous = os.getcwd()
        os.chdir(root)
        try:
            capsys.readouterr()
            code = run([name, *_required(command, param), *hostile])
            out, err = capsys.readouterr()
        finally:
            os.chdir(previous)
        after = snapshot(root, Path("/dev/null"))
    call = f"{name} {' '.join(_required(command, param) + hostile)!r}"
    assert code in (0, 1, 2, 3), (call, code, err)
    assert "Traceback" not in out + err, call
    if code:
        assert len(err.strip().splitlines()) == 1, (call, err)
    assert {k: v for k, v in after.items() if k in before} == before, call
    if isinstance(param.type, OutputPath) and SAME_FILE.get(value) in _required(command, param):
        assert code == 2 and "input of this command" in err, (call, err)
