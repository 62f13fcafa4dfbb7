"""Accuracy parity: artifacts on any backend against a reference on the 10k test split.

The reference is the FP32 model (a PyTorch checkpoint or the FP32 ONNX); an artifact may also be
compared with the graph it was built from when both carry its precision (the `build` pipeline
checks an INT8 engine against its Q/DQ graph). Reported: top-1, argmax agreement with the
reference, |logit difference| statistics and per-class accuracy deltas. Gates, by the artifact's
precision: FP32 agreement >= 99.99%, FP16 top-1 drop <= 0.05 pp, INT8 top-1 drop <= `max_drop_pp`
(`INT8_MAX_DROP_PP`, 0.5, by default); with a baseline, each artifact's top-1 may not fall more than
`max_baseline_drop_pp` below the recorded one.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from resnet_deploy import data, schema
from resnet_deploy.errors import ArtifactError, GateFailed
from resnet_deploy.fileio import atomic_write_json, check_writable, read_json
from resnet_deploy.onnx_io import PRECISIONS
from resnet_deploy.runners import BaseRunner, artifact_labels, load_runner

FP32_MIN_AGREEMENT = 0.9999
FP16_MAX_DROP_PP = 0.05
INT8_MAX_DROP_PP = 0.5


def collect_logits(runner: BaseRunner, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Run `images` (normalized float32) through an active runner in batches (at most its max batch)."""
    name = runner.input_metadata()[0].name
    batch_size = min(batch_size, getattr(runner, "max_batch", 0) or batch_size)
    chunks = []
    for start in range(0, len(images), batch_size):
        outputs = runner.infer({name: images[start : start + batch_size]})
        chunks.append(next(iter(outputs.values())).astype(np.float32))
    return np.concatenate(chunks)


