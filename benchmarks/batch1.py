#!/usr/bin/env python3
"""Batch-1 latency: which session settings cut it, and where the time goes, per runner.

1. One interleaved run (`resnet_deploy.bench.compare`, a settle pause before each block) at batch 1 of the
   project's ONNX Runtime runner on the FP32 graph and the CPU INT8 graph (`calibrate --cpu-int8`), each with
   its defaults, with one setting changed at a time (1 intra-op thread, no spin-waiting, an I/O binding
   reused across runs, graph optimization "basic" or "extended") and with 1 thread and I/O binding
   together; of ONNX Runtime on a one-node graph (its fixed cost per run); of PyTorch eager with the default
   threads and 1, contiguous and channels-last. p50 and p99 in us, and the speed-up over PyTorch eager
   (default threads, contiguous: what benchmarks/inference.py measures) as the ratio of the two medians.
2. A profile of the ONNX Runtime defaults and 1 thread with I/O binding, and of eager with the default
   threads and 1: ONNX Runtime's own profiler (the sum of node kernel times against its `model_run` and the
   wall time of `infer`), torch's profiler for eager (the sum of operator self times against the wall).
   p50 over the profiled runs of wall and kernel sum, overhead = wall - kernels, the p50 of as many
   unprofiled runs, and the biggest nodes and operator types.

Writes benchmarks/results/batch1-<tag>.json and .md (CPU, ISA flags and library versions included).

    python benchmarks/batch1.py --checkpoint checkpoints/resnet18-w0.25/best.pt \
        --onnx artifacts/resnet18-w0.25.onnx --cpu-int8 calibration/resnet18-w0.25.int8-cpu.onnx
    python benchmarks/batch1.py --width 0.25        # an untrained default-size model, graphs made here
"""

from __future__ import annotations

import argparse
import bisect
import copy
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from resnet_deploy import data
from resnet_deploy.bench import compare, fingerprint, write_results
from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.export import export_onnx
from resnet_deploy.models import create_model
from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu
from resnet_deploy.runners.base import BaseRunner
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.runners.torch_runner import TorchRunner

RESULTS = Path(__file__).resolve().parent / "results"
EAGER = "pytorch eager [default]"
REFERENCE = "onnxruntime fp32 [default]"
FLOOR = "onnxruntime 1-node graph"
# Settings of each ONNX Runtime variant, as OnnxRuntimeRunner keywords; "default" is the runner as
# benchmarks/inference.py makes it. Spinning only matters with worker threads, so it is turned off at 2.
ORT_VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "1 thread": {"intra_op_threads": 1},
    "2 threads, no spinning": {"intra_op_threads": 2, "allow_spinning": False},
    "I/O binding": {"io_binding": True},
    "graph opt basic": {"graph_optimization": "basic"},
    "graph opt extended": {"graph_optimization": "extended"},
    "1 thread, I/O binding": {"intra_op_threads": 1, "io_binding": True},
}
# PyTorch eager variants: (threads, 0 for the default; channels-last)
EAGER_VARIANTS = {
    "default": (0, False),
    "1 thread": (1, False),
    "channels-last": (0, True),
    "1 thread, channels-last": (1, True),
}
PROFILED_ORT = ("default", "1 thread, I/O binding")  # the variants profiled (and checked against the goals)
PROFILED_EAGER = ("default", "1 thread")
GOALS = {"onnxruntime fp32": 10.0, "onnxruntime int8 (CPU target)": 15.0}  # speed-up over EAGER at batch 1
SETTLE_S = 0.3  # idle before each block: the last runner's spinning workers otherwise slow the next one
TOP = 6  # biggest nodes and operator types listed per profile


