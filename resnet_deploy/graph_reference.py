"""The FP32 ONNX an FP16 or INT8 Q/DQ graph was made from, so `build --onnx` can gate its parity.

A graph names its source nowhere inside itself; the files written beside it do, with the source's
sha256: the calibration summary (`<stem>.calibration.json`) or fallback report of a Q/DQ graph, the
fp16 stage record (`<stem>.fp16.onnx.stage.json`, source `<stem>.onnx` beside it) and a bundle's
`manifest.json`. A candidate counts only when its file exists with that sha256.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from resnet_deploy.fileio import sha256_file

Candidate = tuple[Path, str]  # (path, expected sha256)


def _read(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        return None


def _source_documents(graph: Path) -> list[Path]:
    """Reports beside `graph` that may name its source ONNX (`source_onnx` + `source_onnx_sha256`)."""
    name = graph.name
    documents = [Path(str(graph) + ".json"), graph.with_name(name.removesuffix(".onnx").removesuffix(".qdq") + ".json")]
    if ".int8-" in name:
        documents.append(graph.with_name(name.split(".int8-")[0] + ".calibration.json"))
    return documents


def _from_reports(graph: Path) -> Iterator[Candidate]:
    for document in _source_documents(graph):
        report = _read(document) if document.is_file() else None
        if (
            isinstance(report, dict)
            and isinstance(report.get("source_onnx"), str)
            and isinstance(report.get("source_onnx_sha256"), str)
        ):
            source = Path(report["source_onnx"])
            for path in dict.fromkeys(
                [source, document.parent / source, document.parent.parent / source, document.parent / source.name]
            ):
                yield path, report["source_onnx_sha256"]


def _from_fp16_record(graph: Path) -> Iterator[Candidate]:
    record = _read(Path(str(graph) + ".stage.json")) if graph.name.endswith(".fp16.onnx") else None
    sha = (
        record.get("inputs", {}).get("onnx")
        if isinstance(record, dict) and isinstance(record.get("inputs"), dict)
        else None
    )
    if isinstance(sha, str):
        yield graph.with_name(graph.name.removesuffix(".fp16.onnx") + ".onnx"), sha


def _from_bundle(graph: Path, graph_sha: str) -> Iterator[Candidate]:
    from resnet_deploy.device.bundle import FP32, MANIFEST

    for folder in (graph.parent, graph.parent.parent):
        manifest = _read(folder / MANIFEST) if (folder / MANIFEST).is_file() else None
        files = manifest.get("files") if isinstance(manifest, dict) else None
        if not isinstance(files, dict) or not any(
            isinstance(e, dict) and e.get("sha256") == graph_sha for e in files.values()
        ):
            continue
        for relative, entry in files.items():
            if isinstance(entry, dict) and entry.get("role") == FP32 and isinstance(entry.get("sha256"), str):
                yield folder / relative, entry["sha256"]


def find_reference(graph: str | Path) -> Path | None:
    """The FP32 source of the FP16 or Q/DQ `graph`, found by the sha256 its reports record; None if none."""
    graph = Path(graph)
    graph_sha = sha256_file(graph)
    for path, sha in [*_from_reports(graph), *_from_fp16_record(graph), *_from_bundle(graph, graph_sha)]:
        if path.is_file() and path.resolve() != graph.resolve() and sha256_file(path) == sha:
            return path
    return None


WHERE_LOOKED = (
    "its calibration summary or fallback report (<stem>.calibration.json), its fp16 stage record "
    "(<graph>.stage.json) or a bundle manifest.json"
)
