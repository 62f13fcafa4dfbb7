"""`resnet-deploy serve` as a child process: started on given (or free) ports, ready when it says so,
stopped by its own handle. Used by the benchmarks and the tests, where the server must not share a
Python interpreter (and its GIL) with the clients that load it.

The child runs in its own session, so `kill()` reaches its whole process group: serve, tritonserver
and the Python backend stubs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Mapping, Sequence

from resnet_deploy.errors import ResnetDeployError

READY_PREFIX = "ready:"
SHARED_MEMORY = Path("/dev/shm")


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ports the kernel hands out now (held together so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind((host, 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _shared_memory() -> set[str]:
    return set(os.listdir(SHARED_MEMORY)) if SHARED_MEMORY.is_dir() else set()


class ServeProcess:
    """`resnet-deploy serve ARTIFACTS --host 127.0.0.1 ...` with its output kept in `lines`."""

    def __init__(
        self,
        artifacts: Sequence[str | Path],
        *options: str,
        workspace: str | Path,
        ports: Sequence[int] | None = None,
        host: str = "127.0.0.1",
        env: Mapping[str, str] | None = None,
    ):
        """`env`: variables set (over this process's environment) for the server only."""
        self.host = host
        self.env = dict(env or {})
        self.http_port, self.grpc_port, self.metrics_port = ports or free_ports(3, host)
        self.command = [
            sys.executable,
            "-m",
            "resnet_deploy",
            "serve",
            *map(str, artifacts),
            "--host",
            host,
            "--http-port",
            str(self.http_port),
            "--grpc-port",
            str(self.grpc_port),
            "--metrics-port",
            str(self.metrics_port),
            "--workspace",
            str(workspace),
            *options,
        ]
        self.lines: list[str] = []
        self.process: subprocess.Popen | None = None
        self._shared_memory_before: set[str] = set()

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def start(self, timeout_s: float = 180) -> "ServeProcess":
        """Start and wait for the `ready:` line; on exit or timeout, kill it and raise with its output."""
        self.lines = []
        self._shared_memory_before = _shared_memory()
        self.process = subprocess.Popen(
            self.command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
            env={**os.environ, **self.env, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._collect, args=(self.process,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not any(line.startswith(READY_PREFIX) for line in self.lines):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise ResnetDeployError(
                    f"serve did not become ready (exit {self.process.returncode}):\n{self.output[-4000:]}"
                )
            time.sleep(0.1)
        return self

    def _collect(self, process: subprocess.Popen) -> None:
        assert process.stdout is not None  # started with stdout=PIPE
        for line in process.stdout:
            self.lines.append(line.rstrip("\n"))

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM (drain) and wait for the exit code; SIGKILL the group if it does not exit in time."""
        assert self.process is not None, "terminate() before start()"
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise ResnetDeployError(f"serve did not exit {timeout_s} s after SIGTERM:\n{self.output[-4000:]}") from None

    def kill(self) -> None:
        """SIGKILL the server's whole process group, then remove the shared memory it can no longer unlink:
        PyTriton's `psm_*` blocks and the Python backend's `pytrtion<pid>-*` region that appeared since
        `start()` (a `psm_*` block another program made meanwhile would go too)."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(30)
        for name in _shared_memory() - self._shared_memory_before:
            if name.startswith(("psm_", f"pytrtion{self.process.pid}-")):
                (SHARED_MEMORY / name).unlink(missing_ok=True)

    def stop(self) -> None:
        """Drain and stop if still running."""
        if self.process is not None and self.process.poll() is None:
            self.terminate()

    def __enter__(self) -> "ServeProcess":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
