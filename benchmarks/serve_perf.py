#!/usr/bin/env python3
"""Where a served request's time goes: NVIDIA's perf_analyzer against `resnet-deploy serve` (Triton through
PyTriton, ONNX Runtime CPU, dynamic batching), plus a py-spy profile of the server's Python processes.

Per protocol and concurrency, perf_analyzer's CSV (`--verbose-csv`) gives inferences/s and the mean time
per request in each phase; the batch the batcher formed comes from Triton's statistics around the run.
The breakdown per request (us): client (send + receive), network and protocol (gRPC/HTTP, Triton's
front end), queue (the dynamic batcher), PyTriton hop (the Python backend's input/output handling plus
its round trip to the process running the model, i.e. compute infer less the runner's own time) and
runner (the local ONNX Runtime runner's time for the batch formed, measured here with the servers idle,
same threads). Served inferences/s at concurrency 16 are set against the local runner's images/s at that
batch (goal: >= 50%, the client on the same cores). Several `--variant`s are served side by side and
measured interleaved (A B A B ...), medians over rounds; perf_analyzer's own stability check is relaxed
(`--stability-percentage`) because of that. Needs the `serve` extra and tools/perf_analyzer.sh (installs
perf_analyzer; py-spy for `--profile-s` comes from PyPI into .cache/py-spy). Writes
benchmarks/results/serve-perf-<tag>.json and .md (and the profile's collapsed stacks, -profile.txt).

    python benchmarks/serve_perf.py --onnx artifacts/resnet18-w0.25.onnx
    python benchmarks/serve_perf.py --onnx M.onnx --variant "two instances|--instances 2" \\
        --variant "tensor store|PYTRITON_NO_TENSORSTORE="
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from resnet_deploy import data
from resnet_deploy.bench import fingerprint
from resnet_deploy.fileio import atomic_write_json, atomic_write_text
from resnet_deploy.serve.client import Endpoint, ModelClient
from resnet_deploy.serve.loadtest import interleaved, local_images_per_s, server_delta
from resnet_deploy.serve.process import ServeProcess

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PERF_ANALYZER = ROOT / "tools" / "perf_analyzer.sh"
PY_SPY_DIR = ROOT / ".cache" / "py-spy"
PY_SPY = "py-spy==0.4.3"
GOAL_CONCURRENCY, GOAL_LOCAL_SHARE = 16, 0.5
THREADS = 1  # ONNX Runtime threads of the served and of the local runner
BASE_OPTIONS = ("--max-batch-size", "64", "--threads", str(THREADS))  # serve_batching.py's; each variant adds its own
PHASES = ("client", "network", "queue", "pytriton_hop", "runner")
# perf_analyzer CSV column -> short key (times are mean microseconds per request)
COLUMNS = {"Inferences/Second": "infer_per_s", "Client Send": "client_send", "Client Recv": "client_recv",
           "Network+Server Send/Recv": "network", "Server Queue": "queue", "Server Compute Input": "compute_input",
           "Server Compute Infer": "compute_infer", "Server Compute Output": "compute_output",
           "Avg latency": "avg_latency", "p50 latency": "p50", "p99 latency": "p99"}
# py-spy frames (function names) that classify a sample; the first match from the innermost frame wins
PROFILE_KINDS = (("runner (ONNX Runtime)", ("Session.run",)),
                 ("tensor store RPC (PyTriton's shared-memory block manager)", ("BaseProxy._callmethod", "Server.serve_client")),
                 ("waiting (select, locks, queues)", ("EpollSelector.select", "Condition.wait", "PollPoller.poll")),
                 ("ZMQ and asyncio hand-offs", ("Socket.send", "_write_to_self", "_AsyncSocket", "call_soon_threadsafe")),
                 ("(de)serialization", ("b64", "serialize", "JSONDecoder", "loads", "dumps", "_wrap_response")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, required=True, help="FP32 ONNX to serve")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL|[ENV=VALUE ...] [SERVE OPTIONS]",
                        help="a server to compare (repeatable); default: one with serve's defaults")
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--protocols", default="grpc,http")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; medians are reported")
    parser.add_argument("--measurement-interval-ms", type=int, default=4000, help="perf_analyzer's window")
    parser.add_argument("--stability-percentage", type=int, default=100, help="perf_analyzer's -s")
    parser.add_argument("--local-s", type=float, default=5.0, help="timed seconds of the local runner per batch")
    parser.add_argument("--profile-s", type=float, default=6.0, help="py-spy seconds at concurrency 16, gRPC (0: none)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    variants = [parse_variant(text) for text in args.variant] or [parse_variant("serve defaults|")]
    images = data.load_fashion_mnist(args.data_dir).test_images
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    protocols = args.protocols.split(",")
    model = args.onnx.name[: -len(args.onnx.suffix)]
    report = {"onnx": str(args.onnx), "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
              "variants": variants, "fingerprint": fingerprint(), "load_average_before": os.getloadavg()}
    with tempfile.TemporaryDirectory() as scratch:
        input_data = write_input_data(images[:64], Path(scratch) / "input.json")
        servers = {v["label"]: ServeProcess([args.onnx], *BASE_OPTIONS, *v["options"], env=v["env"],
                                            workspace=Path(scratch) / f"ws{i}") for i, v in enumerate(variants)}
        try:
            for server in servers.values():
                server.start()
            report["runs"] = interleaved(
                servers, protocols, concurrencies, args.rounds,
                lambda server, protocol, concurrency: perf_run(server, model, input_data, protocol, concurrency, args))
            if args.profile_s > 0:
                first = next(iter(servers.values()))
                report["profile"] = profile(first, model, input_data, args, Path(scratch) / "profile.txt")
        finally:
            for server in servers.values():
                server.stop()
    report["load_average_after"] = os.getloadavg()
    report["summary"] = summarize(report["runs"])
    batches = [row["batch"] for row in report["summary"] if row["concurrency"] == GOAL_CONCURRENCY]
    local = local_images_per_s(args.onnx, batches or [1], images, THREADS, args.local_s)
    report["local"] = {str(batch): ips for batch, ips in local.items()}
    report["breakdown"] = [breakdown(row, report["local"]) for row in report["summary"]]
    report["goals"] = goals(report["breakdown"])
    write(report, model, args.out_dir)
    print(markdown(report))
    return 0 if all(goal["met"] for goal in report["goals"]) else 1


def parse_variant(text: str) -> dict:
    """`LABEL|[ENV=VALUE ...] [serve options]` -> label, environment and extra `serve` options."""
    label, _, rest = text.partition("|")
    tokens = shlex.split(rest)
    env = {}
    while tokens and re.fullmatch(r"[A-Z_][A-Z0-9_]*=.*", tokens[0]):
        key, _, value = tokens.pop(0).partition("=")
        env[key] = value
    return {"label": label.strip() or rest.strip() or "serve defaults", "env": env, "options": tokens}


def write_input_data(images_uint8: np.ndarray, path: Path) -> Path:
    """perf_analyzer's `--input-data` JSON: real normalized test images, one per request, used in turn
    (its `random` data holds NaN/Inf values, which the server refuses)."""
    batch = data.normalize(images_uint8)
    entries = [{"images": {"content": image.ravel().round(6).tolist(), "shape": list(image.shape)}} for image in batch]
    path.write_text(json.dumps({"data": entries}))
    return path


def perf_run(server: ServeProcess, model: str, input_data: Path, protocol: str, concurrency: int, args) -> dict:
    """One perf_analyzer run: its CSV row and the batcher's mean batch over the run (Triton's statistics)."""
    url = server.grpc_url if protocol == "grpc" else server.http_url
    command = ["bash", str(PERF_ANALYZER), "-m", model, "-u", url, "-i", protocol, "--input-data", str(input_data),
               "--concurrency-range", str(concurrency), "--measurement-interval", str(args.measurement_interval_ms),
               "--stability-percentage", str(args.stability_percentage), "--verbose-csv"]
    with tempfile.TemporaryDirectory() as scratch:
        report = Path(scratch) / "perf.csv"
        before = statistics_now(server, model)
        done = subprocess.run([*command, "-f", str(report)], capture_output=True, text=True, timeout=600)
        after = statistics_now(server, model)
        if done.returncode != 0 or not report.is_file():
            return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
        row = parse_csv(report.read_text())
    return {**row, "avg_batch": server_delta(before, after)["avg_batch"]}


def statistics_now(server: ServeProcess, model: str) -> dict:
    with ModelClient(Endpoint("http", server.http_url), model) as client:
        return client.statistics()


def parse_csv(text: str) -> dict[str, float]:
    """The first data row of perf_analyzer's `-f` CSV, by column (times in us)."""
    row = next(csv.DictReader(io.StringIO(text)))
    return {key: float(row[column]) for column, key in COLUMNS.items()}


