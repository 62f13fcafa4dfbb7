"""`resnet-deploy qat`: quantization-aware fine-tuning from the calibrated ranges, exported as Q/DQ."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console, console_err
from resnet_deploy.cli.options import (
    POSITIVE_FLOAT,
    calibration_count_option,
    calibration_dir_option,
    calibration_method_option,
    data_dir_option,
    threads_option,
    trt_version_option,
)
from resnet_deploy.data import TRAIN_SIZE


@click.command()
@click.option(
    "--checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The trained model (exported to FP32 ONNX first).",
)
@click.option(
    "--onnx",
    "onnx_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Or start from this FP32 ONNX.",
)
@click.option("--epochs", default=1, show_default=True, type=click.IntRange(0, 1000))
@click.option(
    "--lr",
    default=0.005,
    show_default=True,
    type=POSITIVE_FLOAT,
    help="Peak learning rate (cosine decay); a few percent of the training rate.",
)
@click.option("--batch-size", default=128, show_default=True, type=click.IntRange(1, 4096))
@click.option(
    "--train-limit",
    default=0,
    show_default=True,
    type=click.IntRange(0, TRAIN_SIZE),
    help="Use only the first N train-split images per epoch (0: all 55k).",
)
@click.option(
    "--amax",
    "amax_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Start from these calibrated ranges (<stem>.<method>.amax.json from `calibrate`).",
)
@calibration_method_option("--method", allow_all=False)
@calibration_count_option("--count")
@calibration_dir_option
@trt_version_option()
@threads_option
@click.option("--seed", default=0, show_default=True)
@data_dir_option
def qat(
    checkpoint,
    onnx_path,
    epochs,
    lr,
    batch_size,
    train_limit,
    amax_path,
    calibration_method,
    calibration_count,
    out_dir,
    trt_version,
    threads,
    seed,
    data_dir,
) -> None:
    """Fine-tune with fake quantization where the PTQ graph has Q/DQ, then export the Q/DQ graph.

    Weights per channel, activations per tensor from the calibrated ranges (learned from there),
    on the BatchNorm-folded FP32 graph; the epoch with the best validation top-1 is exported
    (epoch 0 is PTQ itself). Writes <stem>.int8-qat.qdq.onnx, <stem>.qat.onnx (FP32 with the new
    weights), ranges, a TensorRT calibration cache and <stem>.qat.json; prints FP32, PTQ and QAT
    top-1 on validation and test.

    \b
    Example:
      resnet-deploy qat --checkpoint checkpoints/resnet18-w0.25/best.pt --epochs 2
    """
    from resnet_deploy import data
    from resnet_deploy.fileio import check_writable, folder_lock
    from resnet_deploy.pipeline import artifact_stem
    from resnet_deploy.quantize.calibrate import calibrate_onnx
    from resnet_deploy.quantize.int8 import Int8Paths, read_amax
    from resnet_deploy.quantize.qat import QatConfig, quantization_aware_training

    if (checkpoint is None) == (onnx_path is None):
        raise click.UsageError("give exactly one of --checkpoint and --onnx")
    paths = Int8Paths(out_dir, artifact_stem(checkpoint) if checkpoint else onnx_path.stem)
    check_writable(paths.qdq("qat"), paths.cache("qat"), paths.amax("qat"), paths.qat_fp32, paths.qat_report)
    config = QatConfig(epochs=epochs, lr=lr, batch_size=batch_size, train_limit=train_limit, seed=seed, threads=threads)
    with tempfile.TemporaryDirectory() as scratch, folder_lock([out_dir], log=console_err.print):
        if checkpoint is not None:
            onnx_path = _export(checkpoint, Path(scratch))
        if amax_path is None:
            console.print(f"calibrating {calibration_method} ranges on {calibration_count} train images")
        amax = (
            read_amax(amax_path)
            if amax_path
            else calibrate_onnx(
                onnx_path, data.calibration_images(calibration_count, data_dir=data_dir), calibration_method
            )
        )
        report = quantization_aware_training(
            onnx_path, out_dir, config, amax=amax, trt_version=trt_version, data_dir=data_dir, progress=_progress()
        )
    print_qat_report(report)


def _export(checkpoint: Path, folder: Path) -> Path:
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.export import export_onnx
    from resnet_deploy.pipeline import artifact_stem

    model, _ = load_checkpoint(checkpoint)
    path = folder / f"{artifact_stem(checkpoint)}.onnx"
    export_onnx(model, path)
    return path


def _progress():
    def report(event: str, values: dict) -> None:
        if event == "epoch":
            console.print(
                f"  epoch {values['epoch']}: val top-1 {values['val_top1'] * 100:.2f}% "
                f"({values['seconds']:.0f} s){' (calibrated ranges, before training)' if values['epoch'] == 0 else ''}"
            )

    return report


def print_qat_report(report: dict) -> None:
    table = Table(
        title=f"QAT: {report['config']['epochs']} epochs, best epoch {report['best_epoch']}, "
        f"{report['train_minutes']:.1f} min training, {report['total_minutes']:.1f} min in all"
    )
    for column in ("split", "FP32 top-1", "PTQ top-1", "PTQ drop", "QAT top-1", "QAT drop", "QAT agreement"):
        table.add_column(column)
    for split, values in report["accuracy"].items():
        table.add_row(
            f"{split} ({values['images']})",
            f"{values['fp32_top1'] * 100:.2f}%",
            f"{values['ptq_top1'] * 100:.2f}%",
            f"{values['ptq_drop_pp']:+.2f} pp",
            f"{values['qat_top1'] * 100:.2f}%",
            f"{values['qat_drop_pp']:+.2f} pp",
            f"{values['qat_agreement'] * 100:.2f}%",
        )
    console.print(table)
    console.print(
        f"Q/DQ graph {report['onnx']}, FP32 weights {report['fp32_onnx']}, cache {report['cache']}", soft_wrap=True
    )


COMMANDS = [qat]
