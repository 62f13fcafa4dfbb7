"""`resnet-deploy evaluate`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import IMAGE, OutputPath, checkpoint_options, data_dir_option, json_option


@click.command()
@checkpoint_options
@json_option(None, "Report JSON (default: reports/evaluate-<checkpoint name>.json).")
@click.option(
    "--png",
    "png_path",
    type=OutputPath(IMAGE),
    metavar="FILE",
    default=None,
    help="Confusion matrix PNG (default: beside the JSON).",
)
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
    from resnet_deploy.fileio import atomic_write_json, check_writable, fit_name
    from resnet_deploy.train import predict

    default_name = f"evaluate-{checkpoint_path.parent.name}-{checkpoint_path.stem}.json"
    json_path = json_path or fit_name(Path("reports") / default_name)
    png_path = png_path or json_path.with_suffix(".png")
    check_writable(json_path, png_path)
    model, meta = load_checkpoint(checkpoint_path, model_name, width=width)
    dataset = data.load_fashion_mnist(data_dir)
    report = classification_report(dataset.test_labels, predict(model, dataset.test_images), data.CLASS_NAMES)
    report["checkpoint"] = str(checkpoint_path)
    report["model"] = meta["model"]
    atomic_write_json(json_path, report)
    png = plot_confusion(report, png_path, meta["model"]["name"])

    table = Table(title=f"{checkpoint_path}: test split ({report['count']} images)")
    table.add_column("class")
    table.add_column("accuracy", justify="right")
    for name, acc in report["per_class"].items():
        table.add_row(name, f"{acc * 100:.2f}%")
    table.add_row("[bold]top-1", f"[bold]{report['top1'] * 100:.2f}%")
    console.print(table)
    console.print(f"report {json_path}" + (f", confusion matrix {png}" if png else " (install matplotlib for the PNG)"))


COMMANDS = [evaluate]
