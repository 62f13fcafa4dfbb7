#!/usr/bin/env python3
"""Where a training epoch's time goes, and which options shorten it, interleaved in one run.

Times one training step (forward, backward, SGD) on a batch of real train images for: memory format
per width (contiguous vs channels-last), batch size, thread count and `torch.compile` (inductor) of
the default model; plus what augmentation and the per-epoch validation cost. Each row's epoch time is
55k images at its median step; ratios are to the default recipe's settings measured in the same run.
The GMAC/s column divides the epoch's multiply-accumulates (3x forward: forward, input and weight
gradients) by the time, to say how close the step is to the CPU's arithmetic peak.

`--isa avx2` runs the same in a child process limited to AVX2 (`ONEDNN_MAX_CPU_ISA=AVX2`,
`ATEN_CPU_CAPABILITY=avx2`): an estimate, on this machine, of a CPU without AVX-512.
Writes benchmarks/results/training[-avx2].json and .md.

    python benchmarks/training.py
    python benchmarks/training.py --isa avx2
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from resnet_deploy import data
from resnet_deploy.bench import fingerprint, write_results
from resnet_deploy.models import count_macs, create_model
from resnet_deploy.train import augment, memory_format, predict, to_input, torch_threads
from resnet_deploy.train_config import TrainConfig

RESULTS = Path(__file__).resolve().parent / "results"
ISA_ENV = {"avx2": {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}}
DEFAULT = TrainConfig()
EPOCH_IMAGES = data.TRAIN_SIZE


def make_step(width: float, channels_last: bool, compiled: bool) -> Callable[[torch.Tensor, torch.Tensor], None]:
    """One SGD step of the default recipe's model, loss and optimizer at `width`."""
    model = create_model(DEFAULT.model, **{**DEFAULT.model_kwargs(), "width": width})
    layout = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)  # type: ignore[call-overload]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=DEFAULT.momentum, nesterov=DEFAULT.nesterov)

    def step(inputs: torch.Tensor, targets: torch.Tensor) -> None:
        loss = F.cross_entropy(model(inputs), targets, label_smoothing=DEFAULT.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return torch.compile(step) if compiled else step


def configurations(widths: list[float], compiled: bool, threads: int) -> list[dict]:
    """The rows: layout per width, then batch size, threads and compile at the default width."""
    rows = [
        {"width": w, "channels_last": cl, "batch": DEFAULT.batch_size, "threads": threads, "compiled": False}
        for w in widths
        for cl in (False, True)
    ]
    base = {
        "width": DEFAULT.width,
        "channels_last": True,
        "batch": DEFAULT.batch_size,
        "threads": threads,
        "compiled": False,
    }
    rows += [{**base, "batch": b} for b in (64, 256)]
    rows += [{**base, "threads": t} for t in range(1, threads)]
    if compiled:
        rows.append({**base, "compiled": True})
    unique = []
    for row in rows:
        if row not in unique:
            unique.append(row)
    return unique


def measure(rows: list[dict], images: torch.Tensor, labels: torch.Tensor, rounds: int, steps: int) -> None:
    """Median step seconds of every row, interleaved round by round; adds `median_step_s` and `macs`."""
    prepared: list[tuple[dict, Callable, tuple[torch.Tensor, torch.Tensor], list[float]]] = []
    for row in rows:
        step = make_step(row["width"], row["channels_last"], row["compiled"])
        layout = torch.channels_last if row["channels_last"] else torch.contiguous_format
        batch = (to_input(images[: row["batch"]], layout), labels[: row["batch"]])
        with torch_threads(row["threads"]):
            step(*batch)  # warm-up (and compilation)
            step(*batch)
        prepared.append((row, step, batch, []))
    for _ in range(rounds):
        for row, step, batch, samples in prepared:
            with torch_threads(row["threads"]):
                for _ in range(steps):
                    started = time.perf_counter()
                    step(*batch)
                    samples.append(time.perf_counter() - started)
    for row, _, _, samples in prepared:
        row["median_step_s"] = float(np.median(samples))
        row["macs"] = count_macs(create_model(DEFAULT.model, **{**DEFAULT.model_kwargs(), "width": row["width"]}))
        row["epoch_s"] = EPOCH_IMAGES * row["median_step_s"] / row["batch"]
        row["gmac_per_s"] = 3 * row["macs"] * EPOCH_IMAGES / row["epoch_s"] / 1e9


def overheads(images: torch.Tensor, dataset: data.FashionMNIST, threads: int) -> dict[str, float]:
    """Seconds per epoch of the default augmentation (55k images) and of validating on the 5k split."""
    generator = torch.Generator().manual_seed(0)
    batch = images[: DEFAULT.batch_size]
    with torch_threads(threads):
        started = time.perf_counter()
        for _ in range(20):
            augment(to_input(batch, torch.channels_last), DEFAULT, generator)
        augment_s = (time.perf_counter() - started) / 20 * EPOCH_IMAGES / DEFAULT.batch_size
        model = create_model(DEFAULT.model, **DEFAULT.model_kwargs())
        model = model.to(memory_format=memory_format(model))  # type: ignore[call-overload]
        started = time.perf_counter()
        predict(model, dataset.val_images, DEFAULT.eval_batch_size)
        validate_s = time.perf_counter() - started
    return {"augment_s_per_epoch": augment_s, "validate_s_per_epoch": validate_s}


def conv_profile(images: torch.Tensor, labels: torch.Tensor, threads: int, steps: int = 3) -> list[dict]:
    """The default step's convolutions per shape (torch profiler): forward and backward ms per step, GMAC/s.

    Backward is counted as two forward products (input and weight gradients), the stem's as one (its input
    needs no gradient)."""
    from torch.profiler import ProfilerActivity, profile

    step = make_step(DEFAULT.width, True, False)
    batch = (to_input(images[: DEFAULT.batch_size], torch.channels_last), labels[: DEFAULT.batch_size])
    with torch_threads(threads):
        step(*batch)
        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            for _ in range(steps):
                step(*batch)
    forward, backward = {}, {}
    for event in prof.key_averages(group_by_input_shape=True):
        shapes = event.input_shapes
        if event.key == "aten::mkldnn_convolution":
            forward[(tuple(shapes[0]), tuple(shapes[1]))] = event.self_cpu_time_total
        elif event.key == "aten::convolution_backward":
            backward[(tuple(shapes[1]), tuple(shapes[2]))] = (event.self_cpu_time_total, tuple(shapes[0]), event.count)
    groups: dict[str, dict] = {}
    for key, (backward_us, grad_output, count) in backward.items():
        (batch_size, channels, height, _), (out_channels, _, kh, kw) = key
        macs = batch_size * out_channels * grad_output[2] * grad_output[3] * channels * kh * kw * count // steps
        label = f"{kh}x{kw} {channels}->{out_channels}, {height}->{grad_output[2]} px"
        group = groups.setdefault(
            label, {"layers": label, "convs": 0, "forward_ms": 0.0, "backward_ms": 0.0, "macs": 0}
        )
        group["convs"] += count // steps
        group["forward_ms"] += forward.get(key, 0.0) / 1000 / steps
        group["backward_ms"] += backward_us / 1000 / steps
        group["macs"] += macs * (2 if channels == 1 else 3)
    for group in groups.values():
        group["gmac_per_s"] = group["macs"] / (group["forward_ms"] + group["backward_ms"]) / 1e6
    return sorted(groups.values(), key=lambda g: -(g["forward_ms"] + g["backward_ms"]))


def conv_peak(threads: int, channels: int = 256, repeats: int = 10) -> float:
    """GMAC/s of a large 3x3 convolution (oneDNN, channels-last, batch 64 at 14x14): the roofline's ceiling,
    what the library that runs training reaches on this CPU when channels are many (torch.mm is no ceiling:
    it runs on MKL, which on AMD CPUs ran several times slower than oneDNN's convolutions)."""
    inputs = torch.randn(64, channels, 14, 14).contiguous(memory_format=torch.channels_last)
    weight = torch.randn(channels, channels, 3, 3).contiguous(memory_format=torch.channels_last)
    samples = []
    with torch_threads(threads), torch.no_grad():
        F.conv2d(inputs, weight, padding=1)
        for _ in range(repeats):
            started = time.perf_counter()
            F.conv2d(inputs, weight, padding=1)
            samples.append(time.perf_counter() - started)
    return 64 * 14 * 14 * channels * channels * 9 / float(np.median(samples)) / 1e9


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--widths", default="0.25,0.5")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration per round")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="threads of the default rows")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row (about a minute)")
    parser.add_argument("--isa", choices=sorted(ISA_ENV), help="rerun in a child limited to this instruction set")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.isa and not os.environ.get("RESNET_DEPLOY_BENCH_ISA"):
        env = {**os.environ, **ISA_ENV[args.isa], "RESNET_DEPLOY_BENCH_ISA": args.isa}
        child = argv if argv is not None else sys.argv[1:]
        return subprocess.call([sys.executable, str(Path(__file__).resolve()), *child], env=env)
    torch.manual_seed(0)
    dataset = data.load_fashion_mnist(args.data_dir)
    images = torch.from_numpy(np.ascontiguousarray(dataset.train_images[:256]))
    labels = torch.from_numpy(dataset.train_labels[:256]).long()
    rows = configurations([float(w) for w in args.widths.split(",")], not args.no_compile, args.threads)
    measure(rows, images, labels, args.rounds, args.steps)
    report = {
        "rows": rows,
        "overheads": overheads(images, dataset, args.threads),
        "conv_peak_gmac_per_s": conv_peak(args.threads),
        "conv_profile": conv_profile(images, labels, args.threads),
        "default": {"width": DEFAULT.width, "batch": DEFAULT.batch_size, "epochs": DEFAULT.epochs},
        "isa_limit": args.isa,
        "fingerprint": fingerprint(),
    }
    suffix = f"-{args.isa}" if args.isa else ""
    write_results(args.out_dir, f"training{suffix}", report, markdown(report, args.threads))
    return 0


