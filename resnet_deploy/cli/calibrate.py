"""`resnet-deploy calibrate`: INT8 Q/DQ graphs and TensorRT calibration caches."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console, console_err
from resnet_deploy.cli.options import (OUTPUT_PATH, calibration_count_option, calibration_method_option,
                                       data_dir_option)
from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION


@click.command()
@click.option("--onnx", "onnx_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The FP32 ONNX (from `resnet-deploy export`).")
@calibration_method_option("--method")
@calibration_count_option("--count")
@click.option("--seed", default=0, show_default=True)
@click.option("--out-dir", type=OUTPUT_PATH, metavar="DIR", default=Path("calibration"),
              show_default=True)
@click.option("--trt-version", default=DEFAULT_TRT_VERSION, show_default=True, help="TensorRT version in the cache header.")
@click.option("--cpu-int8", is_flag=True, help="Also write the ONNX Runtime CPU INT8 graph.")
@data_dir_option
def calibrate(onnx_path, calibration_method, calibration_count, seed, out_dir, trt_version, cpu_int8,
              data_dir) -> None:
    """Calibrate INT8 on train-split images: Q/DQ graph + calibration cache per method.

    Each method's top-1 is measured on the validation split (never the test split); the best one
    is recorded in <out-dir>/<stem>.calibration.json.

    \b
    Example:
      resnet-deploy calibrate --onnx artifacts/resnet18-w0.25.onnx --method all --cpu-int8
    """
    from resnet_deploy.errors import ArtifactError
    from resnet_deploy.fileio import check_writable, folder_lock
    from resnet_deploy.onnx_io import load_classifier, precision_of
    from resnet_deploy.quantize.cache import version_code
    from resnet_deploy.quantize.calibrate import METHODS
    from resnet_deploy.quantize.int8 import Int8Paths, make_int8_artifacts

    kind = precision_of(load_classifier(onnx_path))
    if kind != "fp32":
        raise ArtifactError(f"{onnx_path}: is an {kind} graph; calibrate needs the FP32 ONNX "
                            "(from `resnet-deploy export`)")
    version_code(trt_version)
    methods = METHODS if calibration_method == "all" else (calibration_method,)
    paths = Int8Paths(out_dir, onnx_path.stem)
    outputs = [paths.summary, *(f(m) for m in methods for f in (paths.qdq, paths.cache, paths.amax))]
    check_writable(*outputs, *([paths.cpu_int8] if cpu_int8 else []))
    with folder_lock([out_dir], log=console_err.print):
        summary = make_int8_artifacts(onnx_path, out_dir, methods=methods, count=calibration_count, seed=seed,
                                      trt_version=trt_version, cpu_int8=cpu_int8, data_dir=data_dir)
    fp32 = summary["methods"]["fp32"]["val_top1"]
    table = Table(title=f"INT8 calibration of {onnx_path.name} ({calibration_count} train images; "
                        "top-1 on the 5k validation split)")
    for column in ("artifact", "val top-1", "vs FP32", "file"):
        table.add_column(column)
    for name, entry in summary["methods"].items():
        marker = " (best)" if name == summary["best_method"] else ""
        table.add_row(name + marker, f"{entry['val_top1'] * 100:.2f}%", f"{(entry['val_top1'] - fp32) * 100:+.2f} pp",
                      entry["onnx"])
    console.print(table)
    console.print(f"summary {paths.summary}, {summary['timings']['total_seconds']:.1f} s")


COMMANDS = [calibrate]
