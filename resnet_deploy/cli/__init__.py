"""The `resnet-deploy` command line: a thin layer over the library, one module per command group.

Exit codes: 0 success, 1 a gate failed, 2 bad usage or bad input.
"""

from __future__ import annotations

import sys

import click

from resnet_deploy import __version__
from resnet_deploy.cli.common import console_err
from resnet_deploy.errors import ResnetDeployError


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="resnet-deploy")
def cli() -> None:
    """Train a ResNet on Fashion-MNIST and take it to a verified TensorRT engine.

    \b
    Example (the whole chain, reusing what is already built):
      resnet-deploy build --precision int8
    """


def _register_commands() -> None:
    from resnet_deploy.cli import bench, build, calibrate, engine, layers, qat, quantize, train, zoo

    for module in (zoo, train, quantize, calibrate, build, engine, bench, layers, qat):
        for command in module.COMMANDS:
            cli.add_command(command)


_register_commands()


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: run the CLI and map library errors to exit codes without a traceback."""
    try:
        cli.main(args=argv, prog_name="resnet-deploy", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        console_err.print("aborted")
        sys.exit(130)
    except ResnetDeployError as exc:
        label = "gate failed" if exc.exit_code == 1 else "error"
        console_err.print(f"[bold red]{label}:[/] {exc}", highlight=False)
        sys.exit(exc.exit_code)
    sys.exit(0)
