#!/usr/bin/env python3
"""README performance table, training part: images/s of a training step (forward, backward, SGD) for
model widths, channels-last vs contiguous, interleaved in one run, on a batch of real train images;
writes benchmarks/results/training.json and training.md.

    python benchmarks/training.py --widths 0.25,0.5,1.0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_deploy import data
from resnet_deploy.bench import fingerprint
from resnet_deploy.fileio import atomic_write_json, atomic_write_text
from resnet_deploy.models import count_macs, create_model

RESULTS = Path(__file__).resolve().parent / "results"


def step_seconds(model, optimizer, inputs, targets) -> float:
    started = time.perf_counter()
    loss = F.cross_entropy(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--widths", default="0.25,0.5,1.0")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration per round")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default); use 1 on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    train = data.load_fashion_mnist(args.data_dir)
    images = torch.from_numpy(data.normalize(train.train_images[:args.batch_size]))
    labels = torch.from_numpy(train.train_labels[:args.batch_size])
    configs = {}
    for width in (float(w) for w in args.widths.split(",")):
        for channels_last in (False, True):
            model = create_model("resnet18", width=width)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            configs[(width, channels_last)] = (model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                               images.contiguous(memory_format=fmt), labels, count_macs(model))
    times = {key: [] for key in configs}
    for key, (model, optimizer, inputs, targets, _) in configs.items():
        step_seconds(model, optimizer, inputs, targets)
    for _ in range(args.rounds):
        for key, (model, optimizer, inputs, targets, _) in configs.items():
            times[key] += [step_seconds(model, optimizer, inputs, targets) for _ in range(args.steps)]
    rows = []
    for (width, channels_last), samples in times.items():
        median = float(np.median(samples))
        rows.append({"width": width, "channels_last": channels_last, "macs_m": configs[(width, channels_last)][4] / 1e6,
                     "median_step_s": median, "images_per_s": args.batch_size / median,
                     "epoch_55k_s": 55000 / (args.batch_size / median)})
    machine = fingerprint()
    table = markdown(rows, args.batch_size, machine)
    print(table)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out_dir / "training.json", {"rows": rows, "batch_size": args.batch_size, "fingerprint": machine})
    atomic_write_text(args.out_dir / "training.md", table)
    return 0


def markdown(rows: list[dict], batch_size: int, machine: dict) -> str:
    """Table with the channels-last gain, a ratio of medians from the same interleaved run."""
    base = {r["width"]: r["images_per_s"] for r in rows if not r["channels_last"]}
    lines = [f"Training step (forward, backward, SGD), batch {batch_size}; {machine['cpu']}, {machine['cores']} cores, "
             f"torch {machine['versions'].get('torch')}, {torch.get_num_threads()} threads.", "",
             "| resnet18 width | MACs (M) | layout | images/s | epoch (55k) s | channels-last gain |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        gain = f"{r['images_per_s'] / base[r['width']]:.2f}x" if r["channels_last"] else ""
        lines.append(f"| {r['width']:g} | {r['macs_m']:.1f} | {'channels-last' if r['channels_last'] else 'contiguous'} | "
                     f"{r['images_per_s']:.0f} | {r['epoch_55k_s']:.0f} | {gain} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