def summarize(runs: list[dict]) -> list[dict]:
    """Median over rounds of every measured value, per variant, protocol and concurrency (failed runs left out)."""
    rows = []
    for key in dict.fromkeys((r["label"], r["protocol"], r["concurrency"]) for r in runs):
        same = [r for r in runs if (r["label"], r["protocol"], r["concurrency"]) == key and "error" not in r]
        if not same:
            continue
        row = {name: statistics.median(r[name] for r in same) for name in (*COLUMNS.values(), "avg_batch")}
        rows.append({"label": key[0], "protocol": key[1], "concurrency": key[2], "rounds": len(same),
                     "batch": max(1, round(row["avg_batch"])), **row})
    return rows


def breakdown(row: dict, local: dict[str, float]) -> dict:
    """Mean us per request by phase, and served vs local throughput. Compute infer covers one execution
    (the whole batch), so the runner's part is the local runner's time for a batch of the size formed."""
    local_ips = local.get(str(row["batch"]))
    runner_us = row["batch"] / local_ips * 1e6 if local_ips else None
    hop = row["compute_input"] + row["compute_output"] + row["compute_infer"] - (runner_us or 0.0)
    phases = {"client": row["client_send"] + row["client_recv"], "network": row["network"], "queue": row["queue"],
              "pytriton_hop": hop, "runner": runner_us}
    return {**{k: row[k] for k in ("label", "protocol", "concurrency", "infer_per_s", "avg_batch", "batch",
                                   "avg_latency", "p50", "p99")},
            "phases_us": phases, "local_images_per_s": local_ips,
            "local_share": row["infer_per_s"] / local_ips if local_ips else None}