class BoundRunner(OnnxRuntimeRunner):
    """ONNX Runtime through an I/O binding (one input): input and output OrtValues made on the first run of a
    shape and reused; the input is copied in with `update_inplace`, the outputs out (`numpy()` is a view)."""

    _bound: tuple | None = None  # (input shape, binding, input OrtValue, output OrtValues) while active

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        (images,) = feed.values()
        images = np.ascontiguousarray(images, dtype=np.float32)
        if self._bound is None or self._bound[0] != images.shape:
            self._bound = self._bind(images)
        _, binding, source, outputs = self._bound
        source.update_inplace(images)
        self._session.run_with_iobinding(binding)
        return {name: value.numpy().copy() for name, value in zip(self._output_names, outputs)}

    def _bind(self, images: np.ndarray) -> tuple:
        from onnxruntime import OrtValue

        first = super()._infer({self._input_names[0]: images})
        binding = self._session.io_binding()
        source = OrtValue.ortvalue_from_shape_and_type(images.shape, np.float32)
        binding.bind_ortvalue_input(self._input_names[0], source)
        outputs = [OrtValue.ortvalue_from_shape_and_type(first[n].shape, first[n].dtype) for n in self._output_names]
        for name, value in zip(self._output_names, outputs):
            binding.bind_ortvalue_output(name, value)
        return images.shape, binding, source, outputs

    def _deactivate(self) -> None:
        super()._deactivate()
        self._bound = None


def ort_runner(path: Path, label: str, variant: str, threads: int, **extra: Any) -> OnnxRuntimeRunner:
    """The project's ONNX Runtime runner with a variant's settings (a BoundRunner for I/O binding); `threads`
    unless the variant sets them (0: ONNX Runtime's default)."""
    settings = {"intra_op_threads": threads or None, **ORT_VARIANTS[variant]}
    kind = BoundRunner if settings.pop("io_binding", False) else OnnxRuntimeRunner
    return kind(path, ["CPUExecutionProvider"], name=label, **settings, **extra)


class EagerVariant(TorchRunner):
    """PyTorch eager with its own thread count (set on the first run of each block: torch's is global) and
    memory format (channels-last converts the input on every run, as a deployment would)."""

    def __init__(self, model: torch.nn.Module, threads: int, channels_last: bool, name: str):
        if channels_last:
            model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        super().__init__(model, name=name)
        self.threads, self.channels_last = threads, channels_last

    def _infer(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        (batch,) = feed.values()
        images = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.inference_mode():
            return {"logits": self._model(images).numpy()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: an untrained model)")
    parser.add_argument("--width", type=float, default=0.25, help="width of the untrained model")
    parser.add_argument("--onnx", type=Path, help="FP32 ONNX of the same model (default: exported here)")
    parser.add_argument("--cpu-int8", type=Path, help="its CPU INT8 graph (default: made here, 512 train images)")
    parser.add_argument("--duration-s", type=float, default=2.0, help="timed seconds per variant")
    parser.add_argument("--profile-runs", type=int, default=300, help="profiled runs (and as many unprofiled)")
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="threads of the variants that keep the default (0: each library's own); 1 on a busy machine",
    )
    parser.add_argument("--settle-s", type=float, default=SETTLE_S, help="idle before each variant's block")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    for option in ("checkpoint", "onnx", "cpu_int8"):
        path = getattr(args, option)
        if path and not path.is_file():
            parser.error(f"--{option.replace('_', '-')} {path}: file not found")
    if args.duration_s <= 0 or args.profile_runs < 1 or args.settle_s < 0:
        parser.error("--duration-s must be > 0, --profile-runs >= 1 and --settle-s >= 0")

    model, tag = _model(args)
    images = data.normalize(data.load_fashion_mnist(args.data_dir).test_images[:1])
    torch_threads = torch.get_num_threads()
    default_threads = args.threads or torch_threads
    with tempfile.TemporaryDirectory() as scratch:
        graphs = _graphs(model, args, Path(scratch))
        floor = floor_graph(Path(scratch) / "floor.onnx")
        runners = make_runners(model, {**graphs, FLOOR: floor}, default_threads, args.threads)
        for runner in runners.values():
            runner.activate()
        try:
            measured = compare(
                runners,
                images,
                [1],
                reference=REFERENCE,
                min_duration_s=args.duration_s,
                progress=lambda message: print(message, file=sys.stderr),
                settle_s=args.settle_s,
            )
        finally:
            for runner in runners.values():
                runner.deactivate()
        profiles = profile_all(model, graphs, (default_threads, args.threads), images, args.profile_runs, Path(scratch))
        torch.set_num_threads(torch_threads)
    report = {
        "model": tag,
        "batch": 1,
        "fingerprint": fingerprint(),
        "threads": args.threads or "default",
        "eager_default_threads": default_threads,
        "settle_s": args.settle_s,
        "artifacts": {
            "fp32": str(args.onnx) if args.onnx else "made by this script",
            "cpu_int8": str(args.cpu_int8) if args.cpu_int8 else "made by this script",
        },
        "variants": variant_rows(measured["results"]["1"]),
        "profiles": profiles,
    }
    report["goals"] = goals(report["variants"])
    write_results(args.out_dir, f"batch1-{tag}", report, markdown(report))
    return 0


