"""The settings of a training run, their defaults and their bounds, without torch.

`TrainConfig()` is the default recipe. `BOUNDS` is the one place the limits of a setting are
written: the CLI builds its option types from it and `TrainConfig.check` enforces it for library
callers, so `--lr nan` or `--epochs 0` never starts a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

from resnet_deploy.data import TRAIN_SIZE
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.model_options import MODEL_NAMES, SHORTCUTS, STEMS

SCHEDULES = ("onecycle", "cosine")
CHOICES = {"model": MODEL_NAMES, "stem": STEMS, "shortcut": SHORTCUTS, "schedule": SCHEDULES}


@dataclass(frozen=True)
class Bound:
    """Allowed values of a numeric setting: minimum (excluded when `open_min`) and maximum."""

    minimum: float | None = None
    maximum: float | None = None
    open_min: bool = False

    def problem(self, value: float) -> str | None:
        if isinstance(value, float) and not math.isfinite(value):
            return "must be a finite number"
        if self.minimum is not None and (value <= self.minimum if self.open_min else value < self.minimum):
            return f"must be {'>' if self.open_min else '>='} {self.minimum:g}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum:g}"
        return None


BOUNDS = {
    "width": Bound(0, 4, open_min=True),  # wider nets of the zoo need tens of GB (resnet152 at 4: 930M parameters)
    "epochs": Bound(1),
    "batch_size": Bound(1),
    "lr": Bound(0, None, open_min=True),
    "momentum": Bound(0, 1),
    "weight_decay": Bound(0),
    "label_smoothing": Bound(0, 1),
    "warmup_fraction": Bound(0, 1, open_min=True),
    "crop_padding": Bound(0),
    "random_erasing": Bound(0, 1),
    "threads": Bound(0),
    "train_limit": Bound(0, TRAIN_SIZE),
    "eval_batch_size": Bound(1),
}


@dataclass
class TrainConfig:
    """Every setting of a training run; stored in the checkpoint sidecar."""

    model: str = "resnet18"
    width: float = 0.25
    stem: str = "small"
    shortcut: str = "B"
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.2
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-4
    label_smoothing: float = 0.1
    schedule: str = "onecycle"
    warmup_fraction: float = 0.2
    crop_padding: int = 2
    hflip: bool = True
    random_erasing: float = 0.0
    zero_init_residual: bool = True
    seed: int = 0
    threads: int = 0
    train_limit: int = 0
    eval_batch_size: int = 1000

    def model_kwargs(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "stem": self.stem,
            "shortcut": self.shortcut,
            "zero_init_residual": self.zero_init_residual,
        }

    @property
    def tag(self) -> str:
        return f"{self.model}-w{self.width:g}"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def check(self) -> "TrainConfig":
        """Refuse a setting outside its bound or choices (`ResnetDeployError` naming it); returns self."""
        for name, bound in BOUNDS.items():
            problem = bound.problem(getattr(self, name))
            if problem:
                raise ResnetDeployError(f"training setting {name} = {getattr(self, name)!r}: {problem}")
        for name, choices in CHOICES.items():
            if getattr(self, name) not in choices:
                raise ResnetDeployError(
                    f"training setting {name} = {getattr(self, name)!r}: choose one of {', '.join(choices)}"
                )
        return self


# Settings that do not change what a run computes, so `--resume` may change them.
RESUMABLE_CHANGES = ("threads", "eval_batch_size")


def changed_settings(saved: TrainConfig, requested: TrainConfig) -> list[str]:
    """`name requested (the run used saved)` for each setting that differs and would change the run."""
    return [
        f"{f.name} {getattr(requested, f.name)!r} (the run used {getattr(saved, f.name)!r})"
        for f in fields(TrainConfig)
        if f.name not in RESUMABLE_CHANGES and getattr(saved, f.name) != getattr(requested, f.name)
    ]


# The `training` object of a checkpoint sidecar (resnet_deploy.schema): each known field with its type.
SCHEMA = {f"{f.name}?": float if isinstance(f.default, float) else type(f.default) for f in fields(TrainConfig)}
