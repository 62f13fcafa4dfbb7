"""What an in-process `resnet-deploy` call returns to a test (the `cli` fixture in conftest.py)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Result:
    code: int
    out: str
    err: str
