"""Latency benchmarks after trtexec: warm-up, a minimum duration and iteration count, statistics
(min / max / mean / median / p90 / p95 / p99), throughput, per-phase times (H2D, compute, D2H,
enqueue) where the runner reports them, and trtexec-like warnings.

Machines are noisy, so comparisons are made in one run: the artifacts are interleaved (A B A B ...)
and each one's median is reported with its speedup over a reference (the median over rounds of the
ratio of the two runners' medians in that round). A latency baseline stores
those speedups (and the machine's fingerprint); absolute medians are compared only on the same machine.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from resnet_deploy import schema
from resnet_deploy.errors import ArtifactError, GateFailed, ResnetDeployError
from resnet_deploy.fileio import atomic_write_json, atomic_write_text, read_json
from resnet_deploy.runners import BaseRunner

PERCENTILES = (90, 95, 99)
PHASES = ("h2d", "compute", "d2h", "enqueue")
# trtexec warns when the coefficient of variation of GPU compute time exceeds this: 2.5% since
# TensorRT 10.13.2 (samples/common/sampleReporting.cpp), 1% before.
UNSTABLE_CV_PCT = 2.5
HARDWARE_KEYS = ("cpu", "isa", "cores", "gpu")  # the model name alone hides ISA: "AMD EPYC" is Zen 3 or newer
BASELINE_SCHEMA = {
    "reference": str,
    "fingerprint": dict,
    "speedup_vs_reference": schema.Map(schema.Map(float)),
    "median_ms?": schema.Map(schema.Map(float)),
}
Clock = Callable[[], float]


def latency_stats(times_s: Sequence[float]) -> dict[str, float]:
    """min / max / mean / std / median / p90 / p95 / p99 in milliseconds (numpy's linear percentiles)."""
    ms = np.asarray(times_s, dtype=np.float64) * 1000.0
    if ms.size == 0:
        raise ValueError("no timings to summarize")
    stats = {
        "count": int(ms.size),
        "min": float(ms.min()),
        "max": float(ms.max()),
        "mean": float(ms.mean()),
        "std": float(ms.std()),
        "median": float(np.median(ms)),
    }
    stats.update({f"p{p}": float(np.percentile(ms, p)) for p in PERCENTILES})
    return stats


def _one_run(runner: BaseRunner, feed: Mapping[str, np.ndarray], clock: Clock) -> tuple[float, dict[str, float]]:
    started = clock()
    runner.infer(feed)
    return clock() - started, dict(runner.last_timings)


def _feed(runner: BaseRunner, images: np.ndarray, batch_size: int) -> dict[str, np.ndarray]:
    repeats = -(-batch_size // len(images))
    batch = np.concatenate([images] * repeats)[:batch_size] if repeats > 1 else images[:batch_size]
    return {runner.input_metadata()[0].name: np.ascontiguousarray(batch, dtype=np.float32)}


def measure(
    runner: BaseRunner,
    images: np.ndarray,
    batch_size: int,
    warmup_s: float = 0.2,
    min_duration_s: float = 3.0,
    min_iterations: int = 10,
    *,
    clock: Clock = time.perf_counter,
) -> dict[str, Any]:
    """One active runner at one batch size: latency statistics, throughput, phases and warnings."""
    report = compare(
        {runner.name: runner},
        images,
        [batch_size],
        warmup_s=warmup_s,
        min_duration_s=min_duration_s,
        min_iterations=min_iterations,
        rounds=1,
        clock=clock,
    )
    return report["results"][str(batch_size)][runner.name]


def compare(
    runners: Mapping[str, BaseRunner],
    images: np.ndarray,
    batch_sizes: Sequence[int],
    *,
    reference: str | None = None,
    warmup_s: float = 0.2,
    min_duration_s: float = 3.0,
    min_iterations: int = 10,
    rounds: int = 5,
    clock: Clock = time.perf_counter,
    progress: Callable[[str], None] | None = None,
    settle_s: float = 0.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Benchmark every runner at every batch size, interleaved in `rounds` (A B A B ...).

    Each runner gets at least `min_iterations` and `min_duration_s` of timed inferences per batch
    size after `warmup_s` of warm-up (at least one inference: it sets up per-shape state such as a
    CUDA graph). Runners must be active. `settle_s` of idle before each runner's block lets the worker
    threads of the one before stop spin-waiting on the cores (multi-threaded CPU runners: measured, a
    0.3 s pause took PyTorch eager at batch 1 from 2.0-2.1 ms back to 1.4-1.8 ms beside ONNX Runtime).
    """
    labels = list(runners)
    reference = reference or labels[0]
    if reference not in runners:
        raise ArtifactError(f"reference {reference!r} is not one of the benchmarked artifacts: {', '.join(labels)}")
    results: dict[str, Any] = {"reference": reference, "batch_sizes": list(batch_sizes), "results": {}}
    for batch_size in batch_sizes:
        feeds = {label: _feed(runner, images, batch_size) for label, runner in runners.items()}
        for label, runner in runners.items():
            deadline = clock() + warmup_s
            runner.infer(feeds[label])
            while clock() < deadline:
                runner.infer(feeds[label])
        times: dict[str, list[float]] = {label: [] for label in labels}
        round_medians: dict[str, list[float]] = {label: [] for label in labels}
        phases: dict[str, dict[str, list[float]]] = {label: {p: [] for p in PHASES} for label in labels}
        spent = {label: 0.0 for label in labels}
        per_round = min_duration_s / rounds
        for round_index in range(rounds):
            for label in labels:
                if settle_s:
                    sleep(settle_s)
                round_start = clock()
                target = -(-min_iterations // rounds)
                done = 0
                while done < target or clock() - round_start < per_round:
                    elapsed, timings = _one_run(runners[label], feeds[label], clock)
                    times[label].append(elapsed)
                    spent[label] += elapsed
                    for phase in PHASES:
                        if phase in timings:
                            phases[label][phase].append(timings[phase])
                    done += 1
                round_medians[label].append(float(np.median(times[label][-done:])))
            if progress:
                progress(f"batch {batch_size}: round {round_index + 1}/{rounds}")
        results["results"][str(batch_size)] = {
            label: _summary(times[label], phases[label], spent[label], batch_size) for label in labels
        }
        results.setdefault("times_ms", {})[str(batch_size)] = {
            label: [t * 1000 for t in times[label]] for label in labels
        }
        _add_ratios(results["results"][str(batch_size)], round_medians, reference)
    return results


def _summary(times: list[float], phases: dict[str, list[float]], spent: float, batch_size: int) -> dict[str, Any]:
    entry = {
        "latency_ms": latency_stats(times),
        "throughput_ips": batch_size * len(times) / spent,
        "iterations": len(times),
        "seconds": spent,
    }
    measured = {p: latency_stats(v) for p, v in phases.items() if v}
    if measured:
        entry["phases_ms"] = measured
        entry["warnings"] = phase_warnings(measured)
    return entry


def phase_warnings(phases: Mapping[str, Mapping[str, float]]) -> list[str]:
    """trtexec-like hints: enqueue-bound, transfer-bound and unstable compute time."""
    warnings = []
    compute = phases.get("compute", {}).get("median")
    if compute:
        cv_pct = 100.0 * phases["compute"].get("std", 0.0) / phases["compute"].get("mean", compute)
        if cv_pct > UNSTABLE_CV_PCT:
            warnings.append(
                f"unstable: compute time varies by {cv_pct:.1f}% (coefficient of variation); "
                "lock the GPU clocks or use a quieter machine before comparing"
            )
        enqueue = phases.get("enqueue", {}).get("median", 0.0)
        if enqueue >= 0.8 * compute:
            warnings.append(
                f"enqueue-bound: median enqueue {enqueue:.3f} ms vs compute {compute:.3f} ms; "
                "the GPU may idle between inferences (try CUDA graphs or larger batches)"
            )
        transfers = phases.get("h2d", {}).get("median", 0.0) + phases.get("d2h", {}).get("median", 0.0)
        if transfers > compute:
            warnings.append(f"transfer-bound: H2D + D2H {transfers:.3f} ms exceed compute {compute:.3f} ms")
    return warnings


def _add_ratios(by_label: dict[str, Any], round_medians: Mapping[str, Sequence[float]], reference: str) -> None:
    """Each runner's speedup over the reference: the median over rounds of the reference's median over
    the runner's, both measured back to back in that round, so a change of load between rounds cancels."""
    for label, entry in by_label.items():
        entry["speedup_vs_reference"] = speedup(round_medians[reference], round_medians[label])


def speedup(reference_ms: Sequence[float], candidate_ms: Sequence[float]) -> float:
    """Median of the per-round ratios reference / candidate."""
    return float(np.median(np.asarray(reference_ms, np.float64) / np.asarray(candidate_ms, np.float64)))


def available_memory_bytes() -> int | None:
    """Memory the system can give this process without swapping (Linux MemAvailable), or None."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(runners: Mapping[str, BaseRunner], batch_sizes: Sequence[int]) -> None:
    """Refuse, before any allocation, batch sizes that would not fit in memory: `compare` holds an
    input feed per runner while one runner at a time works on its batch (runners must be active)."""
    available = available_memory_bytes()
    if available is None:
        return
    feeds = sum(runner.input_bytes_per_image() for runner in runners.values())
    working = max(runner.bytes_per_image() for runner in runners.values())
    largest = max(batch_sizes)
    needed = largest * (feeds + working)
    if needed > available:
        raise ResnetDeployError(
            f"--batch-sizes {largest}: needs about {needed / 2**30:.1f} GiB of memory ({(feeds + working) / 1024:.0f} "
            f"KiB per image: the inputs of {len(runners)} artifact(s) and the largest one's activations); "
            f"{available / 2**30:.1f} GiB is available; use smaller batch sizes"
        )


def _gpu() -> str | None:
    """GPU names and driver from nvidia-smi, else the Jetson board model, else None."""
    if shutil.which("nvidia-smi"):
        try:
            out = subprocess.run(
                ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            ).stdout
            if out.strip():
                return "; ".join(line.strip() for line in out.splitlines() if line.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    try:
        return Path("/proc/device-tree/model").read_text().strip("\x00\n ") or None
    except OSError:
        return None


def write_results(out_dir: Path, stem: str, report: Mapping[str, Any], table: str) -> None:
    """A benchmark's results: `<stem>.json` (the report) and `<stem>.md` (its table) in `out_dir`, each
    written atomically; then the table on stdout."""
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"{stem}.json", report)
    atomic_write_text(out_dir / f"{stem}.md", table)
    print(table)


ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8", "asimd", "asimddp")


def cpu_flags() -> list[str]:
    """The ISA extensions that decide FP32 and INT8 speed, as /proc/cpuinfo lists them."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(
        next(
            (line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith(("flags", "Features"))), []
        )
    )
    return [flag for flag in ISA_FLAGS if flag in flags]


def fingerprint() -> dict[str, Any]:
    """What the numbers depend on: CPU, cores, GPU, OS, Python and runtime versions; on a Jetson also the
    L4T release (JetPack), nvpmodel power mode and clocks (`jetson.fingerprint`)."""
    from resnet_deploy.device import jetson

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for package in ("onnxruntime", "torch", "tensorrt", "numpy"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {
        "cpu": cpu,
        "isa": cpu_flags(),
        "cores": os.cpu_count(),
        "gpu": _gpu(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "versions": versions,
        **jetson.fingerprint(),
    }


def hardware_difference(here: Mapping[str, Any], recorded: Mapping[str, Any]) -> str | None:
    """How the machine `here` differs from `recorded` (CPU model and ISA extensions, cores, GPU; on a Jetson
    the board, L4T release and power mode), or None for the same kind of machine."""
    from resnet_deploy.device import jetson

    def board(fingerprint: Mapping[str, Any]) -> dict[str, Any] | None:
        known = jetson.comparable(fingerprint)
        return known and {key: value for key, value in known.items() if key != "clocks_locked"}

    if board(here) != board(recorded):
        return "another Jetson board, L4T release or power mode"
    for key in HARDWARE_KEYS:
        if here.get(key) != recorded.get(key):
            return f"{key} {here.get(key)!r} here, {recorded.get(key)!r} in the baseline"
    return None


def machine_difference(here: Mapping[str, Any], recorded: Mapping[str, Any]) -> str | None:
    """Why absolute times measured `here` cannot be compared with those of `recorded`, or None when they can.

    They can only on the same kind of machine (`hardware_difference`) with the same runtime versions; on a
    Jetson the clocks must be locked in both runs (unlocked clocks follow the load, so their times vary run
    to run)."""
    from resnet_deploy.device import jetson

    boards = jetson.comparable(here), jetson.comparable(recorded)
    if any(board is not None and not board["clocks_locked"] for board in boards):
        return "Jetson clocks are not locked"
    other_hardware = hardware_difference(here, recorded)
    if other_hardware:
        return other_hardware
    mine, theirs = here.get("versions"), recorded.get("versions")
    if mine == theirs:
        return None
    if isinstance(mine, dict) and isinstance(theirs, dict):
        return "; ".join(
            f"{name} {mine.get(name, 'absent')} here, {theirs.get(name, 'absent')} in the baseline"
            for name in sorted({*mine, *theirs})
            if mine.get(name) != theirs.get(name)
        )
    return f"versions {mine!r} here, {theirs!r} in the baseline"


def same_machine(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether absolute times of `a` and `b` are comparable (`machine_difference` says why not)."""
    return machine_difference(a, b) is None


def absolute_skip_reason(report: Mapping[str, Any], baseline: Mapping[str, Any]) -> str | None:
    """Why the baseline's absolute medians are not compared with this run's, or None when they are."""
    if not baseline.get("median_ms"):
        return "the baseline records no medians"
    return machine_difference(report["fingerprint"], baseline.get("fingerprint", {}))


def make_baseline(report: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "reference": report["reference"],
        "fingerprint": report["fingerprint"],
        "speedup_vs_reference": {
            bs: {label: e["speedup_vs_reference"] for label, e in entries.items()}
            for bs, entries in report["results"].items()
        },
        "median_ms": {
            bs: {label: e["latency_ms"]["median"] for label, e in entries.items()}
            for bs, entries in report["results"].items()
        },
    }


def _require_same_runs(report: Mapping[str, Any], baseline: Mapping[str, Any], path: Path) -> None:
    """A baseline gates only the artifacts and batch sizes it recorded: a run missing any of them
    (a renamed file, a dropped batch size) or using another reference would pass without checking."""
    if baseline.get("reference") != report["reference"]:
        raise ArtifactError(
            f"{path}: baseline reference is {baseline.get('reference')!r}, this run's is "
            f"{report['reference']!r}; pass --reference or --update-baseline"
        )
    missing = [
        f"{label} at batch {bs}"
        for bs, labels in baseline.get("speedup_vs_reference", {}).items()
        for label in labels
        if label not in report["results"].get(bs, {})
    ]
    if missing or not baseline.get("speedup_vs_reference"):
        raise ArtifactError(
            f"{path}: this run did not measure {', '.join(missing) or 'anything the baseline has'}; "
            "benchmark the same artifacts and batch sizes or pass --update-baseline"
        )


def check_baseline(
    report: Mapping[str, Any],
    baseline: Mapping[str, Any],
    max_regression_pct: float,
    max_median_regression_pct: float | None = None,
) -> list[dict[str, Any]]:
    """Compare a run with a baseline; returns the checks made, each with `passed`. Absolute medians may
    have their own, looser limit (`max_median_regression_pct`, default `max_regression_pct`): between runs
    on one machine they move far more than the ratios of one interleaved run."""
    checks = []
    limit = 1.0 - max_regression_pct / 100.0
    median_limit = (
        1.0 - (max_regression_pct if max_median_regression_pct is None else max_median_regression_pct) / 100.0
    )
    for bs, labels in baseline.get("speedup_vs_reference", {}).items():
        for label, expected in labels.items():
            entry = report["results"].get(bs, {}).get(label)
            if entry is None or label == baseline.get("reference"):
                continue
            measured = entry["speedup_vs_reference"]
            checks.append(
                {
                    "batch_size": int(bs),
                    "label": label,
                    "metric": "speedup_vs_reference",
                    "baseline": expected,
                    "measured": measured,
                    "threshold": expected * limit,
                    "passed": measured >= expected * limit,
                }
            )
    if absolute_skip_reason(report, baseline) is None:
        for bs, labels in baseline.get("median_ms", {}).items():
            for label, expected in labels.items():
                entry = report["results"].get(bs, {}).get(label)
                if entry is not None:
                    measured = entry["latency_ms"]["median"]
                    checks.append(
                        {
                            "batch_size": int(bs),
                            "label": label,
                            "metric": "median_ms",
                            "baseline": expected,
                            "measured": measured,
                            "threshold": expected / median_limit,
                            "passed": measured <= expected / median_limit,
                        }
                    )
    return checks


def read_baseline(baseline_path: str | Path) -> dict[str, Any]:
    """A latency baseline written by `make_baseline`; a missing or malformed file raises `ArtifactError`."""
    if not Path(baseline_path).exists():
        raise ArtifactError(f"{baseline_path}: no latency baseline yet; record one with --update-baseline")
    return schema.check(
        read_json(baseline_path, "latency baseline"), BASELINE_SCHEMA, baseline_path, "latency baseline"
    )


def running_in_ci() -> bool:
    """CI=true (GitHub Actions and most CI services set it): a gate that cannot run is a failure there."""
    return os.environ.get("CI", "").strip().lower() == "true"


def apply_baseline_gate(
    report: dict[str, Any],
    baseline_path: str | Path,
    max_regression_pct: float,
    update: bool = False,
    max_median_regression_pct: float | None = None,
) -> None:
    """Write (`update`) or check the latency baseline; raises `GateFailed` on a regression.

    Speedups over the reference (ratios from this one interleaved run) are always gated; absolute
    medians only against a baseline of the same machine. When they are not compared, a note in
    `machine_warnings` says why, and under CI=true the skipped check fails the gate, unless the baseline
    comes from another kind of machine (`hardware_difference`): CI runners of one kind mix CPUs, and a
    gate that fails on every runner but one is noise, not a check."""
    baseline_path = Path(baseline_path)
    if update:
        atomic_write_json(baseline_path, make_baseline(report))
        return
    baseline = read_baseline(baseline_path)
    _require_same_runs(report, baseline, baseline_path)
    checks = check_baseline(report, baseline, max_regression_pct, max_median_regression_pct)
    skipped = absolute_skip_reason(report, baseline)
    median_pct = max_regression_pct if max_median_regression_pct is None else max_median_regression_pct
    report["baseline"] = {
        "path": str(baseline_path),
        "max_regression_pct": max_regression_pct,
        "max_median_regression_pct": median_pct,
        "checks": checks,
        "same_machine": same_machine(report["fingerprint"], baseline.get("fingerprint", {})),
        "absolute_skipped": skipped,
    }
    problems = [
        f"{c['label']} batch {c['batch_size']} {c['metric']} {c['measured']:.3g} vs baseline {c['baseline']:.3g}"
        for c in checks
        if not c["passed"]
    ]
    if skipped:
        other_hardware = hardware_difference(report["fingerprint"], baseline.get("fingerprint", {}))
        report.setdefault("machine_warnings", []).append(
            f"absolute medians not compared with {baseline_path}: {skipped}; only the speedups are gated"
            + (
                " (reduced-precision speedups depend on the ISA and GPU: record a baseline per machine kind)"
                if other_hardware
                else ""
            )
        )
        if running_in_ci() and not other_hardware:
            problems.append(
                f"absolute medians not compared ({skipped}) and CI=true needs every check to run: "
                "record the baseline on this machine kind with --update-baseline"
            )
    if problems:
        allowed = f"{max_regression_pct:g}%" + (
            f", medians {median_pct:g}%" if median_pct != max_regression_pct else ""
        )
        raise GateFailed("latency regression: " + "; ".join(problems) + f" (allowed {allowed})")
