#!/usr/bin/env python3
"""README performance table, inference part: PyTorch eager vs ONNX Runtime FP32 vs INT8 (TensorRT-style
Q/DQ and the CPU-target graph) at batch 1 and 256, interleaved in one run so the ratios hold on a
noisy machine. Writes benchmarks/results/inference-<tag>.json and .md.

ONNX files not given are made from the model (export, max calibration on 512 train images).

    python benchmarks/inference.py --checkpoint checkpoints/resnet18-w0.25/best.pt \
        --onnx artifacts/resnet18-w0.25.onnx --qdq calibration/resnet18-w0.25.int8-entropy.qdq.onnx \
        --cpu-int8 calibration/resnet18-w0.25.int8-cpu.onnx
    python benchmarks/inference.py --width 1.0          # untrained full-width small-stem ResNet-18
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from resnet_deploy import data
from resnet_deploy.bench import compare, fingerprint
from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.export import export_onnx
from resnet_deploy.fileio import atomic_write_json, atomic_write_text
from resnet_deploy.models import create_model
from resnet_deploy.quantize.calibrate import calibrate_onnx
from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu
from resnet_deploy.quantize.qdq import insert_qdq
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.runners.torch_runner import TorchRunner

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "onnxruntime fp32"
# (runner, batch, baseline runner, wanted speedup): the project's goals, checked in the same run.
GOALS = [(REFERENCE, "1", "pytorch eager fp32", 10.0), ("onnxruntime int8 (CPU target)", "256", REFERENCE, 3.0)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: an untrained model)")
    parser.add_argument("--width", type=float, default=1.0, help="width of the untrained model")
    parser.add_argument("--onnx", type=Path, help="FP32 ONNX of the same model")
    parser.add_argument("--qdq", type=Path, help="TensorRT-style INT8 Q/DQ ONNX")
    parser.add_argument("--cpu-int8", type=Path, help="CPU-target INT8 ONNX (calibrate --cpu-int8)")
    parser.add_argument("--batch-sizes", default="1,256")
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads for every runner (0: each library's default); use 1 on a busy machine")
    args = parser.parse_args(argv)

    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        tag = f"{meta['model']['name']}-w{meta['model']['width']:g}"
    else:
        torch.manual_seed(0)
        model, tag = create_model("resnet18", width=args.width).eval(), f"resnet18-w{args.width:g}-untrained"
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    images = data.normalize(data.load_fashion_mnist(args.data_dir).test_images[:max(batch_sizes)])
    with tempfile.TemporaryDirectory() as scratch:
        onnx_files = artifacts(model, args, Path(scratch))
        threads = args.threads or None
        runners = {"pytorch eager fp32": TorchRunner(model, threads=threads)}
        runners.update({label: OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"], intra_op_threads=threads)
                        for label, path in onnx_files.items()})
        for runner in runners.values():
            runner.activate()
        report = compare(runners, images, batch_sizes, reference=REFERENCE, min_duration_s=args.duration_s,
                         progress=lambda message: print(message, file=sys.stderr))
        for runner in runners.values():
            runner.deactivate()
    report.pop("times_ms")
    report["fingerprint"], report["model"] = fingerprint(), tag
    report["artifacts"] = {label: str(getattr(args, key)) if getattr(args, key) else "made by this script"
                           for label, key in zip(onnx_files, ("onnx", "qdq", "cpu_int8"))}
    report["goals"], report["threads"] = goals(report), args.threads or "default"
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out_dir / f"inference-{tag}.json", report)
    table = markdown(report)
    atomic_write_text(args.out_dir / f"inference-{tag}.md", table)
    print(table)
    return 0


def artifacts(model, args, scratch: Path) -> dict[str, Path]:
    """The three ONNX files by runner label: the given ones, the rest made from `model` in `scratch`."""
    fp32 = args.onnx or scratch / "fp32.onnx"
    if not args.onnx:
        export_onnx(model, fp32)
    qdq, cpu_int8 = args.qdq or scratch / "qdq.onnx", args.cpu_int8 or scratch / "cpu_int8.onnx"
    if not (args.qdq and args.cpu_int8):
        calibration = data.calibration_images(512, data_dir=args.data_dir)
        if not args.qdq:
            insert_qdq(fp32, calibrate_onnx(fp32, calibration, "max"), qdq)
        if not args.cpu_int8:
            quantize_for_cpu(fp32, cpu_int8, calibration)
    return {REFERENCE: fp32, "onnxruntime int8 (TensorRT-style Q/DQ)": qdq, "onnxruntime int8 (CPU target)": cpu_int8}


def goals(report: dict) -> list[dict]:
    """Each goal's speedup, from medians of the same interleaved run."""
    measured = []
    for label, bs, versus, wanted in GOALS:
        entries = report["results"].get(bs)
        if entries:
            speedup = entries[versus]["latency_ms"]["median"] / entries[label]["latency_ms"]["median"]
            measured.append({"runner": label, "batch": int(bs), "versus": versus, "wanted": wanted,
                             "speedup": speedup, "met": speedup >= wanted})
    return measured


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    lines = [f"Model {report['model']}, 1x28x28 inputs; {fp['cpu']}, {fp['cores']} cores; "
             f"onnxruntime {fp['versions'].get('onnxruntime')}, torch {fp['versions'].get('torch')}; "
             f"threads: {report['threads']}.", "",
             "| runner | batch | median ms | p99 ms | images/s | vs ORT FP32 |", "| --- | --- | --- | --- | --- | --- |"]
    for bs, entries in report["results"].items():
        for label, entry in entries.items():
            lat = entry["latency_ms"]
            lines.append(f"| {label} | {bs} | {lat['median']:.3f} | {lat['p99']:.3f} | {entry['throughput_ips']:.0f} | "
                         f"{entry['speedup_vs_reference']:.2f}x |")
    lines += ["", "| goal (median latency, same run) | wanted | measured | met |", "| --- | --- | --- | --- |"]
    lines += [f"| {g['runner']} vs {g['versus']}, batch {g['batch']} | >= {g['wanted']:g}x | {g['speedup']:.2f}x | "
              f"{'yes' if g['met'] else 'no'} |" for g in report["goals"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
