"""The CLI's exit-code mapping (resnet_deploy.cli.run and resnet_deploy.errors), one outcome per exception,
with the exact line on stderr: written to kill the mutants tools/mutation.sh found surviving there.
A throwaway command raises each exception inside the real `cli` group (milliseconds, no model)."""

from __future__ import annotations

import errno
import re

import click
import pytest

from resnet_deploy import __version__, cli as cli_module
from resnet_deploy.cli import console
from resnet_deploy.errors import (EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_GATE_FAILED, EXIT_INTERNAL_ERROR,
                                  EXIT_INTERRUPTED, ArtifactError, CheckpointError, DataError, EnvironmentFailure,
                                  GateFailed, ResnetDeployError)


@pytest.fixture
def raising(monkeypatch):
    """run(['boom']) raises whatever `raising.exc` holds."""
    state = {}

    @click.command("boom")
    def boom():
        raise state["exc"]

    monkeypatch.setitem(cli_module.cli.commands, "boom", boom)

    def run(exc: BaseException, *args: str) -> int:
        state["exc"] = exc
        return cli_module.run([*args, "boom"])

    return run


def stderr_line(capsys) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.rstrip("\n")


def test_exit_code_constants():
    assert (EXIT_GATE_FAILED, EXIT_BAD_INPUT, EXIT_ENVIRONMENT, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED) == (1, 2, 3, 4, 130)
    assert cli_module.EXIT_BROKEN_PIPE == 141
    assert ResnetDeployError.exit_code == 2 and GateFailed.exit_code == 1 and EnvironmentFailure.exit_code == 3
    assert DataError.exit_code == CheckpointError.exit_code == ArtifactError.exit_code == 2


def test_gate_failed_is_1_with_its_report(raising, capsys):
    failure = GateFailed("top-1 fell", details={"passed": False})
    assert failure.details == {"passed": False} and GateFailed("x").details is None
    assert raising(failure) == 1
    assert stderr_line(capsys) == "gate failed: top-1 fell"


@pytest.mark.parametrize("exc, code", [(ResnetDeployError("bad.onnx: nope"), 2), (ArtifactError("bad.onnx: nope"), 2),
                                       (EnvironmentFailure("bad.onnx: nope"), 3)])
def test_library_errors_keep_their_code(raising, capsys, exc, code):
    assert raising(exc) == code
    assert stderr_line(capsys) == "error: bad.onnx: nope"


def test_os_errors_are_environment_failures(raising, capsys):
    assert raising(PermissionError(errno.EACCES, "Permission denied", "/x/out.json")) == 3
    assert stderr_line(capsys) == "error: /x/out.json: cannot use: Permission denied"
    assert raising(OSError("no reason")) == 3
    assert stderr_line(capsys) == "error: ?: cannot use: no reason"


def test_from_os_error_prefers_the_given_path():
    exc = FileNotFoundError(errno.ENOENT, "No such file or directory", "a.txt")
    assert str(EnvironmentFailure.from_os_error(exc, "read", "b.txt")) == "b.txt: cannot read: No such file or directory"
    assert str(EnvironmentFailure.from_os_error(exc, "read")) == "a.txt: cannot read: No such file or directory"
    assert isinstance(EnvironmentFailure.from_os_error(exc, "read"), EnvironmentFailure)


def test_broken_pipe(raising, capsys, monkeypatch):
    assert raising(console.StdoutClosed()) == 141
    monkeypatch.setattr(cli_module, "stdout_broken", lambda: True)
    discarded = []
    monkeypatch.setattr(cli_module, "discard_stdout", lambda: discarded.append(True))
    assert raising(BrokenPipeError("Broken pipe")) == 141 and discarded == [True]
    assert capsys.readouterr().err == ""
    monkeypatch.setattr(cli_module, "stdout_broken", lambda: False)
    assert raising(BrokenPipeError(None, "Broken pipe", "sock")) == 3
    assert stderr_line(capsys) == "error: sock: cannot use: Broken pipe"


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), click.exceptions.Abort()])
def test_interrupt_is_130(raising, capsys, exc):
    assert raising(exc) == 130
    assert capsys.readouterr().err.strip() == "aborted: interrupted; outputs are written atomically, so none is half-written"