def goals(rows: list[dict]) -> list[dict]:
    checks = []
    for row in rows:
        if row["concurrency"] != GOAL_CONCURRENCY or row["local_share"] is None:
            continue
        checks.append({"goal": f"{row['label']}, {row['protocol']}: served inferences/s at concurrency "
                               f"{GOAL_CONCURRENCY} >= {GOAL_LOCAL_SHARE:.0%} of the local runner's at the batch "
                               f"formed ({row['batch']})",
                       "measured": f"{row['local_share']:.0%} ({row['infer_per_s']:.0f} vs {row['local_images_per_s']:.0f})",
                       "met": row["local_share"] >= GOAL_LOCAL_SHARE})
    return checks


def profile(server: ServeProcess, model: str, input_data: Path, args, raw_path: Path) -> dict:
    """py-spy (all the server's processes) for `--profile-s` in the middle of a gRPC load at concurrency 16;
    samples per process and per kind of work, and the collapsed stacks."""
    py_spy = ensure_py_spy()
    if py_spy is None:
        return {"error": f"py-spy could not be installed into {PY_SPY_DIR}"}
    interval_ms = int(args.profile_s * 1000 + 4000)
    load = subprocess.Popen(["bash", str(PERF_ANALYZER), "-m", model, "-u", server.grpc_url, "-i", "grpc",
                             "--input-data", str(input_data), "--concurrency-range", str(GOAL_CONCURRENCY),
                             "--measurement-interval", str(interval_ms), "--stability-percentage", "100"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3)  # past perf_analyzer's start and first requests
        done = subprocess.run([str(py_spy), "record", "--pid", str(server.process.pid), "--subprocesses",
                               "--nonblocking", "--rate", "100", "--duration", str(int(args.profile_s)),
                               "--format", "raw", "--output", str(raw_path)], capture_output=True, text=True, timeout=120)
    finally:
        load.terminate()
        load.wait(30)
    if done.returncode != 0 or not raw_path.is_file():
        return {"error": (done.stderr or done.stdout).strip().splitlines()[-1:]}
    return {"seconds": args.profile_s, "collapsed": raw_path.read_text(), **classify_profile(raw_path.read_text())}


def ensure_py_spy() -> Path | None:
    binary = PY_SPY_DIR / "bin" / "py-spy"
    if not binary.is_file():
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(PY_SPY_DIR), PY_SPY],
                       check=False)
    return binary if binary.is_file() else None