def markdown(report: dict, threads: int) -> str:
    """The rows with their ratio to the default settings, then the per-epoch overheads and the recipe's estimate."""
    rows, fp, peak = report["rows"], report["fingerprint"], report["conv_peak_gmac_per_s"]
    base = next(
        r
        for r in rows
        if r["width"] == DEFAULT.width
        and r["channels_last"]
        and r["batch"] == DEFAULT.batch_size
        and r["threads"] == threads
        and not r["compiled"]
    )
    isa = f", limited to {report['isa_limit'].upper()}" if report["isa_limit"] else ""
    lines = [
        f"Training step (forward, backward, SGD) on {fp['cpu']} ({' '.join(fp['isa'])}){isa}, "
        f"{fp['cores']} cores, torch {fp['versions'].get('torch')}; one interleaved run.",
        "",
        "| width | layout | batch | threads | compiled | images/s | epoch (55k) s | vs default | GMAC/s | of conv peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['width']:g} | {'channels-last' if r['channels_last'] else 'contiguous'} | {r['batch']} | "
            f"{r['threads']} | {'yes' if r['compiled'] else 'no'} | {r['batch'] / r['median_step_s']:.0f} | "
            f"{r['epoch_s']:.1f} | {base['epoch_s'] / r['epoch_s']:.2f}x | {r['gmac_per_s']:.0f} | {r['gmac_per_s'] / peak:.0%} |"
        )
    over = report["overheads"]
    epoch = base["epoch_s"] + over["augment_s_per_epoch"] + over["validate_s_per_epoch"]
    lines += [
        "",
        f"Per epoch: augmentation {over['augment_s_per_epoch']:.2f} s, validation {over['validate_s_per_epoch']:.2f} s; "
        f"the default recipe ({DEFAULT.epochs} epochs) estimated at {DEFAULT.epochs * epoch / 60:.1f} min. "
        f"A large 3x3 convolution (256 channels) runs at {peak:.0f} GMAC/s; at that rate the default recipe's "
        f"{DEFAULT.epochs} epochs of convolutions would take {DEFAULT.epochs * 3 * base['macs'] * EPOCH_IMAGES / peak / 1e9 / 60:.1f} min.",
    ]
    lines += [
        "",
        "Convolutions of one default step by shape (torch profiler, forward + backward):",
        "",
        "| convolutions | count | forward ms | backward ms | GMAC/s | of conv peak |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for g in report["conv_profile"]:
        lines.append(
            f"| {g['layers']} | {g['convs']} | {g['forward_ms']:.1f} | {g['backward_ms']:.1f} | "
            f"{g['gmac_per_s']:.0f} | {g['gmac_per_s'] / peak:.0%} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