def _model(args) -> tuple[torch.nn.Module, str]:
    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        return model.eval(), f"{meta['model']['name']}-w{meta['model']['width']:g}"
    torch.manual_seed(0)
    return create_model("resnet18", width=args.width).eval(), f"resnet18-w{args.width:g}-untrained"


def _graphs(model, args, scratch: Path) -> dict[str, Path]:
    """The FP32 and CPU INT8 graphs by runner label: the given ones, the rest made from `model` in `scratch`."""
    fp32 = args.onnx or scratch / "fp32.onnx"
    if not args.onnx:
        export_onnx(model, fp32)
    int8 = args.cpu_int8 or scratch / "cpu_int8.onnx"
    if not args.cpu_int8:
        quantize_for_cpu(fp32, int8, data.calibration_images(512, data_dir=args.data_dir))
    return {"onnxruntime fp32": fp32, "onnxruntime int8 (CPU target)": int8}


def floor_graph(path: Path) -> Path:
    """A graph of one Flatten node on the model's input: ONNX Runtime's fixed cost per run (the Python call,
    feeds, outputs, the executor) with next to no kernel time."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["flat"])],
        "floor",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info("flat", TensorProto.FLOAT, ["batch", 784])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path


def make_runners(
    model: torch.nn.Module, graphs: dict[str, Path], eager_threads: int, ort_threads: int
) -> dict[str, BaseRunner]:
    """Every variant by label "<runner> [<variant>]": ONNX Runtime on each graph, on the one-node graph (the
    profiled variants only), then PyTorch eager."""
    runners: dict[str, BaseRunner] = {}
    for kind, path in graphs.items():
        for variant in ORT_VARIANTS if kind != FLOOR else PROFILED_ORT:
            label = f"{kind} [{variant}]"
            runners[label] = ort_runner(path, label, variant, ort_threads)
    for variant, (threads, channels_last) in EAGER_VARIANTS.items():
        label = f"pytorch eager [{variant}]"
        runners[label] = EagerVariant(model, threads or eager_threads, channels_last, label)
    return runners


def variant_rows(results: dict[str, dict]) -> list[dict]:
    """p50/p99 in us per variant, the ratio of PyTorch eager's median to its median, and compare's
    speed-up over ONNX Runtime FP32 with its defaults (median over rounds of the per-round ratio)."""
    eager = results[EAGER]["latency_ms"]["median"]
    return [
        {
            "runner": label,
            "p50_us": 1000 * entry["latency_ms"]["median"],
            "p99_us": 1000 * entry["latency_ms"]["p99"],
            "iterations": entry["iterations"],
            "vs_eager": eager / entry["latency_ms"]["median"],
            "vs_ort_fp32_default": entry["speedup_vs_reference"],
        }
        for label, entry in results.items()
    ]


def goals(rows: list[dict]) -> list[dict]:
    """Each goal (speed-up over PyTorch eager at batch 1) for each profiled ONNX Runtime variant."""
    by_label = {row["runner"]: row for row in rows}
    return [
        {
            "runner": label,
            "wanted": f">= {wanted:g}x",
            "measured": f"{by_label[label]['vs_eager']:.2f}x",
            "met": by_label[label]["vs_eager"] >= wanted,
        }
        for kind, wanted in GOALS.items()
        for label in (f"{kind} [{variant}]" for variant in PROFILED_ORT)
    ]


def profile_all(
    model: torch.nn.Module,
    graphs: dict[str, Path],
    threads: tuple[int, int],
    images: np.ndarray,
    runs: int,
    scratch: Path,
) -> dict[str, dict]:
    """The profile of each variant in PROFILED_ORT and PROFILED_EAGER, one after the other; `threads`:
    eager's and ONNX Runtime's for the variants that keep the default."""
    eager_threads, ort_threads = threads
    profiles = {}
    for kind, path in graphs.items():
        for variant in PROFILED_ORT:
            label = f"{kind} [{variant}]"
            profiles[label] = profile_ort(
                ort_runner(path, label, variant, ort_threads, profile_prefix=scratch / "ort"), images, runs
            )
    for variant in PROFILED_EAGER:
        threads, channels_last = EAGER_VARIANTS[variant]
        label = f"pytorch eager [{variant}]"
        eager = EagerVariant(model, threads or eager_threads, channels_last, label)
        profiles[label] = profile_eager(eager, images, runs)
    return profiles


def _timed(runner: BaseRunner, feed: dict[str, np.ndarray], runs: int) -> list[float]:
    """Wall time in us of each of `runs` calls of `infer`."""
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        runner.infer(feed)
        times.append(1e6 * (time.perf_counter() - started))
    return times


def profile_ort(runner: OnnxRuntimeRunner, images: np.ndarray, runs: int) -> dict[str, Any]:
    """ONNX Runtime's profiler on `runs` batch-1 runs after as many warm-up runs (ONNX Runtime profiles
    from session creation: only the last `runs` runs of the trace count), then as many unprofiled runs."""
    with runner:
        feed = {"input": images[:1]}
        _timed(runner, feed, runs)
        profiled = _timed(runner, feed, runs)
        trace = json.loads(runner.end_profiling().read_text())
        wall = _timed(runner, feed, runs)
    model_runs, kernels, nodes, ops = split_trace(trace, runs)
    return summary(profiled, kernels, wall, nodes, ops, session_run=model_runs)


def split_trace(trace: list[dict], runs: int) -> tuple[list[float], list[float], dict, dict]:
    """From an ONNX Runtime trace, for its last `runs` runs: each run's `model_run` time and node kernel
    sum in us, and the mean us per run of each node and each operator type."""
    every_run = sorted((event["ts"], event["ts"] + event["dur"]) for event in trace if event.get("name") == "model_run")
    windows = every_run[-runs:]
    starts = [start for start, _ in windows]
    kernels = [0.0] * len(windows)
    nodes: dict[str, float] = defaultdict(float)
    ops: dict[str, float] = defaultdict(float)
    for event in trace:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        index = bisect.bisect_right(starts, event["ts"]) - 1
        if index < 0 or event["ts"] > windows[index][1]:
            continue
        kernels[index] += event["dur"]
        nodes[event["name"].removesuffix("_kernel_time")] += event["dur"] / len(windows)
        ops[event["args"]["op_name"]] += event["dur"] / len(windows)
    return [end - start for start, end in windows], kernels, nodes, ops


def profile_eager(runner: EagerVariant, images: np.ndarray, runs: int) -> dict[str, Any]:
    """torch's profiler on `runs` batch-1 runs after as many warm-up runs, each run in a record_function
    range: its operators' self times summed; then as many unprofiled runs."""
    from torch.profiler import ProfilerActivity, profile, record_function

    with runner:
        feed = {"input": images[:1]}
        _timed(runner, feed, runs)
        profiled = []
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(runs):
                started = time.perf_counter()
                with record_function("batch1_run"):
                    runner.infer(feed)
                profiled.append(1e6 * (time.perf_counter() - started))
        wall = _timed(runner, feed, runs)
    kernels, ops = split_events(prof.events(), "batch1_run")
    return summary(profiled, kernels, wall, {}, ops)


