"""`resnet-deploy build`: the whole chain, each stage reused when unchanged."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.common import console, data_dir_option
from resnet_deploy.cli.fallback import fallback_options, print_fallback_report
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
@click.option("--min-batch", default=1, show_default=True)
@click.option("--opt-batch", default=32, show_default=True)
@click.option("--max-batch", default=256, show_default=True)
@click.option("--workspace-mib", default=1024, show_default=True)
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=Path("engines/timing.cache"),
              show_default=True, help="TensorRT timing cache, reused across builds.")
@click.option("--dla-core", type=int, default=None, help="Jetson DLA core (GPU fallback on).")
@click.option("--hardware-compatibility", type=click.Choice(["none", "ampere_plus", "same_compute_capability"]),
              default=None, help="TensorRT hardware-compatibility level.")
@click.option("--version-compatible", is_flag=True, help="Build a version-compatible engine.")
@click.option("--legacy-calibrator", is_flag=True,
              help="TensorRT <= 10 only: FP32 ONNX + INT8 flag + a calibrator serving our calibration cache.")
@click.option("--strict", is_flag=True, help="Exit 1 when the engine step cannot run (no TensorRT).")
@fallback_options
@data_dir_option
def build(precision, checkpoint, onnx, calibration_method, calibration_count, max_drop_pp, min_batch, opt_batch,
          max_batch, workspace_mib, timing_cache, dla_core, hardware_compatibility, version_compatible,
          legacy_calibrator, strict, fallback, data_dir) -> None:
    """Build a TensorRT engine: export, FP16 or INT8 artifacts, parity, engine, parity on the engine.

    Every stage is skipped when its inputs and settings are unchanged, so a second run takes seconds.

    \b
    Examples:
      resnet-deploy build --precision int8
      resnet-deploy build --precision fp16 --checkpoint checkpoints/resnet18-w0.25/best.pt --max-batch 64
      resnet-deploy build --precision int8 --legacy-calibrator        # TensorRT 10 / Jetson only
      resnet-deploy build --precision int8 --accuracy-budget 0.2 --fallback fp16
    """
    engine_options = {
        "min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch, "workspace_mib": workspace_mib,
        "timing_cache_path": timing_cache, "dla_core": dla_core, "hardware_compatibility": hardware_compatibility,
        "version_compatible": version_compatible, "legacy_calibrator": legacy_calibrator,
    }
    options = BuildOptions(precision=precision, checkpoint=checkpoint, onnx=onnx,
                           calibration_method=calibration_method, calibration_count=calibration_count,
                           max_drop_pp=max_drop_pp, data_dir=data_dir, engine=engine_options, fallback=fallback)
    result = run_build(options, log=console.print)
    table = Table(title=f"build --precision {precision}")
    for column in ("stage", "status", "seconds", "outputs"):
        table.add_column(column)
    for stage in result.stages:
        table.add_row(stage.name, "reused" if stage.skipped else "built", f"{stage.seconds:.1f}",
                      ", ".join(str(p) for p in stage.outputs))
    console.print(table)
    for stage in result.stages:  # issue 12: the INT8 fallback report
        if stage.name == "fallback":
            print_fallback_report(stage.details)
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
