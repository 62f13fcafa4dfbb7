"""Options and helpers shared by the command modules."""

from __future__ import annotations

import sys

import click
from rich.console import Console

# Rich uses 80 columns when output is not a terminal (CI logs, pipes): too narrow for the reports.
console = Console(width=None if sys.stdout.isatty() else 150)
console_err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)

data_dir_option = click.option(
    "--data-dir",
    type=click.Path(file_okay=False),
    default=None,
    envvar="RESNET_DEPLOY_DATA",
    help="Folder with the four Fashion-MNIST .gz (or raw IDX) files. "
    "Default: $RESNET_DEPLOY_DATA, /usr/share/datasets/fashion-mnist, then the user cache (downloaded if absent).",
)
