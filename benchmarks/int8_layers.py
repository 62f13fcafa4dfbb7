#!/usr/bin/env python3
"""Where the CPU INT8 graph wins and loses against FP32, per layer type: ONNX Runtime's own profiler on the
FP32 graph and the CPU-target INT8 graph (`calibrate --cpu-int8`), same images, one thread, one run.

Convolutions are grouped by stage: the stem, then every convolution with the same output size (a stage's
strided 3x3, its 1x1 shortcut and its 3x3s). The optimized graphs name nodes differently and hide or pad
their weights (prepacked INT8 weights, FP32 channels padded to the NCHWc block), so nodes are matched by
output size and MACs come from the ONNX graph itself; every other operator is grouped by type. Reports ms
per run, GMAC/s and the FP32/INT8 time ratio per group. Writes benchmarks/results/int8-layers-<tag>.json and .md.

    python benchmarks/int8_layers.py --width 0.25                       # an untrained default-size model
    python benchmarks/int8_layers.py --onnx artifacts/resnet18-w0.25.onnx --cpu-int8 calibration/resnet18-w0.25.int8-cpu.onnx
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

from resnet_deploy import data
from resnet_deploy.bench import fingerprint, write_results

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, help="FP32 ONNX (default: an untrained resnet18 exported here)")
    parser.add_argument("--cpu-int8", type=Path, help="its CPU INT8 graph (default: made here, 512 train images)")
    parser.add_argument("--width", type=float, default=0.25, help="width of the untrained model")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--runs", type=int, default=5, help="profiled runs per graph (after one warm-up)")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)

    images = data.normalize(data.load_fashion_mnist(args.data_dir).test_images[: args.batch])
    with tempfile.TemporaryDirectory() as scratch:
        fp32, int8, tag = graphs(args, Path(scratch))
        convs = conv_groups(fp32, args.batch)
        profiles = {
            name: profile(path, images, args.runs, Path(scratch) / name)
            for name, path in (("fp32", fp32), ("int8", int8))
        }
    report = {
        "model": tag,
        "batch": args.batch,
        "threads": 1,
        "runs": args.runs,
        "fingerprint": fingerprint(),
        "rows": compare(profiles["fp32"], profiles["int8"], convs),
        "total_ms": {name: round(sum(profiles[name].values()), 3) for name in profiles},
    }
    write_results(args.out_dir, f"int8-layers-{tag}", report, markdown(report))
    return 0


def graphs(args, scratch: Path) -> tuple[Path, Path, str]:
    """The FP32 and CPU INT8 graphs (given, or made from an untrained model) and a tag for the results."""
    fp32, int8 = args.onnx, args.cpu_int8
    tag = fp32.stem if fp32 else f"resnet18-w{args.width:g}-untrained"
    if not fp32:
        import torch

        from resnet_deploy.export import export_onnx
        from resnet_deploy.models import create_model

        torch.manual_seed(0)
        fp32 = scratch / "fp32.onnx"
        export_onnx(create_model("resnet18", width=args.width).eval(), fp32)
    if not int8:
        from resnet_deploy.quantize.cpu_int8 import quantize_for_cpu

        int8 = scratch / "int8-cpu.onnx"
        quantize_for_cpu(fp32, int8, data.calibration_images(512, data_dir=args.data_dir))
    return fp32, int8, tag


def conv_groups(fp32: Path, batch: int) -> dict[str, dict]:
    """MACs per batch, node count and kernels/channels of each convolution group, from the FP32 ONNX graph."""
    import onnx
    from onnx import numpy_helper

    model = onnx.shape_inference.infer_shapes(onnx.load(str(fp32)))
    weights = {t.name: numpy_helper.to_array(t).shape for t in model.graph.initializer}
    sides = {
        v.name: v.type.tensor_type.shape.dim[2].dim_value
        for v in model.graph.value_info
        if len(v.type.tensor_type.shape.dim) == 4
    }
    groups: dict[str, dict] = defaultdict(lambda: {"macs": 0, "nodes": 0, "layers": []})
    for node in model.graph.node:
        if node.op_type != "Conv":
            continue
        cout, cin, kh, kw = weights[node.input[1]]
        side = sides[node.output[0]]
        group = groups[group_name(cin, side)]
        group["macs"] += batch * side * side * cout * cin * kh * kw
        group["nodes"] += 1
        group["layers"].append(f"{kh}x{kw} {cin}->{cout}")
    return {key: {**g, "layers": ", ".join(dict.fromkeys(g["layers"]))} for key, g in groups.items()}


def group_name(in_channels: int, side: int) -> str:
    return "stem conv" if in_channels == 1 else f"convs /{side}x{side}"


def profile(path: Path, images: np.ndarray, runs: int, prefix: Path) -> dict[str, float]:
    """ms per run of each layer group, from ONNX Runtime's profiler (one thread)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level, options.intra_op_num_threads = 3, 1
    options.enable_profiling, options.profile_file_prefix = True, str(prefix)
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: images}
    session.run(None, feed)
    for _ in range(runs):
        session.run(None, feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    times: dict[str, float] = defaultdict(float)
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            times[layer_group(event["args"])] += event["dur"] / 1000 / (runs + 1)
    return dict(times)


def layer_group(event_args: dict) -> str:
    """A convolution's group (by its input channels and output size, in NCHW, NCHWc or NHWC), else the op type."""
    op = event_args["op_name"]
    if op not in ("Conv", "QLinearConv"):
        return op
    x = list(event_args["input_type_shape"][0].values())[0]
    out = list(event_args["output_type_shape"][0].values())[0]
    nhwc = op == "QLinearConv" and out[1] == out[2] and x[1] == x[2]
    return group_name(x[-1] if nhwc else x[1], out[1] if nhwc else out[2])


def compare(fp32: dict[str, float], int8: dict[str, float], convs: dict[str, dict]) -> list[dict]:
    """One row per group in either graph, slowest first: ms, GMAC/s and the FP32/INT8 time ratio."""
    rows = []
    for key in sorted(set(fp32) | set(int8), key=lambda k: -(fp32.get(k, 0) + int8.get(k, 0))):
        a, b, conv = fp32.get(key), int8.get(key), convs.get(key, {})
        macs = conv.get("macs", 0)
        rows.append(
            {
                "group": key,
                "layers": conv.get("layers", ""),
                "nodes": conv.get("nodes"),
                "fp32_ms": round(a, 3) if a else None,
                "int8_ms": round(b, 3) if b else None,
                "fp32_gmacs": round(macs / a / 1e6, 1) if a and macs else None,
                "int8_gmacs": round(macs / b / 1e6, 1) if b and macs else None,
                "speedup": round(a / b, 2) if a and b else None,
            }
        )
    return rows


def markdown(report: dict) -> str:
    fp, total = report["fingerprint"], report["total_ms"]
    lines = [
        f"{report['model']}, batch {report['batch']}, 1 thread; {fp['cpu']}; onnxruntime "
        f"{fp['versions'].get('onnxruntime')}. Total {total['fp32']:.1f} ms FP32, {total['int8']:.1f} ms INT8 "
        f"({total['fp32'] / total['int8']:.2f}x).",
        "",
        "| layer group | layers | FP32 ms | INT8 ms | FP32 GMAC/s | INT8 GMAC/s | INT8 speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {r['group']} | {r['layers']} | {_cell(r['fp32_ms'])} | {_cell(r['int8_ms'])} | {_cell(r['fp32_gmacs'])} | "
        f"{_cell(r['int8_gmacs'])} | {_cell(r['speedup'], 'x')} |"
        for r in report["rows"]
    ]
    return "\n".join(lines) + "\n"


def _cell(value, suffix: str = "") -> str:
    return "-" if value is None else f"{value}{suffix}"


if __name__ == "__main__":
    raise SystemExit(main())
