"""Where the commands print: reports to stdout, errors and notes to stderr."""

from __future__ import annotations

import sys

from rich.console import Console
from rich.text import Text

# Rich uses 80 columns when output is not a terminal (CI logs, pipes): too narrow for the reports.
console = Console(width=None if sys.stdout.isatty() else 150)
console_err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def print_error(label: str, message: str) -> None:
    """`label: message` on stderr as one line (never wrapped, never read as markup)."""
    console_err.print(Text.assemble((f"{label}:", "bold red"), " ", " ".join(message.split("\n"))),
                      soft_wrap=True, highlight=False)
