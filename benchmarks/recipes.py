#!/usr/bin/env python3
"""The README's training recipes, run as a user runs them: wall time, seconds per epoch and test top-1.

Runs `resnet-deploy train <recipe's options> --seed S --out-dir <runs>/<recipe>-s<S>` for each seed
(or, with --from-run, only reads finished runs), then writes benchmarks/results/recipe-<name>.json and
.md with each run's figures and their mean. Times are the run's own (the checkpoint's `wall_seconds`
and per-epoch `seconds`): run it on an otherwise idle machine.

    python benchmarks/recipes.py default
    python benchmarks/recipes.py long --seeds 0,1
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from resnet_deploy.bench import fingerprint, write_results
from resnet_deploy.checkpoint import read_meta
from resnet_deploy.errors import CheckpointError

RESULTS = Path(__file__).resolve().parent / "results"
RECIPES = {
    "default": [],
    "long": ["--width", "0.5", "--epochs", "30", "--random-erasing", "0.25"],
}


def train(options: list[str], seed: int, out_dir: Path) -> int:
    """`resnet-deploy train` with `options` in a child process, as the README's commands run it; its exit code."""
    command = [sys.executable, "-m", "resnet_deploy", "train", *options, "--seed", str(seed), "--out-dir", str(out_dir)]
    print("$", shlex.join(["resnet-deploy", *command[3:]]), flush=True)
    return subprocess.run(command).returncode


def summary(run_dir: Path) -> dict:
    """A finished run's settings and figures, from its `best.json` sidecar (per-epoch times from `last.json`)."""
    meta = read_meta(run_dir / "best.pt")
    if meta is None:
        raise CheckpointError(f"{run_dir / 'best.json'}: not found (is {run_dir} a finished run?)")
    last = read_meta(run_dir / "last.pt")  # best.pt's history ends at the best epoch
    epochs = [h["seconds"] for h in (last or meta)["history"]]
    return {
        "run": str(run_dir),
        "seed": meta["training"]["seed"],
        "training": meta["training"],
        "epochs": len(epochs),
        "median_epoch_s": statistics.median(epochs),
        "wall_min": meta["wall_seconds"] / 60,
        "best_val": meta["accuracy"]["val"],
        "test_top1": meta["accuracy"]["test"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--seeds", default="0", help="comma-separated seeds, one run each")
    parser.add_argument("--runs-dir", type=Path, default=Path("runs"), help="where the runs' folders go")
    parser.add_argument("--train-options", default="", help="extra `train` options (quick checks), e.g. '--epochs 1'")
    parser.add_argument("--from-run", action="store_true", help="only summarize the runs already in --runs-dir")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    options = RECIPES[args.recipe] + shlex.split(args.train_options)
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        run_dir = args.runs_dir / f"{args.recipe}-s{seed}"
        code = 0 if args.from_run else train(options, seed, run_dir)
        if code:
            print(f"error: training into {run_dir} exited {code}", file=sys.stderr)
            return code
        runs.append(summary(run_dir))
    report = {
        "recipe": args.recipe,
        "command": shlex.join(["resnet-deploy", "train", *options]),
        "runs": runs,
        "mean_test_top1": statistics.mean(r["test_top1"] for r in runs),
        "mean_wall_min": statistics.mean(r["wall_min"] for r in runs),
        "fingerprint": fingerprint(),
    }
    write_results(args.out_dir, f"recipe-{args.recipe}", report, markdown(report))
    return 0


def markdown(report: dict) -> str:
    fp = report["fingerprint"]
    seeds = len(report["runs"])
    lines = [
        f"`{report['command']}` on {fp['cpu']} ({' '.join(fp['isa'])}), {fp['cores']} cores, "
        f"torch {fp['versions'].get('torch')}; {seeds} seed{'s' if seeds > 1 else ''}.",
        "",
        "| seed | epochs | s/epoch (median) | wall min | best val | test top-1 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["runs"]:
        lines.append(
            f"| {r['seed']} | {r['epochs']} | {r['median_epoch_s']:.1f} | {r['wall_min']:.1f} | "
            f"{100 * r['best_val']:.2f}% | {100 * r['test_top1']:.2f}% |"
        )
    if seeds > 1:
        lines.append(f"| mean | | | {report['mean_wall_min']:.1f} | | {100 * report['mean_test_top1']:.2f}% |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
