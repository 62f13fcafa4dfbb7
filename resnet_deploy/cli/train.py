"""`resnet-deploy train` and `evaluate`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from resnet_deploy.cli.common import console, data_dir_option
from resnet_deploy.model_options import MODEL_NAMES, SHORTCUTS, STEMS

DEFAULT_CHECKPOINT_DIR = Path("checkpoints")


def default_run_dir(tag: str) -> Path:
    return DEFAULT_CHECKPOINT_DIR / tag


@click.command()
@click.option("--model", default="resnet18", show_default=True, type=click.Choice(MODEL_NAMES))
@click.option("--width", default=0.25, show_default=True, help="Width multiplier of the stages (64..512 x width).")
@click.option("--stem", default="small", show_default=True, type=click.Choice(STEMS))
@click.option("--shortcut", default="B", show_default=True, type=click.Choice(SHORTCUTS))
@click.option("--epochs", default=15, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=0.2, show_default=True, help="Peak learning rate.")
@click.option("--weight-decay", default=5e-4, show_default=True)
@click.option("--label-smoothing", default=0.1, show_default=True)
@click.option("--schedule", default="onecycle", show_default=True, type=click.Choice(["onecycle", "cosine"]))
@click.option("--random-erasing", default=0.0, show_default=True, help="Probability of random erasing.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=0, help="Torch CPU threads (0: torch's default).")
@click.option("--train-limit", default=0, help="Use only the first N training images (quick runs).")
@click.option("--out-dir", type=click.Path(file_okay=False), default=None,
              help="Run folder (default: checkpoints/<model>-w<width>).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run in --out-dir from last.pt.")
@data_dir_option
def train(out_dir, resume, data_dir, **options) -> None:
    """Train a ResNet on Fashion-MNIST (train 55k, validation 5k, test 10k).

    The defaults are the recipe that reaches >= 93% top-1 in under 20 minutes on a 2-core CPU.

    \b
    Examples:
      resnet-deploy train
      resnet-deploy train --width 0.5 --epochs 30 --random-erasing 0.25
      resnet-deploy train --out-dir checkpoints/resnet18-w0.25 --resume
    """
    from resnet_deploy.train import TrainConfig, resume_config, train as run_training

    config = TrainConfig(**options)
    out_dir = Path(out_dir) if out_dir else default_run_dir(config.tag)
    if resume:
        config = resume_config(out_dir)
        config.threads = options["threads"]
    console.print(f"training {config.tag} for {config.epochs} epochs -> {out_dir}")
    with _progress() as progress:
        task = progress.add_task("epoch", total=None, stats="")
        result = run_training(config, out_dir, data_dir=data_dir, resume=resume,
                              progress=lambda event, values: _on_progress(progress, task, event, values))
    table = Table(title=f"{config.tag}: training history")
    for column in ("epoch", "loss", "train acc", "val acc", "seconds"):
        table.add_column(column, justify="right")
    for epoch in result.history:
        table.add_row(str(epoch.epoch), f"{epoch.train_loss:.4f}", f"{epoch.train_accuracy * 100:.2f}%",
                      f"{epoch.val_accuracy * 100:.2f}%", f"{epoch.seconds:.0f}")
    console.print(table)
    console.print(f"best val {result.best_val_accuracy * 100:.2f}%, test top-1 {result.test_accuracy * 100:.2f}%, "
                  f"{result.seconds / 60:.1f} min; checkpoint {result.best_checkpoint}")


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[stats]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=False)


def _on_progress(progress: Progress, task, event: str, values: dict) -> None:
    if event == "step":
        progress.update(task, description=f"epoch {values['epoch']}", completed=values["step"],
                        total=values["steps"],
                        stats=f"loss {values['loss']:.3f} acc {values['accuracy'] * 100:.1f}%")
    elif event == "epoch" and not console.is_terminal:
        console.print(f"epoch {values['epoch']}: loss {values['train_loss']:.4f} "
                      f"val {values['val_accuracy'] * 100:.2f}% ({values['seconds']:.0f}s)")


@click.command()
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(dir_okay=False),
              help="A .pt checkpoint (with its .json sidecar, or a bare state dict with --model).")
@click.option("--model", "model_name", default=None, type=click.Choice(MODEL_NAMES),
              help="Model of a bare state dict that has no sidecar.")
@click.option("--width", default=None, type=float, help="Width of a bare state dict's model.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False), default=None,
              help="Report JSON (default: reports/evaluate-<checkpoint name>.json).")
@click.option("--png", "png_path", type=click.Path(dir_okay=False), default=None,
              help="Confusion matrix PNG (default: beside the JSON).")
@data_dir_option
def evaluate(checkpoint_path, model_name, width, json_path, png_path, data_dir) -> None:
    """Top-1, per-class accuracy and confusion matrix on the 10k test split.

    \b
    Example:
      resnet-deploy evaluate --checkpoint checkpoints/resnet18-w0.25/best.pt
    """
    from resnet_deploy import data
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.evaluate import classification_report, plot_confusion
    from resnet_deploy.fileio import atomic_write_json
    from resnet_deploy.train import predict

    overrides = {"width": width} if width is not None else {}
    model, meta = load_checkpoint(checkpoint_path, model_name, **overrides)
    dataset = data.load_fashion_mnist(data_dir)
    report = classification_report(dataset.test_labels, predict(model, dataset.test_images), data.CLASS_NAMES)
    report["checkpoint"] = str(checkpoint_path)
    report["model"] = meta["model"]
    stem = Path(checkpoint_path).parent.name + "-" + Path(checkpoint_path).stem
    json_path = Path(json_path or Path("reports") / f"evaluate-{stem}.json")
    atomic_write_json(json_path, report)
    png = plot_confusion(report, png_path or json_path.with_suffix(".png"), meta["model"]["name"])

    table = Table(title=f"{checkpoint_path}: test split ({report['count']} images)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in report["per_class"].items():
        table.add_row(name, f"{acc * 100:.2f}%")
    table.add_row("[bold]top-1", f"[bold]{report['top1'] * 100:.2f}%")
    console.print(table)
    console.print(f"report {json_path}" + (f", confusion matrix {png}" if png else " (install matplotlib for the PNG)"))


COMMANDS = [train, evaluate]
