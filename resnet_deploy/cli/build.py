"""`resnet-deploy build`: the whole chain, each stage reused when unchanged."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.common import console, data_dir_option
from resnet_deploy.cli.options import engine_options, engine_settings
from resnet_deploy.errors import GateFailed
from resnet_deploy.pipeline import PRECISIONS, BuildOptions, build as run_build


@click.command()
@click.option("--precision", type=click.Choice(PRECISIONS), default="int8", show_default=True)
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this checkpoint (default: checkpoints/resnet18-w0.25/best.pt, trained if absent).")
@click.option("--onnx", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Start from this FP32 ONNX instead of a checkpoint.")
@click.option("--calibration-method", type=click.Choice(["auto", "entropy", "max", "percentile"]), default="auto",
              show_default=True, help="auto: calibrate with all three, keep the best on the validation split.")
@click.option("--calibration-count", default=512, show_default=True, help="Calibration images (train split).")
@click.option("--max-drop", "max_drop_pp", default=0.5, show_default=True, help="INT8 top-1 drop gate, in pp.")
@click.option("--strict", is_flag=True, help="Exit 1 when the engine step cannot run (no TensorRT).")
@engine_options
@data_dir_option
def build(precision, checkpoint, onnx, calibration_method, calibration_count, max_drop_pp, strict, data_dir,
          **engine) -> None:
    """Build a TensorRT engine: export, FP16 or INT8 artifacts, parity, engine, parity on the engine.

    Every stage is skipped when its inputs and settings are unchanged, so a second run takes seconds.

    \b
    Examples:
      resnet-deploy build --precision int8
      resnet-deploy build --precision fp16 --checkpoint checkpoints/resnet18-w0.25/best.pt --max-batch 64
      resnet-deploy build --precision int8 --legacy-calibrator        # TensorRT 10 / Jetson only
    """
    options = BuildOptions(precision=precision, checkpoint=checkpoint, onnx=onnx,
                           calibration_method=calibration_method, calibration_count=calibration_count,
                           max_drop_pp=max_drop_pp, data_dir=data_dir, engine=engine_settings(precision, engine))
    result = run_build(options, log=console.print)
    table = Table(title=f"build --precision {precision}")
    for column in ("stage", "status", "seconds", "outputs"):
        table.add_column(column)
    for stage in result.stages:
        table.add_row(stage.name, "reused" if stage.skipped else "built", f"{stage.seconds:.1f}",
                      ", ".join(str(p) for p in stage.outputs))
    console.print(table)
    if result.parity:
        from resnet_deploy.cli.quantize import print_parity_table

        print_parity_table(result.parity)
    if result.engine:
        console.print(f"engine: {result.engine}")
    if result.engine_message:
        console.print(f"[yellow]{result.engine_message}[/]", soft_wrap=True)
        if strict:
            raise GateFailed("--strict: the engine step needs TensorRT, which is not installed here")


COMMANDS = [build]
