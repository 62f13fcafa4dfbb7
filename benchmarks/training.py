#!/usr/bin/env python3
"""README performance table, training part: images/s of a training step (forward, backward, SGD) for
model widths, channels-last vs contiguous, interleaved in one run; writes benchmarks/results/training.json.

    python benchmarks/training.py --widths 0.25,0.5,1.0
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from resnet_deploy.bench import fingerprint
from resnet_deploy.fileio import atomic_write_json
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
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    configs = {}
    for width in (float(w) for w in args.widths.split(",")):
        for channels_last in (False, True):
            model = create_model("resnet18", width=width)
            fmt = torch.channels_last if channels_last else torch.contiguous_format
            model = model.to(memory_format=fmt)
            inputs = torch.randn(args.batch_size, 1, 28, 28).contiguous(memory_format=fmt)
            configs[(width, channels_last)] = (model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                                               inputs, torch.randint(0, 10, (args.batch_size,)), count_macs(model))
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
    base = {r["width"]: r["images_per_s"] for r in rows if not r["channels_last"]}
    print("| resnet18 width | MACs (M) | layout | images/s | epoch (55k) s | channels-last gain |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        gain = f"{r['images_per_s'] / base[r['width']]:.2f}x" if r["channels_last"] else ""
        print(f"| {r['width']:g} | {r['macs_m']:.1f} | {'channels-last' if r['channels_last'] else 'contiguous'} | "
              f"{r['images_per_s']:.0f} | {r['epoch_55k_s']:.0f} | {gain} |")
    RESULTS.mkdir(exist_ok=True)
    atomic_write_json(RESULTS / "training.json", {"rows": rows, "batch_size": args.batch_size,
                                                  "fingerprint": fingerprint()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
