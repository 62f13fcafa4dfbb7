"""Exceptions the CLI turns into exit codes, one meaning each (README, "Exit codes").

0 success; 1 a gate (accuracy, latency) failed; 2 bad usage or bad input; 3 the environment failed
(a file cannot be read or written, a package is missing); 4 an internal error (a bug: the traceback
goes to a file); 130 interrupted.
"""

from __future__ import annotations

import os

EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_ENVIRONMENT = 3
EXIT_INTERNAL_ERROR = 4
EXIT_INTERRUPTED = 130


class ResnetDeployError(Exception):
    """Bad input or usage: the message names the file or option and what is wrong; the CLI exits 2."""

    exit_code = EXIT_BAD_INPUT


class DataError(ResnetDeployError):
    """A dataset file is missing, truncated, corrupt or fails its checksum."""


class CheckpointError(ResnetDeployError):
    """A checkpoint cannot be loaded safely or does not match its model."""


class ArtifactError(ResnetDeployError):
    """An ONNX file, calibration cache, engine or sidecar is malformed or incompatible."""


class EnvironmentFailure(ResnetDeployError):
    """A file cannot be read or written (permission, disk full, a folder where a file goes); exit 3."""

    exit_code = EXIT_ENVIRONMENT

    @classmethod
    def from_os_error(cls, exc: OSError, action: str, path: str | os.PathLike | None = None) -> "EnvironmentFailure":
        """`<path>: cannot <action>: <OS reason>`, naming `path` or else the file the OS error names."""
        where = path if path is not None else (exc.filename if exc.filename is not None else "?")
        return cls(f"{where}: cannot {action}: {exc.strerror or exc}")


class GateFailed(ResnetDeployError):
    """An accuracy or latency gate failed; the CLI exits 1. `details` holds the report that failed."""

    exit_code = EXIT_GATE_FAILED

    def __init__(self, message: str, details: dict | None = None):
        super().__init__(message)
        self.details = details