def split_events(events, marker: str) -> tuple[list[float], dict[str, float]]:
    """Each run's (marked by a `marker` range) sum of operator self times in us, and each operator's mean
    self time per run."""
    windows = sorted((e.time_range.start, e.time_range.end) for e in events if e.name == marker)
    starts = [start for start, _ in windows]
    kernels = [0.0] * len(windows)
    ops: dict[str, float] = defaultdict(float)
    for event in events:
        if event.name == marker:
            continue
        index = bisect.bisect_right(starts, event.time_range.start) - 1
        if index < 0 or event.time_range.start > windows[index][1]:
            continue
        kernels[index] += event.self_cpu_time_total
        ops[event.name] += event.self_cpu_time_total / len(windows)
    return kernels, ops


def summary(
    profiled: list[float], kernels: list[float], unprofiled: list[float], nodes: dict, ops: dict, **series: list[float]
) -> dict[str, Any]:
    """p50 of the profiled runs' wall time and kernel sum, overhead = their difference, the p50 of the same
    number of unprofiled runs (the profiler's own cost shows against it) and of each other profiled series,
    and the biggest nodes and operator types (mean us per run)."""
    entry: dict[str, Any] = {"runs": len(kernels), "wall_p50_us": float(np.median(profiled))}
    entry["kernels_p50_us"] = float(np.median(kernels))
    entry["overhead_us"] = entry["wall_p50_us"] - entry["kernels_p50_us"]
    entry["unprofiled_wall_p50_us"] = float(np.median(unprofiled))
    entry.update({f"{name}_p50_us": float(np.median(values)) for name, values in series.items()})
    entry["top_nodes_us"] = _top(nodes)
    entry["top_ops_us"] = _top(ops)
    return entry


