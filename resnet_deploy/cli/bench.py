"""`resnet-deploy bench`: trtexec-style latency for any runner, interleaved comparisons, baseline gate."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, cast

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import (
    FOLDER,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    PERCENT,
    POSITIVE_INT,
    FiniteFloatRange,
    OutputPath,
    artifacts_argument,
    backend_option,
    baseline_options,
    data_dir_option,
    json_option,
    threads_option,
)

if TYPE_CHECKING:
    from resnet_deploy.trt.runner import TensorRTRunner


def _batch_sizes(ctx, param, value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise click.BadParameter("batch sizes must be positive")
    return sizes


@click.command()
@artifacts_argument()
@backend_option()
@click.option("--batch-sizes", default="1,8,64,256", show_default=True, callback=_batch_sizes)
@click.option("--warmup-ms", type=NON_NEGATIVE_INT, default=200, show_default=True)
@click.option(
    "--duration-s",
    type=NON_NEGATIVE_FLOAT,
    default=3.0,
    show_default=True,
    help="Minimum timed seconds per artifact and batch size.",
)
@click.option("--iterations", type=POSITIVE_INT, default=10, show_default=True, help="Minimum timed iterations.")
@click.option("--rounds", type=POSITIVE_INT, default=5, show_default=True, help="Interleaving rounds (A B A B ...).")
@click.option("--reference", default=None, help="Label of the reference artifact (default: the first).")
@threads_option
@click.option(
    "--cuda-graph",
    is_flag=True,
    help="TensorRT engines: capture each batch size's enqueue in a CUDA graph and replay it (trtexec "
    "--useCudaGraph); falls back with a notice where capture is not possible.",
)
@json_option(Path("reports/bench.json"))
@click.option(
    "--plots",
    "plots_dir",
    type=OutputPath(FOLDER),
    metavar="DIR",
    default=None,
    help="Write latency.png and throughput.png here (needs matplotlib).",
)
@baseline_options(
    click.option(
        "--max-regression", type=PERCENT, default=10.0, show_default=True, help="Allowed regression vs the baseline, %."
    )
)
@click.option(
    "--max-median-regression",
    type=FiniteFloatRange(min=0, max=100, max_open=True),
    default=None,
    help="Allowed slowdown of an absolute median vs a same-machine baseline, % (default: --max-regression); "
    "medians move more between runs than the speedups of one interleaved run.",
)
@data_dir_option
def bench(
    artifacts,
    backend,
    batch_sizes,
    warmup_ms,
    duration_s,
    iterations,
    rounds,
    reference,
    threads,
    cuda_graph,
    json_path,
    plots_dir,
    baseline,
    max_regression,
    update_baseline,
    max_median_regression,
    data_dir,
) -> None:
    """Latency and throughput of checkpoints, ONNX files or engines on real test images.

    Several artifacts are interleaved (A B A B ...) so their ratios come from one run. Each is
    labelled by its file name, or its path where names repeat. With --baseline, exit 1 when a
    speedup (or, on the same machine, a median) regresses more than --max-regression percent.
    Batch sizes that would not fit in memory are refused before anything runs. On a Jetson the report
    records the L4T release, power mode and clocks, and warns when the clocks are not locked.

    \b
    Examples:
      resnet-deploy bench artifacts/resnet18-w0.25.onnx calibration/resnet18-w0.25.int8-cpu.onnx
      resnet-deploy bench checkpoints/resnet18-w0.25/best.pt artifacts/resnet18-w0.25.onnx --batch-sizes 1
      resnet-deploy bench a.onnx b.onnx --baseline benchmarks/baselines/ci-bench.json --max-regression 25
      resnet-deploy bench engines/*_fp32_*.engine engines/*_int8_*.engine --backend tensorrt --batch-sizes 1,256
      resnet-deploy bench engines/resnet18-w0.25_int8_*.engine --batch-sizes 1 --cuda-graph
    """
    from contextlib import ExitStack

    from resnet_deploy import data
    from resnet_deploy.bench import apply_baseline_gate, check_memory, compare, fingerprint, read_baseline
    from resnet_deploy.device import jetson
    from resnet_deploy.errors import GateFailed
    from resnet_deploy.fileio import atomic_write_json, check_writable
    from resnet_deploy.runners import artifact_labels, backend_for, load_runner

    labels = artifact_labels(artifacts)
    engines = {label for label, path in zip(labels, artifacts) if backend_for(path, backend) == "tensorrt"}
    if cuda_graph and not engines:
        raise click.UsageError("--cuda-graph applies to TensorRT engines; none of the artifacts is one")
    graph_options = {"cuda_graph": True, "notice": lambda message: console.print(f"[yellow]notice[/] {message}")}
    runners = {
        label: load_runner(path, backend, threads=threads, **(graph_options if cuda_graph and label in engines else {}))
        for label, path in zip(labels, artifacts)
    }
    check_writable(
        json_path,
        *([baseline] if update_baseline else []),
        *([plots_dir / "latency.png", plots_dir / "throughput.png"] if plots_dir else []),
    )
    if baseline and not update_baseline:
        read_baseline(baseline)
    with ExitStack() as stack:
        for runner in runners.values():
            stack.enter_context(runner)
        check_memory(runners, batch_sizes)
        images = data.normalize(data.load_fashion_mnist(data_dir).test_images[: max(batch_sizes)])
        with console.status("benchmarking") as status:
            report = compare(
                runners,
                images,
                batch_sizes,
                reference=reference,
                warmup_s=warmup_ms / 1000,
                min_duration_s=duration_s,
                min_iterations=iterations,
                rounds=rounds,
                progress=lambda message: status.update(f"benchmarking: {message}"),
            )
        graphs = {label: cast("TensorRTRunner", runners[label]).cuda_graphs for label in engines if cuda_graph}
    times_ms = report.pop("times_ms")
    report["fingerprint"] = fingerprint()
    report["machine_warnings"] = jetson.warnings(report["fingerprint"])
    report["settings"] = {
        "warmup_ms": warmup_ms,
        "duration_s": duration_s,
        "iterations": iterations,
        "rounds": rounds,
        "backend": backend,
        "threads": threads,
        "cuda_graph": cuda_graph,
        "input": "Fashion-MNIST test images",
    }
    report["artifacts"] = {
        label: {
            "path": str(path),
            "backend": runners[label].backend,
            **({"cuda_graph": graphs[label]} if label in graphs else {}),
        }
        for label, path in zip(labels, artifacts)
    }
    gate_error = None
    if baseline:
        try:
            apply_baseline_gate(
                report,
                baseline,
                max_regression,
                update=update_baseline,
                max_median_regression_pct=max_median_regression,
            )
        except GateFailed as exc:
            gate_error = exc
    atomic_write_json(json_path, report)
    _print_report(report)
    if plots_dir:
        from resnet_deploy.plots import plot_bench

        written = plot_bench(report, times_ms, plots_dir)
        console.print(f"plots: {', '.join(map(str, written))}" if written else "plots skipped: install matplotlib")
    console.print(f"report {json_path}" + (f"; baseline {baseline} updated" if update_baseline else ""))
    if gate_error:
        raise gate_error


def _print_report(report: dict) -> None:
    for bs, entries in report["results"].items():
        table = Table(title=f"batch {bs} (reference {report['reference']})")
        for column in ("artifact", "median ms", "mean", "min", "max", "p90", "p95", "p99", "images/s", "speedup"):
            table.add_column(column, justify="left" if column == "artifact" else "right")
        for label, entry in entries.items():
            lat = entry["latency_ms"]
            table.add_row(
                label,
                *(f"{lat[k]:.3f}" for k in ("median", "mean", "min", "max", "p90", "p95", "p99")),
                f"{entry['throughput_ips']:.0f}",
                f"{entry['speedup_vs_reference']:.2f}x",
            )
        console.print(table)
        for label, entry in entries.items():
            if "phases_ms" in entry:
                phases = ", ".join(f"{p} {s['median']:.3f}" for p, s in entry["phases_ms"].items())
                console.print(f"  {label}: median phases (ms): {phases}")
            for warning in entry.get("warnings", []):
                console.print(f"  [yellow]warning[/] {label}: {warning}")
    for warning in report["machine_warnings"]:
        console.print(f"[yellow]warning[/] {warning}")
    for check in report.get("baseline", {}).get("checks", []):
        mark = "[green]pass[/]" if check["passed"] else "[red]FAIL[/]"
        console.print(
            f"{mark} baseline {check['label']} batch {check['batch_size']} {check['metric']}: "
            f"{check['measured']:.3g} (baseline {check['baseline']:.3g})"
        )


COMMANDS = [bench]
