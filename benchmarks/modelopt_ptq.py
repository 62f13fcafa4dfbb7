#!/usr/bin/env python3
"""NVIDIA ModelOpt's ONNX PTQ next to resnet-deploy's own calibration, on the same FP32 ONNX and the
same train-split images: validation top-1 of each Q/DQ graph and the time each took, in one run.
Writes benchmarks/results/modelopt-<stem>.json and .md.

ModelOpt is optional and not a dependency; install it with one onnxruntime left (README, "NVIDIA
ModelOpt"). Its calibration runs on ONNX Runtime's CPU execution provider here.

    python benchmarks/modelopt_ptq.py artifacts/resnet18-w0.25.onnx --methods entropy,max
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from resnet_deploy import data
from resnet_deploy.bench import fingerprint
from resnet_deploy.fileio import atomic_write_json, atomic_write_text
from resnet_deploy.quantize.int8 import make_int8_artifacts, validation_top1

RESULTS = Path(__file__).resolve().parent / "results"


def modelopt_qdq(onnx_path: Path, images, method: str, out_path: Path) -> None:
    """ModelOpt INT8 PTQ on the CPU EP, high-precision parts kept FP32 (its default is FP16)."""
    from modelopt.onnx.quantization import quantize

    quantize(onnx_path=str(onnx_path), quantize_mode="int8", calibration_data=images,
             calibration_method=method, calibration_eps=["cpu"], high_precision_dtype="fp32",
             output_path=str(out_path))


def run(onnx_path: Path, methods: list[str], count: int, data_dir: str | None) -> list[dict]:
    """Our rows come from `make_int8_artifacts` (what `resnet-deploy calibrate` runs). Seconds are what
    one method alone costs: ours the statistics pass plus its range search, ModelOpt's the whole call."""
    with tempfile.TemporaryDirectory() as tmp:
        ours = make_int8_artifacts(onnx_path, tmp, methods=methods, count=count, data_dir=data_dir)
        timings = ours["timings"]
        rows = [{"tool": "none (FP32)", "method": "-", "seconds": None, "val_top1": ours["methods"]["fp32"]["val_top1"]}]
        rows += [{"tool": "resnet-deploy", "method": method, "val_top1": ours["methods"][method]["val_top1"],
                  "seconds": timings["statistics_seconds"] + timings[f"{method}_seconds"]}
                 for method in methods]
        images = data.calibration_images(count, data_dir=data_dir)
        split = data.load_fashion_mnist(data_dir)
        for method in methods:
            out = Path(tmp) / f"modelopt-{method}.onnx"
            started = time.perf_counter()
            modelopt_qdq(onnx_path, images, method, out)
            rows.append({"tool": "modelopt", "method": method, "seconds": time.perf_counter() - started,
                         "val_top1": validation_top1(out, data.normalize(split.val_images), split.val_labels)})
    return rows


def table(rows: list[dict], header: str) -> str:
    lines = [header, "", "| tool | method | val top-1 | seconds |", "| --- | --- | --- | --- |"]
    for r in rows:
        seconds = "-" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"| {r['tool']} | {r['method']} | {100 * r['val_top1']:.2f}% | {seconds} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx", type=Path, help="FP32 ONNX (resnet-deploy export)")
    parser.add_argument("--methods", default="entropy,max", help="calibration methods both tools know")
    parser.add_argument("--count", type=int, default=512, help="train-split calibration images")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    try:
        import modelopt
    except ImportError:
        print("modelopt is not installed; see the README section 'NVIDIA ModelOpt'", file=sys.stderr)
        return 2
    rows = run(args.onnx, args.methods.split(","), args.count, args.data_dir)
    machine = fingerprint()
    header = (f"{args.onnx.name}, {args.count} train-split calibration images, 5k validation images; "
              f"modelopt {modelopt.__version__}; {machine['cpu']}, {machine['cores']} cores.")
    text = table(rows, header)
    print(text)
    stem = f"modelopt-{args.onnx.stem}"
    atomic_write_json(args.out_dir / f"{stem}.json", {"machine": machine, "onnx": str(args.onnx), "rows": rows})
    atomic_write_text(args.out_dir / f"{stem}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
