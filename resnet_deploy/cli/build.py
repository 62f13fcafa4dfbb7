"""`resnet-deploy build`: the whole chain, each stage reused when unchanged."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table
from rich.text import Text

from resnet_deploy.cli.console import console
from resnet_deploy.cli.fallback import OPTION_NAMES as FALLBACK_OPTION_NAMES
from resnet_deploy.cli.fallback import fallback_options, print_fallback_report
from resnet_deploy.cli.options import (
    ENGINE_OPTION_NAMES,
    calibration_count_option,
    calibration_method_option,
    data_dir_option,
    engine_options,
    engine_settings,
    given_flags,
    given_params,
    max_drop_option,
    parity_limit_option,
    source_options,
)
from resnet_deploy.device.build import build_from_bundle
from resnet_deploy.errors import GateFailed
from resnet_deploy.onnx_io import PRECISIONS
from resnet_deploy.pipeline import BuildOptions
from resnet_deploy.pipeline import build as run_build

# What a bundle fixes: its graphs and calibration come from the workstation.
NOT_WITH_BUNDLE = (
    "checkpoint",
    "onnx",
    "reference",
    "calibration_method",
    "calibration_count",
    "accuracy_budget_pp",
    "min_agreement_pct",
    "exclude",
    "keep_fp32",
)


@click.command()
@click.option("--precision", type=click.Choice(PRECISIONS), default="int8", show_default=True)
@source_options("Start from this FP32 ONNX instead of a checkpoint.")
@click.option(
    "--reference",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="FP32.onnx",
    help="With an FP16 or INT8 --onnx: the FP32 ONNX its parity is gated against (default: the source "
    "its calibration summary, fp16 stage record or bundle manifest names).",
)
@click.option(
    "--bundle",
    "bundle_path",
    type=click.Path(path_type=Path),
    default=None,
    metavar="DIR|TAR",
    help="On the device: build from this bundle (folder or .tar.gz) after verifying it and its parity on ONNX Runtime.",
)
@calibration_method_option("--calibration-method")
@calibration_count_option("--calibration-count")
@max_drop_option()
@parity_limit_option
@click.option("--strict", is_flag=True, help="Exit 1 when the engine step cannot run (no TensorRT).")
@fallback_options
@engine_options
@data_dir_option
@click.pass_context
def build(
    ctx,
    precision,
    checkpoint,
    onnx,
    reference,
    bundle_path,
    calibration_method,
    calibration_count,
    max_drop_pp,
    parity_limit,
    strict,
    fallback,
    data_dir,
    **engine,
) -> None:
    """Build a TensorRT engine: export, FP16 or INT8 artifacts, parity, engine, parity on the engine.

    Every stage is skipped when its inputs and settings are unchanged, so a second run takes seconds.
    With --bundle (on the Jetson): verify the bundle (a changed, missing or extra file exits 2 naming
    it), check its graphs' parity on ONNX Runtime, build the engine from its graph, check the engine.

    \b
    Examples:
      resnet-deploy build --precision int8
      resnet-deploy build --precision fp16 --checkpoint checkpoints/resnet18-w0.25/best.pt --max-batch 64
      resnet-deploy build --precision int8 --legacy-calibrator        # TensorRT 10 / Jetson only
      resnet-deploy build --bundle ~/resnet18-w0.25.tar.gz --precision int8
      resnet-deploy build --precision int8 --accuracy-budget 0.2 --fallback fp16
    """
    if bundle_path is not None:
        clashing = [param.opts[0] for param, _ in given_params(ctx, NOT_WITH_BUNDLE)]
        if clashing:
            raise click.UsageError(f"--bundle brings its own graphs and calibration; drop {', '.join(clashing)}")
    # Without TensorRT here, a legacy build is redone on the target from the FP32 ONNX: the fallback with it.
    target_names = ENGINE_OPTION_NAMES + (FALLBACK_OPTION_NAMES if engine["legacy_calibrator"] else ())
    options = BuildOptions(
        precision=precision,
        checkpoint=checkpoint,
        onnx=onnx,
        reference=reference,
        calibration_method=calibration_method,
        calibration_count=calibration_count,
        max_drop_pp=max_drop_pp,
        parity_limit=parity_limit,
        data_dir=data_dir,
        fallback=fallback,
        engine=engine_settings(precision, engine),
        target_flags=tuple(given_flags(ctx, target_names)),
    )
    if bundle_path is not None:
        result = build_from_bundle(options, bundle_path, log=console.print)
    else:
        result = run_build(options, log=console.print)
    table = Table(title=f"build --precision {precision}")
    for column in ("stage", "status", "seconds", "outputs"):
        table.add_column(column)
    for stage in result.stages:
        table.add_row(
            stage.name,
            "reused" if stage.skipped else "built",
            f"{stage.seconds:.1f}",
            ", ".join(str(p) for p in stage.outputs),
        )
    console.print(table)
    for stage in result.stages:  # issue 12: the INT8 fallback report
        if stage.name == "fallback":
            print_fallback_report(stage.details)
    if result.parity:
        from resnet_deploy.cli.parity import print_parity_table

        print_parity_table(result.parity)
    if result.engine:
        console.print(f"engine: {result.engine}")
    if result.engine_message:
        console.print(Text(result.engine_message, style="yellow"), soft_wrap=True)
        if strict:
            raise GateFailed("--strict: the engine step needs TensorRT, which is not installed here")


COMMANDS = [build]