def classify_profile(collapsed: str) -> dict:
    """Samples per process (by its command) and per kind of work (PROFILE_KINDS) from py-spy's raw output."""
    processes: Counter = Counter()
    kinds: Counter = Counter()
    for line in collapsed.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        process = [f for f in frames if f.startswith("process ")][-1:] or ["?"]
        processes[process_name(process[0])] += int(count)
        functions = [f.split(" (")[0] for f in reversed(frames) if not f.startswith("process ")]
        kinds[next((kind for function in functions for kind, names in PROFILE_KINDS
                    if any(name in function for name in names)), "other Python")] += int(count)
    return {"samples": sum(processes.values()), "by_process": dict(processes.most_common()),
            "by_kind": dict(kinds.most_common())}


def process_name(frame: str) -> str:
    if "triton_python_backend_stub" in frame:
        return "Python backend stub (Triton side of PyTriton)"
    if "multiprocessing" in frame:
        return "PyTriton tensor store (block manager)"
    if "resnet_deploy" in frame:
        return "serve (PyTriton proxy + model callable)"
    return frame[:60]


def write(report: dict, model: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    collapsed = report.get("profile", {}).pop("collapsed", None)
    if collapsed:
        atomic_write_text(out_dir / f"serve-perf-{model}-profile.txt", collapsed)
    atomic_write_json(out_dir / f"serve-perf-{model}.json", report)
    atomic_write_text(out_dir / f"serve-perf-{model}.md", markdown(report))


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    s = report["settings"]
    lines = [f"perf_analyzer (tritonclient 2.41.0) against `resnet-deploy serve {Path(report['onnx']).name}` "
             f"({' '.join(BASE_OPTIONS)}), ONNX Runtime {fp['versions'].get('onnxruntime')} CPU, {fp['cpu']}, "
             f"{fp['cores']} cores; load average {report['load_average_before'][0]:.1f} before, "
             f"{report['load_average_after'][0]:.1f} after. Batch 1 per request, {s['measurement_interval_ms']} ms "
             f"windows, median of {s['rounds']} interleaved rounds. Mean us per request; runner = the local runner's "
             "time for the batch formed (idle, same threads); PyTriton hop = compute input + infer + output - runner.",
             "", "| variant | protocol | clients | infer/s | batch | client | network | queue | PyTriton hop | "
             "runner | avg latency | p99 | local images/s | served/local |", "| --- " * 14 + "|"]
    for row in report["breakdown"]:
        p = row["phases_us"]
        local = f"{row['local_images_per_s']:.0f}" if row["local_images_per_s"] else "-"
        share = f"{row['local_share']:.0%}" if row["local_share"] is not None else "-"
        runner = f"{p['runner']:.0f}" if p["runner"] is not None else "-"
        lines.append(f"| {row['label']} | {row['protocol']} | {row['concurrency']} | {row['infer_per_s']:.0f} | "
                     f"{row['avg_batch']:.1f} | {p['client']:.0f} | {p['network']:.0f} | {p['queue']:.0f} | "
                     f"{p['pytriton_hop']:.0f} | {runner} | {row['avg_latency']:.0f} | {row['p99']:.0f} | {local} | {share} |")
    variants = [f"{v['label']}: {' '.join([*(f'{k}={val}' for k, val in v['env'].items()), *v['options']]) or '-'}"
                for v in report["variants"]]
    lines += ["", "Variants (over the options above): " + "; ".join(variants) + "."]
    prof = report.get("profile")
    if prof and "error" not in prof:
        share = lambda counts: ", ".join(f"{k} {n / prof['samples']:.0%}" for k, n in counts.items())  # noqa: E731
        lines += ["", f"py-spy, {prof['seconds']:g} s at concurrency {GOAL_CONCURRENCY} (gRPC) on "
                      f"'{report['variants'][0]['label']}', {prof['samples']} samples. By process: "
                      f"{share(prof['by_process'])}. By kind: {share(prof['by_kind'])}."]
    elif prof:
        lines += ["", f"py-spy profile failed: {prof['error']}"]
    failed = [r for r in report["runs"] if "error" in r]
    if failed:
        lines += ["", f"{len(failed)} perf_analyzer run(s) failed: " + "; ".join(
            f"{r['label']} {r['protocol']} c{r['concurrency']}: {r['error']}" for r in failed)]
    lines += ["", "| goal | measured | met |", "| --- | --- | --- |"]
    lines += [f"| {g['goal']} | {g['measured']} | {'yes' if g['met'] else 'NO'} |" for g in report["goals"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
