"""Skip a pipeline stage whose inputs, settings and outputs are unchanged since its last run.

Each stage writes `<first output>.stage.json` holding the sha256 of its inputs and outputs and its
settings; the next run compares them and reuses the outputs when nothing changed. A record that is
missing, unreadable as JSON or not of `RECORD_SCHEMA` counts as stale: the stage runs again and
rewrites it. Every output is checked writable before the stage starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from resnet_deploy import schema
from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_json, check_writable, read_json, sha256_file

RECORD_SCHEMA = {"stage": str, "inputs": schema.Map(str), "settings": dict, "outputs": schema.Map(str)}


@dataclass
class StageResult:
    name: str
    outputs: list[Path]
    skipped: bool
    seconds: float
    details: Any = None


def stage_record_path(first_output: Path) -> Path:
    return first_output.with_name(first_output.name + ".stage.json")


def _fingerprint(inputs: dict[str, Path], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "inputs": {name: sha256_file(path) for name, path in sorted(inputs.items())},
        "settings": json.loads(json.dumps(settings, sort_keys=True, default=str)),
    }


def is_current(outputs: list[Path], inputs: dict[str, Path], settings: dict[str, Any]) -> bool:
    """True when every output exists unchanged and was made from these inputs and settings."""
    record_path = stage_record_path(outputs[0])
    if not record_path.is_file() or not all(p.is_file() for p in outputs):
        return False
    try:
        record = schema.check(read_json(record_path, "stage record"), RECORD_SCHEMA, record_path, "stage record")
    except ArtifactError:
        return False
    if {k: record.get(k) for k in ("inputs", "settings")} != _fingerprint(inputs, settings):
        return False
    recorded = record.get("outputs", {})
    return all(recorded.get(str(p)) == sha256_file(p) for p in outputs)


def run_stage(
    name: str, outputs: list[Path], inputs: dict[str, Path], settings: dict[str, Any], make: Callable[[], Any]
) -> StageResult:
    """Run `make()` unless the stage is current; record what it was made from."""
    started = time.perf_counter()
    if is_current(outputs, inputs, settings):
        return StageResult(name, outputs, True, time.perf_counter() - started)
    check_writable(*outputs, stage_record_path(outputs[0]))
    details = make()
    record = {**_fingerprint(inputs, settings), "stage": name, "outputs": {str(p): sha256_file(p) for p in outputs}}
    atomic_write_json(stage_record_path(outputs[0]), record)
    return StageResult(name, outputs, False, time.perf_counter() - started, details)
