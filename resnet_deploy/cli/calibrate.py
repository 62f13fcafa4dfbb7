"""`resnet-deploy calibrate`: INT8 Q/DQ graphs and TensorRT calibration caches."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console, console_err
from resnet_deploy.cli.fallback import fallback_options, print_fallback_report
from resnet_deploy.cli.options import (
    calibration_count_option,
    calibration_dir_option,
    calibration_method_option,
    data_dir_option,
    trt_version_option,
)


@click.command()
@click.option(
    "--onnx",
    "onnx_path",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The FP32 ONNX (from `resnet-deploy export`).",
)
@calibration_method_option("--method")
@calibration_count_option("--count")
@click.option("--seed", default=0, show_default=True)
@calibration_dir_option
@trt_version_option()
@click.option("--cpu-int8", is_flag=True, help="Also write the ONNX Runtime CPU INT8 graph.")
@click.option(
    "--per-tensor-weights",
    is_flag=True,
    help="One weight scale per tensor instead of per output channel (to reproduce a known accuracy loss).",
)
@fallback_options
@data_dir_option
def calibrate(
    onnx_path,
    calibration_method,
    calibration_count,
    seed,
    out_dir,
    trt_version,
    cpu_int8,
    per_tensor_weights,
    fallback,
    data_dir,
) -> None:
    """Calibrate INT8 on train-split images: Q/DQ graph + calibration cache per method.

    Each method's top-1 is measured on the validation split (never the test split); the best one
    is recorded in <out-dir>/<stem>.calibration.json.

    With --accuracy-budget / --min-agreement, layers leave INT8 (most sensitive first) until the
    best method's graph is within the budget on validation; --exclude / --keep-fp32 name them by hand.
    That writes <stem>.int8-<method>.fallback.qdq.onnx, the same exclusions as TensorRT 10 layer
    precisions (.layer-precisions.json) and a report (.fallback.json, with test top-1).

    \b
    Examples:
      resnet-deploy calibrate --onnx artifacts/resnet18-w0.25.onnx --method all --cpu-int8
      resnet-deploy calibrate --onnx artifacts/resnet18-w0.25.onnx --accuracy-budget 0.1 --fallback fp16
      resnet-deploy calibrate --onnx artifacts/resnet18-w0.25.onnx --keep-fp32 first,last
    """
    from resnet_deploy.errors import ArtifactError
    from resnet_deploy.fileio import check_writable, folder_lock
    from resnet_deploy.onnx_io import load_classifier, precision_of
    from resnet_deploy.quantize.calibrate import METHODS
    from resnet_deploy.quantize.int8 import Int8Paths, make_int8_artifacts

    kind = precision_of(load_classifier(onnx_path))
    if kind != "fp32":
        raise ArtifactError(
            f"{onnx_path}: is an {kind} graph; calibrate needs the FP32 ONNX (from `resnet-deploy export`)"
        )
    methods = METHODS if calibration_method == "all" else (calibration_method,)
    paths = Int8Paths(out_dir, onnx_path.stem)
    outputs = [paths.summary, *(f(m) for m in methods for f in (paths.qdq, paths.cache, paths.amax))]
    if fallback.active:
        outputs += [f(m) for m in methods for f in (paths.fallback_qdq, paths.layer_precisions, paths.fallback_report)]
    check_writable(*outputs, *([paths.cpu_int8] if cpu_int8 else []))
    with folder_lock([out_dir], log=console_err.print):
        summary = make_int8_artifacts(
            onnx_path,
            out_dir,
            methods=methods,
            count=calibration_count,
            seed=seed,
            trt_version=trt_version,
            cpu_int8=cpu_int8,
            per_channel=not per_tensor_weights,
            data_dir=data_dir,
        )
    fp32 = summary["methods"]["fp32"]["val_top1"]
    table = Table(
        title=f"INT8 calibration of {onnx_path.name} ({calibration_count} train images; "
        "top-1 on the 5k validation split)"
    )
    for column in ("artifact", "val top-1", "vs FP32", "file"):
        table.add_column(column)
    for name, entry in summary["methods"].items():
        marker = " (best)" if name == summary["best_method"] else ""
        table.add_row(
            name + marker,
            f"{entry['val_top1'] * 100:.2f}%",
            f"{(entry['val_top1'] - fp32) * 100:+.2f} pp",
            entry["onnx"],
        )
    console.print(table)
    console.print(f"summary {paths.summary}, {summary['timings']['total_seconds']:.1f} s")
    if fallback.active:  # INT8 fallback within an accuracy budget (issue 12)
        from resnet_deploy.quantize.int8 import make_fallback_artifacts

        with folder_lock([out_dir], log=console_err.print):
            report = make_fallback_artifacts(
                onnx_path,
                out_dir,
                fallback,
                method=summary["best_method"],
                per_channel=not per_tensor_weights,
                data_dir=data_dir,
                log=console.print,
            )
        print_fallback_report(report)


COMMANDS = [calibrate]