def precision_of_artifact(path: str | Path) -> str:
    """fp32, fp16 or int8, from the file itself: the ONNX graph, the engine's sidecar; a checkpoint is fp32."""
    path = Path(path)
    if path.suffix == ".onnx":
        from resnet_deploy.onnx_io import graph_precision, load_onnx

        return graph_precision(load_onnx(path))
    if path.suffix in (".engine", ".plan"):
        from resnet_deploy.trt.sidecar import read_sidecar, sidecar_path

        precision = read_sidecar(path)["precision"]
        if precision not in PRECISIONS:
            raise ArtifactError(f"{sidecar_path(path)}: precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        return precision
    return "fp32"


def check_reference(reference: str | Path, precision: str, precisions: dict[str, str]) -> None:
    """The reference must be FP32, or of the precision of every artifact (an artifact against the graph
    it was built from); an FP16 or INT8 reference would make every drop look smaller than it is."""
    if precision == "fp32" or set(precisions.values()) == {precision}:
        return
    raise ArtifactError(
        f"{reference}: is an {precision} graph; the parity reference must be the FP32 model "
        f"(a checkpoint or the FP32 ONNX), or carry the precision of every artifact compared"
    )


def gate_for(precision: str, max_drop_pp: float) -> tuple[str, float]:
    if precision == "fp32":
        return "agreement", FP32_MIN_AGREEMENT
    if precision == "fp16":
        return "top1_drop_pp", FP16_MAX_DROP_PP
    return "top1_drop_pp", max_drop_pp


def compare(
    reference: np.ndarray, candidate: np.ndarray, labels: np.ndarray, class_names: Sequence[str]
) -> dict[str, Any]:
    """Accuracy and agreement of `candidate` logits against `reference` logits."""
    diff = np.abs(reference - candidate)
    ref_pred, cand_pred = reference.argmax(1), candidate.argmax(1)
    per_class: dict[str, float | None] = {}
    for index, name in enumerate(class_names):  # None for a class no image of the (limited) split has
        mask = labels == index
        per_class[name] = (
            round(float(((cand_pred[mask] == index).mean() - (ref_pred[mask] == index).mean()) * 100), 3)
            if mask.any()
            else None
        )
    top1, ref_top1 = float((cand_pred == labels).mean()), float((ref_pred == labels).mean())
    return {
        "top1": top1,
        "top1_drop_pp": round((ref_top1 - top1) * 100, 4),
        "agreement": float((cand_pred == ref_pred).mean()),
        "logit_abs_diff": {"max": float(diff.max()), "mean": float(diff.mean()), "p99": float(np.percentile(diff, 99))},
        "per_class_delta_pp": per_class,
    }


def run_parity(
    reference: BaseRunner,
    candidates: dict[str, BaseRunner],
    images: np.ndarray,
    labels: np.ndarray,
    *,
    precisions: dict[str, str] | None = None,
    max_drop_pp: float = INT8_MAX_DROP_PP,
    batch_size: int = 256,
    class_names: Sequence[str] = data.CLASS_NAMES,
) -> dict[str, Any]:
    """Parity of each labelled runner against `reference`; gates are evaluated, not raised.

    `precisions` maps a label to fp32/fp16/int8 and picks its gate; a label it lacks is held to
    the strictest one (FP32 agreement), so a forgotten label fails loudly rather than passing.
    """
    precisions = precisions or {}
    started = time.perf_counter()
    with reference:
        reference_logits = collect_logits(reference, images, batch_size)
    report: dict[str, Any] = {
        "dataset": {"split": "test", "count": int(len(images))},
        "thresholds": {
            "fp32_min_agreement": FP32_MIN_AGREEMENT,
            "fp16_max_drop_pp": FP16_MAX_DROP_PP,
            "int8_max_drop_pp": max_drop_pp,
        },
        "reference": {
            "name": reference.name,
            "backend": reference.backend,
            "top1": float((reference_logits.argmax(1) == labels).mean()),
            "seconds": round(time.perf_counter() - started, 3),
        },
        "artifacts": [],
    }
    for label, runner in candidates.items():
        report["artifacts"].append(
            _candidate_entry(
                label,
                runner,
                precisions.get(label, "fp32"),
                reference_logits,
                images,
                labels,
                max_drop_pp,
                batch_size,
                class_names,
            )
        )
    report["passed"] = all(g["passed"] for a in report["artifacts"] for g in a["gates"])
    return report


def _candidate_entry(
    label: str,
    runner: BaseRunner,
    precision: str,
    reference_logits: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    max_drop_pp: float,
    batch_size: int,
    class_names: Sequence[str],
) -> dict[str, Any]:
    started = time.perf_counter()
    with runner:
        logits = collect_logits(runner, images, batch_size)
    entry = {
        "label": label,
        "backend": runner.backend,
        "precision": precision,
        **compare(reference_logits, logits, labels, class_names),
    }
    metric, threshold = gate_for(precision, max_drop_pp)
    passed = entry[metric] >= threshold if metric == "agreement" else entry[metric] <= threshold
    entry["gates"] = [
        {"name": f"{precision} {metric}", "value": entry[metric], "threshold": threshold, "passed": bool(passed)}
    ]
    entry["seconds"] = round(time.perf_counter() - started, 3)
    return entry


BASELINE_SCHEMA = {"top1": schema.Map(float), "reference_top1?": float, "count?": int}


def read_baseline(baseline_path: str | Path) -> dict[str, float]:
    """Per-artifact top-1 recorded by `write_baseline`; a missing or malformed file raises `ArtifactError`."""
    recorded = read_json(baseline_path, "parity baseline")
    return schema.check(recorded, BASELINE_SCHEMA, baseline_path, "parity baseline")["top1"]


def apply_baseline(
    report: dict[str, Any], baseline: dict[str, float], max_drop_pp: float, source: str | Path = "baseline"
) -> None:
    """Add a baseline gate to each artifact the baseline knows (top-1 may not fall more than max_drop_pp)."""
    for entry in report["artifacts"]:
        if entry["label"] in baseline:
            drop = round((baseline[entry["label"]] - entry["top1"]) * 100, 4)  # as reported, so 0.5 passes 0.5
            entry["gates"].append(
                {
                    "name": "baseline top1_drop_pp",
                    "value": drop,
                    "threshold": max_drop_pp,
                    "passed": bool(drop <= max_drop_pp),
                }
            )
    report["baseline"] = str(source)
    report["thresholds"]["max_baseline_drop_pp"] = max_drop_pp
    report["passed"] = all(g["passed"] for a in report["artifacts"] for g in a["gates"])


def write_baseline(report: dict[str, Any], baseline_path: str | Path) -> None:
    atomic_write_json(
        baseline_path,
        {
            "top1": {a["label"]: a["top1"] for a in report["artifacts"]},
            "reference_top1": report["reference"]["top1"],
            "count": report["dataset"]["count"],
        },
    )


def parity_for_artifacts(
    reference: str | Path,
    artifacts: Sequence[str | Path],
    report_path: str | Path,
    *,
    backend: str = "auto",
    max_drop_pp: float = INT8_MAX_DROP_PP,
    limit: int = 0,
    batch_size: int = 256,
    data_dir: str | Path | None = None,
    baseline: str | Path | None = None,
    update_baseline: bool = False,
    max_baseline_drop_pp: float = 0.1,
    threads: int = 0,
) -> dict[str, Any]:
    """Parity of artifact files on the test split; writes the JSON report, raises `GateFailed` on failure.

    `backend` runs every artifact but checkpoints (auto: by suffix). Every file, the reference's
    precision, the baseline and the output paths are checked before any inference, so a bad input
    fails in seconds.
    """
    reference_runner = load_runner(reference, threads=threads)
    labels = artifact_labels(artifacts)
    runners = {label: load_runner(path, backend, threads=threads) for label, path in zip(labels, artifacts)}
    precisions = {label: precision_of_artifact(path) for label, path in zip(labels, artifacts)}
    check_reference(reference, precision_of_artifact(reference), precisions)
    recorded = read_baseline(baseline) if baseline and not update_baseline else None
    check_writable(report_path, *([baseline] if baseline and update_baseline else []))
    dataset = data.load_fashion_mnist(data_dir)
    images, labels_true = data.normalize(dataset.test_images), dataset.test_labels
    if limit:
        images, labels_true = images[:limit], labels_true[:limit]
    report = run_parity(
        reference_runner,
        runners,
        images,
        labels_true,
        precisions=precisions,
        max_drop_pp=max_drop_pp,
        batch_size=batch_size,
    )
    if recorded is not None:
        assert baseline is not None  # recorded was read from it
        apply_baseline(report, recorded, max_baseline_drop_pp, baseline)
    if baseline and update_baseline:
        write_baseline(report, baseline)
    atomic_write_json(report_path, report)
    if not report["passed"]:
        failed = [
            f"{a['label']}: {g['name']} = {g['value']:.4g} (limit {g['threshold']:g})"
            for a in report["artifacts"]
            for g in a["gates"]
            if not g["passed"]
        ]
        raise GateFailed("parity gate failed: " + "; ".join(failed) + f" (report {report_path})", details=report)
    return report
