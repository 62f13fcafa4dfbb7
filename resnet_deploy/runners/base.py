"""The runner interface shared by every backend (after Polygraphy's runners).

A runner touches no device and loads nothing before `activate()`; `infer()` on an inactive runner
raises `RunnerStateError`; `deactivate()` frees everything and may be called twice.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from resnet_deploy.errors import ResnetDeployError


class RunnerStateError(ResnetDeployError):
    """A runner was used while inactive (or activated twice)."""


def first_line(exc: BaseException, default: str | None = None) -> str:
    """The first non-blank line of a backend's exception text (they span pages), else `default` or its type."""
    return next((line for line in str(exc).splitlines() if line.strip()), default or type(exc).__name__)


@dataclass(frozen=True)
class TensorMeta:
    """One input or output: name, numpy dtype and shape (-1 marks a dynamic axis)."""

    name: str
    dtype: np.dtype
    shape: tuple[int, ...]


class BaseRunner:
    """Subclasses implement `_activate`, `_infer`, `_deactivate` and `_input_metadata`."""

    backend = "base"

    def __init__(self, name: str | None = None):
        self.name = name or self.backend
        self.is_active = False
        self.last_inference_time: float | None = None
        self.last_timings: dict[str, float] = {}

    def activate(self) -> "BaseRunner":
        if self.is_active:
            raise RunnerStateError(f"runner {self.name!r} is already active")
        self._activate()
        self.is_active = True
        return self

    def deactivate(self) -> None:
        if self.is_active:
            self._deactivate()
            self.is_active = False

    def __enter__(self) -> "BaseRunner":
        return self.activate()

    def __exit__(self, *exc_info) -> None:
        self.deactivate()

    def input_metadata(self) -> list[TensorMeta]:
        self._require_active("input_metadata")
        return self._input_metadata()

    def input_bytes_per_image(self) -> int:
        """Bytes of one image's inputs."""
        return sum(
            int(np.prod([d for d in meta.shape[1:] if d > 0])) * meta.dtype.itemsize for meta in self.input_metadata()
        )

    def bytes_per_image(self) -> int:
        """Host memory one image of a batch needs in `infer`: its inputs here; runners that keep the
        activations on the host (torch, ONNX Runtime) add them."""
        return self.input_bytes_per_image()

    def infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one batch; returns outputs by name and records `last_inference_time` in seconds."""
        self._require_active("infer")
        start = time.perf_counter()
        outputs = self._infer(feed)
        self.last_inference_time = time.perf_counter() - start
        return outputs

    def _require_active(self, what: str) -> None:
        if not self.is_active:
            raise RunnerStateError(f"{what}() called on inactive runner {self.name!r}; call activate() first")

    def _activate(self) -> None:
        raise NotImplementedError

    def _deactivate(self) -> None:
        raise NotImplementedError

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def _input_metadata(self) -> list[TensorMeta]:
        raise NotImplementedError
