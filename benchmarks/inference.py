#!/usr/bin/env python3
"""README performance table, inference part: PyTorch eager vs ONNX Runtime FP32 vs INT8 (TensorRT-style
Q/DQ and the CPU-target graph), and OpenVINO on the same graphs where it is installed (the `openvino`
extra), at batch 1 and 256, interleaved in one run so the ratios hold on a noisy machine. With a
checkpoint, also top-1 of every runner on the 10k test split. Writes
benchmarks/results/inference-<tag>.json and .md (CPU, ISA flags and library versions included).

ONNX files not given are made from the model (export, max calibration on 512 train images).

    python benchmarks/inference.py --checkpoint checkpoints/resnet18-w0.25/best.pt \
        --onnx artifacts/resnet18-w0.25.onnx --qdq calibration/resnet18-w0.25.int8-entropy.qdq.onnx \
        --cpu-int8 calibration/resnet18-w0.25.int8-cpu.onnx
    python benchmarks/inference.py --width 1.0          # untrained full-width small-stem ResNet-18
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from importlib import metadata
from pathlib import Path

import torch

from resnet_deploy import data
from resnet_deploy.bench import compare, fingerprint, write_results
from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.export import export_onnx
from resnet_deploy.models import create_model
from resnet_deploy.parity import collect_logits
from resnet_deploy.quantize.calibrate import calibrate_onnx
from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu
from resnet_deploy.quantize.qdq import insert_qdq
from resnet_deploy.runners.base import BaseRunner
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner
from resnet_deploy.runners.torch_runner import TorchRunner

RESULTS = Path(__file__).resolve().parent / "results"
REFERENCE = "onnxruntime fp32"
EAGER = "pytorch eager fp32"
GRAPHS = {"fp32": "fp32", "int8 (TensorRT-style Q/DQ)": "qdq", "int8 (CPU target)": "cpu_int8"}
# (runner, batch, baseline runner, wanted speedup): the project's goals, checked in the same run; goals
# of a runner that is not installed are left out.
GOALS = [
    (REFERENCE, "1", EAGER, 10.0),
    ("onnxruntime int8 (CPU target)", "1", EAGER, 15.0),
    ("onnxruntime int8 (CPU target)", "256", REFERENCE, 3.0),
    ("openvino int8 (CPU target)", "256", REFERENCE, 3.0),
]
# Idle before each runner's block when runners use several threads: the last runner's spin-waiting workers
# otherwise slow the next one (PyTorch eager at batch 1: 2.0-2.1 ms beside ONNX Runtime, 1.4-1.8 ms with it).
SETTLE_S = 0.3
MAX_INT8_DROP_PP = 0.2  # top-1 of an INT8 runner may be at most this much below ONNX Runtime FP32's


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
    parser.add_argument(
        "--threads",
        type=int,
        default=0,
        help="CPU threads for every runner (0: each library's default); use 1 on a busy machine",
    )
    parser.add_argument(
        "--accuracy-images",
        type=int,
        default=10000,
        help="test images for each runner's top-1 (with --checkpoint; 0: no accuracy)",
    )
    args = parser.parse_args(argv)

    if args.checkpoint:
        model, meta = load_checkpoint(args.checkpoint)
        tag = f"{meta['model']['name']}-w{meta['model']['width']:g}"
    else:
        torch.manual_seed(0)
        model, tag = create_model("resnet18", width=args.width).eval(), f"resnet18-w{args.width:g}-untrained"
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    test = data.load_fashion_mnist(args.data_dir)
    images = data.normalize(test.test_images[: max(batch_sizes)])
    settle_s = 0 if args.threads == 1 else SETTLE_S
    with tempfile.TemporaryDirectory() as scratch:
        onnx_files = artifacts(model, args, Path(scratch))
        runners = make_runners(model, onnx_files, args.threads or None)
        for runner in runners.values():
            runner.activate()
        report = compare(
            runners,
            images,
            batch_sizes,
            reference=REFERENCE,
            min_duration_s=args.duration_s,
            progress=lambda message: print(message, file=sys.stderr),
            settle_s=settle_s,
        )
        if args.checkpoint and args.accuracy_images:
            count = args.accuracy_images
            report["accuracy"] = accuracy(runners, data.normalize(test.test_images[:count]), test.test_labels[:count])
        for runner in runners.values():
            runner.deactivate()
    report.pop("times_ms")
    report["fingerprint"], report["model"] = fingerprint(), tag
    report["openvino"] = _version("openvino")
    report["artifacts"] = {
        label: str(getattr(args, key)) if getattr(args, key) else "made by this script"
        for label, key in zip(onnx_files, ("onnx", "qdq", "cpu_int8"))
    }
    report["goals"], report["threads"] = goals(report), args.threads or "default"
    report["settle_s"] = settle_s
    write_results(args.out_dir, f"inference-{tag}", report, markdown(report))
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
    return {"fp32": fp32, "int8 (TensorRT-style Q/DQ)": qdq, "int8 (CPU target)": cpu_int8}


def make_runners(model, onnx_files: dict[str, Path], threads: int | None) -> dict[str, BaseRunner]:
    """PyTorch eager, ONNX Runtime on each graph and, where installed, OpenVINO on each graph."""
    runners: dict[str, BaseRunner] = {EAGER: TorchRunner(model, threads=threads)}
    runners.update(
        {
            f"onnxruntime {kind}": OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"], intra_op_threads=threads)
            for kind, path in onnx_files.items()
        }
    )
    if importlib.util.find_spec("openvino"):
        from resnet_deploy.runners.openvino import OpenVinoRunner

        runners.update({f"openvino {kind}": OpenVinoRunner(path, threads=threads) for kind, path in onnx_files.items()})
    return runners


def accuracy(runners: dict[str, BaseRunner], images, labels) -> dict[str, dict]:
    """Top-1 of every runner on the same test images, and its drop in points below ONNX Runtime FP32."""
    top1 = {
        label: float((collect_logits(runner, images).argmax(1) == labels).mean()) for label, runner in runners.items()
    }
    return {
        label: {"top1": value, "drop_pp": round(100 * (top1[REFERENCE] - value), 3)} for label, value in top1.items()
    }


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def goals(report: dict) -> list[dict]:
    """Each speed goal's ratio of medians from the same interleaved run and, with accuracy, each INT8
    runner's top-1 drop against ONNX Runtime FP32."""
    measured = []
    for label, bs, versus, wanted in GOALS:
        entries = report["results"].get(bs, {})
        if label in entries and versus in entries:
            speedup = entries[versus]["latency_ms"]["median"] / entries[label]["latency_ms"]["median"]
            measured.append(
                {
                    "runner": label,
                    "batch": int(bs),
                    "versus": versus,
                    "wanted": f">= {wanted:g}x",
                    "measured": f"{speedup:.2f}x",
                    "met": speedup >= wanted,
                }
            )
    for label, entry in report.get("accuracy", {}).items():
        if "int8" in label:
            measured.append(
                {
                    "runner": label,
                    "batch": None,
                    "versus": f"{REFERENCE} top-1",
                    "wanted": f"<= {MAX_INT8_DROP_PP:g} pp drop",
                    "measured": f"{entry['drop_pp']:.2f} pp",
                    "met": entry["drop_pp"] <= MAX_INT8_DROP_PP,
                }
            )
    return measured


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    lines = [
        f"Model {report['model']}, 1x28x28 inputs; {fp['cpu']} ({' '.join(fp['isa'])}), "
        f"{fp['cores']} cores; onnxruntime {fp['versions'].get('onnxruntime')}, torch "
        f"{fp['versions'].get('torch')}, openvino {report['openvino'] or 'not installed'}; "
        f"threads: {report['threads']}.",
        "",
        "| runner | batch | p50 us | p99 us | images/s | vs ORT FP32 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for bs, entries in report["results"].items():
        for label, entry in entries.items():
            lat = entry["latency_ms"]
            lines.append(
                f"| {label} | {bs} | {1000 * lat['median']:.0f} | {1000 * lat['p99']:.0f} | "
                f"{entry['throughput_ips']:.0f} | {entry['speedup_vs_reference']:.2f}x |"
            )
    if "accuracy" in report:
        lines += ["", "| runner | test top-1 | drop vs ORT FP32 |", "| --- | --- | --- |"]
        lines += [
            f"| {label} | {100 * entry['top1']:.2f}% | {entry['drop_pp']:.2f} pp |"
            for label, entry in report["accuracy"].items()
        ]
    lines += ["", "| goal (same run) | wanted | measured | met |", "| --- | --- | --- | --- |"]
    for goal in report["goals"]:
        where = f", batch {goal['batch']}" if goal["batch"] else ""
        lines.append(
            f"| {goal['runner']} vs {goal['versus']}{where} | {goal['wanted']} | {goal['measured']} | "
            f"{'yes' if goal['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
