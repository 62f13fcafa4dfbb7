"""PNG plots of benchmark results (matplotlib is an optional extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _pyplot():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def plot_bench(report: dict[str, Any], times_ms: dict[str, dict[str, list[float]]], out_dir: str | Path) -> list[Path]:
    """Latency distribution per batch size and throughput vs batch size; [] without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return []
    from resnet_deploy.fileio import atomic_path

    out_dir = Path(out_dir)
    written = []
    batch_sizes = list(report["results"])
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=(4 * len(batch_sizes), 4), squeeze=False)
    for ax, bs in zip(axes[0], batch_sizes):
        labels = list(times_ms[bs])
        ax.boxplot([times_ms[bs][label] for label in labels], showfliers=False)
        ax.set_xticks(range(1, len(labels) + 1), [label[:18] for label in labels], rotation=30, ha="right", fontsize=7)
        ax.set_title(f"batch {bs} (whiskers 1.5 IQR)")
        ax.set_ylabel("latency (ms)")
    fig.tight_layout()
    written.append(_save(fig, out_dir / "latency.png", atomic_path, plt))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label in report["results"][batch_sizes[0]]:
        ax.plot(
            [int(b) for b in batch_sizes],
            [report["results"][b][label]["throughput_ips"] for b in batch_sizes],
            marker="o",
            label=label,
        )
    ax.set_xscale("log", base=2)
    ax.set_xticks([int(b) for b in batch_sizes], batch_sizes)
    ax.set_xlabel("batch size")
    ax.set_ylabel("throughput (images/s)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(_save(fig, out_dir / "throughput.png", atomic_path, plt))
    return written


def _save(fig, path: Path, atomic_path, plt) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return path


def plot_loadtest(runs: list[dict[str, Any]], path: str | Path, title: str = "") -> Path | None:
    """Throughput vs p99 latency, one line per protocol, points labelled with their concurrency; None
    without matplotlib."""
    plt = _pyplot()
    if plt is None:
        return None
    from resnet_deploy.fileio import atomic_path

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for protocol in dict.fromkeys(run["protocol"] for run in runs):
        points = [
            (r["images_per_s"], r["latency_ms"]["p99"], r["concurrency"])
            for r in runs
            if r["protocol"] == protocol and r["latency_ms"]["p99"] is not None
        ]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=protocol)
        for x, y, concurrency in points:
            ax.annotate(f"c{concurrency}", (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    ax.set_xlabel("throughput (images/s)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_title(title or "closed-loop load: throughput vs p99 latency", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, Path(path), atomic_path, plt)
