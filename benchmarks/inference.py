#!/usr/bin/env python3
"""README performance table, inference part: PyTorch eager vs ONNX Runtime FP32 vs INT8 (TensorRT-style
Q/DQ and the CPU-target graph) at batch 1 and 256, interleaved in one run so the ratios hold on a
noisy machine. Writes benchmarks/results/inference-<tag>.json and .md.

    python benchmarks/inference.py --checkpoint checkpoints/resnet18-w0.25/best.pt
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="trained checkpoint (default: an untrained model)")
    parser.add_argument("--width", type=float, default=1.0, help="width of the untrained model")
    parser.add_argument("--batch-sizes", default="1,256")
    parser.add_argument("--duration-s", type=float, default=3.0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        tag = f"{meta['model']['name']}-w{meta['model']['width']:g}"
    else:
        torch.manual_seed(0)
        model, tag = create_model("resnet18", width=args.width).eval(), f"resnet18-w{args.width:g}-untrained"
    images = data.normalize(data.load_fashion_mnist(args.data_dir).test_images[:256])
    calibration = data.calibration_images(512, data_dir=args.data_dir)
    with tempfile.TemporaryDirectory() as scratch:
        fp32 = Path(scratch) / "fp32.onnx"
        export_onnx(model, fp32)
        insert_qdq(fp32, calibrate_onnx(fp32, calibration, "max"), Path(scratch) / "qdq.onnx")
        quantize_for_cpu(fp32, Path(scratch) / "cpu_int8.onnx", calibration)
        runners = {"pytorch eager fp32": TorchRunner(model),
                   "onnxruntime fp32": OnnxRuntimeRunner(fp32, providers=["CPUExecutionProvider"]),
                   "onnxruntime int8 (TensorRT-style Q/DQ)": OnnxRuntimeRunner(Path(scratch) / "qdq.onnx",
                                                                              providers=["CPUExecutionProvider"]),
                   "onnxruntime int8 (CPU target)": OnnxRuntimeRunner(Path(scratch) / "cpu_int8.onnx",
                                                                     providers=["CPUExecutionProvider"])}
        for runner in runners.values():
            runner.activate()
        batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        report = compare(runners, images, batch_sizes, reference="onnxruntime fp32", min_duration_s=args.duration_s,
                         progress=lambda message: print(message, file=sys.stderr))
        for runner in runners.values():
            runner.deactivate()
    report.pop("times_ms")
    report.pop("order")
    report["fingerprint"], report["model"] = fingerprint(), tag
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / f"inference-{tag}.json", report)
    table = markdown(report)
    atomic_write_text(RESULTS / f"inference-{tag}.md", table)
    print(table)
    return 0


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    lines = [f"Model {report['model']}, 1x28x28 inputs; {fp['cpu']}, {fp['cores']} cores; "
             f"onnxruntime {fp['versions'].get('onnxruntime')}, torch {fp['versions'].get('torch')}.", "",
             "| runner | batch | median ms | p99 ms | images/s | vs ORT FP32 |", "| --- | --- | --- | --- | --- | --- |"]
    for bs, entries in report["results"].items():
        for label, entry in entries.items():
            lat = entry["latency_ms"]
            lines.append(f"| {label} | {bs} | {lat['median']:.3f} | {lat['p99']:.3f} | {entry['throughput_ips']:.0f} | "
                         f"{entry['speedup_vs_reference']:.2f}x |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
