"""The `resnet-deploy` command line: a thin layer over the library, one module per command.

Exit codes (`resnet_deploy.errors`): 0 success, 1 a gate failed, 2 bad usage or input, 3 the
environment failed (a file cannot be read or written, a package is missing), 4 an internal error,
130 interrupted, 141 (128 + SIGPIPE) the reader of stdout went away, quietly.
Every failure prints one line; an internal error's traceback goes to a file (or, with --debug,
to stderr). Every command checks its paths first (`options.input_paths`): none writes over its inputs.
"""

from __future__ import annotations

import importlib
import sys
import tempfile
import traceback

import click

from resnet_deploy import __version__
from resnet_deploy.cli.console import StdoutClosed, discard_stdout, print_error, stdout_broken
from resnet_deploy.cli.options import guarded
from resnet_deploy.errors import (
    EXIT_ENVIRONMENT,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EnvironmentFailure,
    GateFailed,
    ResnetDeployError,
)

# One command module per line, so adding a command is a one-line change.
COMMAND_MODULES = (
    "models",
    "train",
    "evaluate",
    "export",
    "parity",
    "calibrate",
    "layers",
    "qat",
    "build",
    "inspect",
    "infer",
    "bench",
    "bundle",
    "serve",
)
_settings = {"debug": False}
EXIT_BROKEN_PIPE = 128 + 13  # what a shell reports for a process ended by SIGPIPE


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="resnet-deploy")
@click.option(
    "--debug",
    is_flag=True,
    envvar="RESNET_DEPLOY_DEBUG",
    help="Show the traceback of an internal error on stderr instead of writing it to a file.",
)
def cli(debug: bool) -> None:
    """Train a ResNet on Fashion-MNIST and take it to a verified TensorRT engine.

    \b
    Exit codes: 0 success, 1 a gate failed, 2 bad usage or input, 3 a file could not be read or
    written or a package is missing, 4 an internal error (a bug; its traceback is written to a
    file), 130 interrupted.

    \b
    Example (the whole chain, reusing what is already built):
      resnet-deploy build --precision int8
    """
    _settings["debug"] = debug


def _register_commands() -> None:
    for name in COMMAND_MODULES:
        for command in importlib.import_module(f"resnet_deploy.cli.{name}").COMMANDS:
            cli.add_command(guarded(command))


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI and exit with the code that says what happened."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI; every outcome becomes an exit code and at most one line on stderr."""
    _settings["debug"] = False
    try:
        code = cli.main(args=argv, prog_name="resnet-deploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.NoArgsIsHelpError as exc:
        exc.show()
        return exc.exit_code
    except click.UsageError as exc:
        hint = f" (see '{exc.ctx.command_path} --help')" if exc.ctx is not None else ""
        print_error("error", exc.format_message() + hint)
        return exc.exit_code
    except click.ClickException as exc:
        print_error("error", exc.format_message())
        return EXIT_ENVIRONMENT
    except StdoutClosed:
        return EXIT_BROKEN_PIPE
    except BrokenPipeError as exc:
        if stdout_broken():
            discard_stdout()
            return EXIT_BROKEN_PIPE
        print_error("error", str(EnvironmentFailure.from_os_error(exc, "use")))
        return EXIT_ENVIRONMENT
    except (click.exceptions.Abort, KeyboardInterrupt):
        print_error("aborted", "interrupted; outputs are written atomically, so none is half-written")
        return EXIT_INTERRUPTED
    except GateFailed as exc:
        print_error("gate failed", str(exc))
        return exc.exit_code
    except ResnetDeployError as exc:
        print_error("error", str(exc))
        return exc.exit_code
    except OSError as exc:
        print_error("error", str(EnvironmentFailure.from_os_error(exc, "use")))
        return EXIT_ENVIRONMENT
    except ModuleNotFoundError as exc:
        package = (exc.name or "resnet_deploy").partition(".")[0]
        if package == "resnet_deploy":
            return _internal_error(exc)
        print_error("error", f"this needs the Python package {package!r}, which is not installed here (README: extras)")
        return EXIT_ENVIRONMENT
    except MemoryError:
        print_error("error", "out of memory; use smaller batches or fewer artifacts at once")
        return EXIT_ENVIRONMENT
    except Exception as exc:  # a bug: one line here, the traceback in a file (or on stderr with --debug)
        return _internal_error(exc)
    return code if isinstance(code, int) else 0  # click 8.2+ returns ctx.exit(N)'s code without standalone mode


def _internal_error(exc: Exception) -> int:
    text = "".join(traceback.format_exception(exc))
    summary = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
    if _settings["debug"]:
        sys.stderr.write(text)
        print_error("internal error", f"{summary} (a bug in resnet-deploy {__version__}; please report it)")
        return EXIT_INTERNAL_ERROR
    try:
        with tempfile.NamedTemporaryFile("w", prefix="resnet-deploy-traceback-", suffix=".txt", delete=False) as log:
            log.write(f"resnet-deploy {__version__}: {' '.join(sys.argv)}\n{text}")
        where = f"its traceback is in {log.name}"
    except OSError:
        sys.stderr.write(text)
        where = "its traceback is above"
    print_error(
        "internal error",
        f"{summary} (a bug in resnet-deploy {__version__}; {where}; --debug shows it here; please report it)",
    )
    return EXIT_INTERNAL_ERROR
