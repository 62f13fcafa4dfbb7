#!/usr/bin/env python3
"""README serving figures: a real Triton server (PyTriton) with dynamic batching vs without, on ONNX
Runtime CPU, in one run with the two servers side by side and their loads interleaved (A B A B ...).

Measures throughput and p50/p95/p99 latency per protocol and concurrency, the ratio with/without
dynamic batching (goal: >= 2x at concurrency 16), a long load at concurrency 8 that must have zero
failed requests, and the 10k test split through the server (FP32 and raw-pixel models) against the
local runner's predictions (must be identical). The served throughput at concurrency 16 is also set against
the local ONNX Runtime runner's (same threads) at the batch size the server's batcher formed there (goal:
>= 50%, the client on the same cores included). Writes benchmarks/results/serve-<tag>.json, .md, .png.

    python benchmarks/serve_batching.py --onnx artifacts/resnet18-w0.25.onnx
    python benchmarks/serve_batching.py --checkpoint checkpoints/resnet18-w0.25/best.pt   # exports it first
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from resnet_deploy import data
from resnet_deploy.bench import fingerprint
from resnet_deploy.fileio import atomic_write_json, atomic_write_text
from resnet_deploy.parity import collect_logits
from resnet_deploy.plots import plot_loadtest
from resnet_deploy.runners import load_runner
from resnet_deploy.serve.client import Endpoint, ModelClient
from resnet_deploy.serve.loadtest import (
    LoadSettings,
    interleaved,
    local_images_per_s,
    model_inputs,
    run_load,
    server_predictions,
)
from resnet_deploy.serve.process import ServeProcess

RESULTS = Path(__file__).resolve().parent / "results"
GOAL_RATIO, GOAL_CONCURRENCY = 2.0, 16
GOAL_LOCAL_SHARE = 0.5  # served images/s at GOAL_CONCURRENCY over the local runner's at the batch formed there


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, help="FP32 ONNX to serve")
    parser.add_argument("--checkpoint", type=Path, help="checkpoint to export first (when --onnx is not given)")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--duration-s", type=float, default=10.0, help="measured seconds per load")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--soak-s", type=float, default=60.0, help="the long load's seconds")
    parser.add_argument("--soak-concurrency", type=int, default=8)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=100, help="serve's default")
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads per server instance")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if not args.onnx and not args.checkpoint:
        parser.error("give --onnx or --checkpoint")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    if GOAL_CONCURRENCY not in concurrencies:
        parser.error(f"--concurrency must include {GOAL_CONCURRENCY}: the goals are measured there")
    dataset = data.load_fashion_mnist(args.data_dir)
    protocols = args.protocols.split(",")
    with tempfile.TemporaryDirectory() as scratch:
        onnx = args.onnx or export(args.checkpoint, Path(scratch) / "model.onnx")
        common = ["--max-batch-size", str(args.max_batch_size), "--threads", str(args.threads)]
        batched = ServeProcess([onnx], *common, "--max-queue-delay-us", str(args.max_queue_delay_us),
                               workspace=Path(scratch) / "batched")
        plain = ServeProcess([onnx], *common, "--no-dynamic-batching", "--no-raw-model", workspace=Path(scratch) / "plain")
        report = {"onnx": str(onnx), "settings": {key: str(value) if isinstance(value, Path) else value
                                                  for key, value in vars(args).items()},
                  "fingerprint": fingerprint(), "load_average_before": os.getloadavg()}
        with batched, plain:
            model = onnx.name[: -len(onnx.suffix)]
            servers = {"dynamic batching": batched, "no batching": plain}
            report["runs"] = interleaved(
                servers, protocols, concurrencies, args.rounds,
                lambda server, protocol, concurrency: load(
                    server, model, dataset.test_images, protocol, LoadSettings(concurrency, args.duration_s)))
            report["soak"] = soak(batched, model, dataset.test_images, args)
            report["accuracy"] = accuracy(batched, model, onnx, dataset)
            report["summary"] = summarize(report["runs"], protocols, concurrencies)
            report["local"] = local_throughput(onnx, report["summary"], dataset.test_images, args)
        report["load_average_after"] = os.getloadavg()
    report["goals"] = goals(report)
    tag = onnx.name[: -len(onnx.suffix)]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out_dir / f"serve-{tag}.json", report)
    atomic_write_text(args.out_dir / f"serve-{tag}.md", markdown(report))
    plot_loadtest([{**row, "protocol": f"{row['protocol']}, {row['label']}"} for row in report["summary"]],
                  args.out_dir / f"serve-{tag}.png", f"{tag}: Triton (PyTriton) on ONNX Runtime CPU")
    print(markdown(report))
    return 0 if all(goal["met"] for goal in report["goals"]) else 1


def export(checkpoint: Path, path: Path) -> Path:
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.export import export_onnx

    model, meta = load_checkpoint(checkpoint)
    path = path.with_name(f"{meta['model']['name']}-w{meta['model']['width']:g}.onnx")
    export_onnx(model, path)
    return path


def load(server: ServeProcess, model: str, images: np.ndarray, protocol: str, settings: LoadSettings) -> dict:
    stats = Endpoint("http", server.http_url)
    endpoint = stats if protocol == "http" else Endpoint("grpc", server.grpc_url)
    with ModelClient(stats, model) as client:
        io = client.io()
    return run_load(endpoint, stats, io, model_inputs(io, images), settings)


def soak(server: ServeProcess, model: str, images: np.ndarray, args) -> dict:
    print(f"soak: {args.soak_s:g} s at concurrency {args.soak_concurrency} (gRPC)", file=sys.stderr)
    return load(server, model, images, "grpc", LoadSettings(args.soak_concurrency, args.soak_s))


def accuracy(server: ServeProcess, model: str, onnx: Path, dataset) -> dict:
    """The 10k test split through the FP32 and the raw-pixel model vs the local runner, batch 64."""
    with load_runner(onnx) as runner:
        local = collect_logits(runner, data.normalize(dataset.test_images), 64).argmax(axis=1)
    result = {"local_top1": float((local == dataset.test_labels).mean())}
    for name in (model, f"{model}-raw"):
        with ModelClient(Endpoint("http", server.http_url), name) as client:
            io = client.io()
        predictions = server_predictions(Endpoint("http", server.http_url), io, model_inputs(io, dataset.test_images), 64)
        result[name] = {"top1": float((predictions == dataset.test_labels).mean()),
                        "mismatches_vs_local": int((predictions != local).sum())}
    return result


def local_throughput(onnx: Path, summary: list[dict], images: np.ndarray, args) -> dict[str, dict]:
    """The local runner's images/s (the servers' threads) at each batch size the batcher formed at
    GOAL_CONCURRENCY (rounded), measured while the servers sit idle."""
    batches = sorted({max(1, round(row["avg_batch"])) for row in summary
                      if row["label"] == "dynamic batching" and row["concurrency"] == GOAL_CONCURRENCY})
    measured = local_images_per_s(onnx, batches, images, args.threads, args.duration_s)
    return {str(batch): {"images_per_s": value} for batch, value in measured.items()}


def summarize(runs: list[dict], protocols: list[str], concurrencies: list[int]) -> list[dict]:
    """Median over rounds of throughput and latency percentiles, per setting."""
    rows = []
    for label in dict.fromkeys(run["label"] for run in runs):
        for protocol in protocols:
            for concurrency in concurrencies:
                same = [r for r in runs if (r["label"], r["protocol"], r["concurrency"]) == (label, protocol, concurrency)]
                rows.append({"label": label, "protocol": protocol, "concurrency": concurrency,
                             "images_per_s": statistics.median(r["images_per_s"] for r in same),
                             "failed": sum(r["failed"] for r in same),
                             "avg_batch": statistics.median(r.get("server", {}).get("avg_batch", 0) for r in same),
                             "latency_ms": {p: statistics.median(r["latency_ms"][p] for r in same)
                                            for p in ("p50", "p95", "p99")}})
    return rows


def goals(report: dict) -> list[dict]:
    rows = {(r["label"], r["protocol"], r["concurrency"]): r for r in report["summary"]}
    checks = []
    for protocol in dict.fromkeys(r["protocol"] for r in report["summary"]):
        on, off = rows[("dynamic batching", protocol, GOAL_CONCURRENCY)], rows[("no batching", protocol, GOAL_CONCURRENCY)]
        ratio = on["images_per_s"] / off["images_per_s"]
        checks.append({"goal": f"{protocol}: dynamic batching >= {GOAL_RATIO:g}x throughput at concurrency "
                               f"{GOAL_CONCURRENCY}", "measured": round(ratio, 2), "met": ratio >= GOAL_RATIO})
    for protocol in dict.fromkeys(r["protocol"] for r in report["summary"]):
        served = rows[("dynamic batching", protocol, GOAL_CONCURRENCY)]
        batch = str(max(1, round(served["avg_batch"])))
        share = served["images_per_s"] / report["local"][batch]["images_per_s"]
        checks.append({"goal": f"{protocol}: served images/s at concurrency {GOAL_CONCURRENCY} >= "
                               f"{GOAL_LOCAL_SHARE:.0%} of the local runner's at the batch formed ({batch})",
                       "measured": f"{share:.0%} ({served['images_per_s']:.0f} vs "
                                   f"{report['local'][batch]['images_per_s']:.0f})",
                       "met": share >= GOAL_LOCAL_SHARE})
    soak_run = report["soak"]
    checks.append({"goal": f"{soak_run['duration_s']:.0f} s at concurrency {soak_run['concurrency']}: zero failed requests",
                   "measured": f"{soak_run['answered']} answered, {soak_run['failed']} failed",
                   "met": soak_run["failed"] == 0 and soak_run["answered"] > 0})
    for name, entry in report["accuracy"].items():
        if isinstance(entry, dict):
            checks.append({"goal": f"{name}: test-split predictions through the server identical to local",
                           "measured": f"{entry['mismatches_vs_local']} differ, top-1 {entry['top1'] * 100:.2f}%",
                           "met": entry["mismatches_vs_local"] == 0})
    return checks


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    lines = [f"Triton (PyTriton 0.7, tritonserver 2.51) serving `{Path(report['onnx']).name}` on ONNX Runtime "
             f"{fp['versions'].get('onnxruntime')} CPU, {fp['cpu']}, {fp['cores']} cores; load average "
             f"{report['load_average_before'][0]:.1f} before, {report['load_average_after'][0]:.1f} after. "
             f"Closed-loop clients, batch 1 per request, {report['settings']['duration_s']:g} s per load, median of "
             f"{report['settings']['rounds']} interleaved rounds.", "",
             "| batching | protocol | clients | images/s | p50 ms | p95 ms | p99 ms | server batch | failed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in report["summary"]:
        lat = row["latency_ms"]
        lines.append(f"| {row['label']} | {row['protocol']} | {row['concurrency']} | {row['images_per_s']:.0f} | "
                     f"{lat['p50']:.2f} | {lat['p95']:.2f} | {lat['p99']:.2f} | {row['avg_batch']:.1f} | {row['failed']} |")
    soak_run = report["soak"]
    lines += ["", f"Long load: {soak_run['duration_s']:.0f} s, gRPC, concurrency {soak_run['concurrency']}: "
                  f"{soak_run['sent']} sent, {soak_run['answered']} answered, {soak_run['failed']} failed, "
                  f"{soak_run['images_per_s']:.0f} images/s, p99 {soak_run['latency_ms']['p99']:.2f} ms.", "",
              "| goal | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'NO'} |" for g in report["goals"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
