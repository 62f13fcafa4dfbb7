"""Options and helpers shared by the command modules."""

from __future__ import annotations

import sys

import click
from rich.console import Console

from resnet_deploy.errors import ResnetDeployError

# Rich uses 80 columns when output is not a terminal (CI logs, pipes): too narrow for the reports.
console = Console(width=None if sys.stdout.isatty() else 150)
console_err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def not_built_yet(name: str, issue: str) -> click.Command:
    """A placeholder command that says it is not built yet and exits 2."""

    @click.command(name=name, context_settings={"ignore_unknown_options": True})
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    def command(args: tuple[str, ...]) -> None:
        raise ResnetDeployError(f"'resnet-deploy {name}' is not built yet ({issue})")

    command.help = f"Not built yet ({issue}).\n\nExample: resnet-deploy {name} --help"
    return command


data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="RESNET_DEPLOY_DATA",
    help="Folder with the four Fashion-MNIST .gz (or raw IDX) files. "
    "Default: $RESNET_DEPLOY_DATA, /usr/share/datasets/fashion-mnist, then the user cache (downloaded if absent).",
)