def _top(times: dict[str, float]) -> dict[str, float]:
    return {name: round(us, 2) for name, us in sorted(times.items(), key=lambda item: -item[1])[:TOP]}


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    lines = [
        f"Model {report['model']}, batch 1, 1x28x28; {fp['cpu']} ({' '.join(fp['isa'])}), {fp['cores']} "
        f"cores; onnxruntime {fp['versions'].get('onnxruntime')}, torch {fp['versions'].get('torch')}; threads of "
        f"the defaults: {report['threads']} (eager {report['eager_default_threads']}); one interleaved run, "
        f"{report['settle_s']:g} s settle.",
        "",
        "| runner [setting] | p50 us | p99 us | x eager (medians) | x ORT FP32 default |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['runner']} | {r['p50_us']:.0f} | {r['p99_us']:.0f} | {r['vs_eager']:.2f}x | "
        f"{r['vs_ort_fp32_default']:.2f}x |"
        for r in report["variants"]
    ]
    lines += [
        "",
        "Profiles, p50 over the profiled runs: wall of `infer`, kernels (the sum of ONNX Runtime's node kernel "
        "times, or of torch's operator self times), overhead = wall - kernels, of it outside ONNX Runtime's "
        "`model_run` (Python, feeds, outputs); unprofiled: p50 of as many runs without the profiler.",
        "",
        "| runner [setting] | wall us | kernels us | overhead us | outside run() us | unprofiled us | biggest op types (us) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, p in report["profiles"].items():
        run = p.get("session_run_p50_us")
        outside = "-" if run is None else f"{p['wall_p50_us'] - run:.0f}"
        ops = ", ".join(f"{name} {us:.1f}" for name, us in p["top_ops_us"].items())
        lines.append(
            f"| {label} | {p['wall_p50_us']:.0f} | {p['kernels_p50_us']:.0f} | {p['overhead_us']:.0f} | {outside} | "
            f"{p['unprofiled_wall_p50_us']:.0f} | {ops} |"
        )
    lines += ["", "| goal (same run) | wanted | measured | met |", "| --- | --- | --- | --- |"]
    lines += [
        f"| {g['runner']} vs {EAGER} | {g['wanted']} | {g['measured']} | {'yes' if g['met'] else 'no'} |"
        for g in report["goals"]
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