def test_missing_package_is_3_and_a_missing_own_module_a_bug(raising, capsys):
    assert raising(ModuleNotFoundError("No module named 'tensorrt.foo'", name="tensorrt.foo")) == 3
    assert stderr_line(capsys) == ("error: this needs the Python package 'tensorrt', which is not installed here "
                                   "(README: extras)")
    assert raising(ModuleNotFoundError("No module named 'pycuda.gl.x'", name="pycuda.gl.x")) == 3
    assert "the Python package 'pycuda', which" in stderr_line(capsys)
    assert raising(ModuleNotFoundError("No module named 'resnet_deploy.gone'", name="resnet_deploy.gone"), "--debug") == 4
    assert "ModuleNotFoundError: No module named 'resnet_deploy.gone'" in capsys.readouterr().err
    assert raising(ModuleNotFoundError("nameless"), "--debug") == 4
    capsys.readouterr()


def test_memory_error_is_3(raising, capsys):
    assert raising(MemoryError()) == 3
    assert stderr_line(capsys) == "error: out of memory; use smaller batches or fewer artifacts at once"


def test_click_errors(raising, capsys):
    assert raising(click.ClickException("cannot open x")) == 3
    assert stderr_line(capsys) == "error: cannot open x"
    assert cli_module.run(["boom", "--nope"]) == 2
    assert re.fullmatch(r"error: No such option.*--nope.* \(see 'resnet-deploy boom --help'\)", stderr_line(capsys))
    assert raising(click.UsageError("plain")) == 2
    assert stderr_line(capsys) == "error: plain (see 'resnet-deploy boom --help')"
    assert cli_module.run(["--version"]) == 0
    assert capsys.readouterr().out == f"resnet-deploy, version {__version__}\n"


def test_no_args_shows_help(capsys):
    assert cli_module.run([]) == 2
    assert "Usage: resnet-deploy" in capsys.readouterr().err


def test_success_is_0(raising, monkeypatch, capsys):
    @click.command("fine")
    def fine():
        click.echo("ok")

    monkeypatch.setitem(cli_module.cli.commands, "fine", fine)
    assert cli_module.run(["fine"]) == 0 and capsys.readouterr().out == "ok\n"
    with pytest.raises(SystemExit) as done:
        cli_module.main(["fine"])
    assert done.value.code == 0


def test_internal_error_writes_the_traceback_to_a_file(raising, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_module.tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(cli_module.sys, "argv", ["resnet-deploy", "boom"])
    assert raising(ValueError("wrong\nsecond line")) == 4
    line = stderr_line(capsys)
    match = re.fullmatch(rf"internal error: ValueError: wrong \(a bug in resnet-deploy {re.escape(__version__)}; "
                         r"its traceback is in (\S+); --debug shows it here; please report it\)", line)
    assert match, line
    log = match.group(1)
    assert log.startswith(str(tmp_path / "resnet-deploy-traceback-")) and log.endswith(".txt")
    text = open(log).read()
    assert text.startswith(f"resnet-deploy {__version__}: resnet-deploy boom\nTraceback")
    assert "ValueError: wrong" in text and "Traceback (most recent call last):\n  File " in text


def test_internal_error_summary_is_cut_at_300(raising, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(cli_module.tempfile, "tempdir", str(tmp_path))
    assert raising(ValueError("v" * 400)) == 4
    line = stderr_line(capsys)
    assert "ValueError: " + "v" * 288 + " (a bug" in line


def test_internal_error_without_a_writable_temp_dir(raising, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(cli_module.tempfile, "tempdir", str(tmp_path / "absent"))
    assert raising(ValueError("boom")) == 4
    err = capsys.readouterr().err
    assert err.startswith("Traceback")
    assert err.splitlines()[-1] == (f"internal error: ValueError: boom (a bug in resnet-deploy {__version__}; its "
                                    "traceback is above; --debug shows it here; please report it)")


def test_debug_prints_the_traceback(raising, capsys):
    assert raising(ValueError("boom"), "--debug") == 4
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "ValueError: boom" in err
    assert err.splitlines()[-1] == (f"internal error: ValueError: boom (a bug in resnet-deploy {__version__}; "
                                    "please report it)")
    assert raising(ValueError("again")) == 4 and "its traceback is" in capsys.readouterr().err
