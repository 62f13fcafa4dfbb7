"""Where the commands print: reports to stdout, errors and notes to stderr.

A standard stream the process was started without (`>&-`, some daemons) is opened on /dev/null
first, so output is discarded instead of failing, and no file the command opens later takes its
descriptor. A reader that goes away (`| head -1`) ends the command quietly (`StdoutClosed`).
"""

from __future__ import annotations

import os
import select
import sys

from rich.console import Console
from rich.text import Text


class StdoutClosed(BaseException):
    """The reader of stdout went away (broken pipe): the CLI exits quietly with 128 + SIGPIPE.
    A BaseException, like KeyboardInterrupt, so no `except Exception` on the way turns it into an error."""


def _reopen_closed_std_streams() -> None:
    for fd, name in ((0, "stdin"), (1, "stdout"), (2, "stderr")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:
            setattr(
                sys, name, open(fd, "r" if fd == 0 else "w", encoding="utf-8", errors="backslashreplace", closefd=False)
            )


def stdout_broken() -> bool:
    """Whether stdout is a pipe whose reader has gone (POLLERR on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return False


def discard_stdout() -> None:
    """Point stdout at /dev/null, so nothing later (Python's exit flush included) writes to the broken pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (AttributeError, OSError, ValueError):
        pass


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """Rich's default exits 1 (a failed gate here): discard stdout and end quietly instead."""
        self.quiet = True
        discard_stdout()
        raise StdoutClosed()


_reopen_closed_std_streams()
# Rich uses 80 columns when output is not a terminal (CI logs, pipes): too narrow for the reports.
console = _Console(width=None if sys.stdout.isatty() else 150)
console_err = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def print_error(label: str, message: str) -> None:
    """`label: message` on stderr as one line (never wrapped, never read as markup; undecodable
    bytes of a file name shown as escapes)."""
    text = " ".join(message.split("\n")).encode("utf-8", "backslashreplace").decode("utf-8")
    console_err.print(Text.assemble((f"{label}:", "bold red"), " ", text), soft_wrap=True, highlight=False)
