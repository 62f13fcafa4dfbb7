"""`resnet-deploy inspect`."""

from __future__ import annotations

import json
from pathlib import Path

import click

from resnet_deploy.cli.console import console, console_err


@click.command()
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def inspect(path: Path) -> None:
    """Describe an engine (its sidecar), an ONNX file (I/O, precision, Q/DQ count) or a calibration cache.

    For an engine, also check that it runs here: another TensorRT version, platform or compute
    capability exits 2, and so does a machine without TensorRT (the sidecar is printed first).

    \b
    Examples:
      resnet-deploy inspect artifacts/resnet18-w0.25.onnx
      resnet-deploy inspect calibration/resnet18-w0.25.entropy.cache
      resnet-deploy inspect engines/resnet18-w0.25_int8_b256_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine
    """
    from resnet_deploy.errors import ArtifactError
    from resnet_deploy.fileio import require_file

    require_file(path)
    if path.suffix == ".onnx":
        from resnet_deploy.onnx_info import describe_onnx

        info = describe_onnx(path)
    elif path.suffix == ".cache":
        from resnet_deploy.quantize.cache import read_calibration_cache

        header, scales = read_calibration_cache(path)
        info = {
            "path": str(path),
            "version_code": header.version_code,
            "algorithm": header.algorithm,
            "tensors": len(scales),
            "scales": scales,
        }
    elif path.suffix in (".engine", ".plan"):
        from resnet_deploy.trt.sidecar import read_sidecar

        info = read_sidecar(path)
        console.print_json(json.dumps(info, default=str))
        _check_engine_here(path, info)
        return
    else:
        raise ArtifactError(f"{path}: cannot inspect {path.suffix!r} files (expected .onnx, .cache or .engine)")
    console.print_json(json.dumps(info, default=str))


def _check_engine_here(path: Path, sidecar: dict) -> None:
    """Say whether the engine runs here; exit 2 when it cannot, or when TensorRT is not installed to tell."""
    from resnet_deploy.trt.sidecar import check_runs_here

    warnings, summary = check_runs_here(path, sidecar)
    for warning in warnings:
        console_err.print(f"[yellow]{warning}[/]")
    console_err.print(summary)


COMMANDS = [inspect]
