"""`resnet-deploy inspect` and `infer`."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.common import console, console_err, data_dir_option
from resnet_deploy.runners import BACKENDS


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

    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    if path.suffix == ".onnx":
        from resnet_deploy.onnx_info import describe_onnx

        info = describe_onnx(path)
    elif path.suffix == ".cache":
        from resnet_deploy.quantize.cache import read_calibration_cache

        header, scales = read_calibration_cache(path)
        info = {"path": str(path), "version_code": header.version_code, "algorithm": header.algorithm,
                "tensors": len(scales), "scales": scales}
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


@click.command()
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto", show_default=True)
@click.option("--count", default=16, show_default=True, type=click.IntRange(1), help="How many images to classify.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--offset", default=0, show_default=True, type=click.IntRange(0), help="Index of the first image.")
@data_dir_option
def infer(artifact, backend, count, split, offset, data_dir) -> None:
    """Classify real Fashion-MNIST images with any artifact (checkpoint, ONNX, engine) and show the predictions.

    \b
    Examples:
      resnet-deploy infer calibration/resnet18-w0.25.int8-entropy.qdq.onnx --count 8
      resnet-deploy infer engines/resnet18-w0.25_int8_b256_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine --split val
    """
    import numpy as np

    from resnet_deploy import data
    from resnet_deploy.errors import ResnetDeployError
    from resnet_deploy.runners import load_runner

    dataset = data.load_fashion_mnist(data_dir)
    split_images, split_labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
    if offset >= len(split_images):
        raise ResnetDeployError(f"--offset {offset} is past the end of the {split} split ({len(split_images)} images)")
    images, labels = split_images[offset:offset + count], split_labels[offset:offset + count]
    with load_runner(artifact, backend) as runner:
        name = runner.input_metadata()[0].name
        logits = next(iter(runner.infer({name: data.normalize(images)}).values())).astype(np.float32)
        seconds = runner.last_inference_time
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    table = Table(title=f"{artifact.name} ({runner.backend}): {len(images)} {split} images in {seconds * 1000:.1f} ms")
    for column in ("index", "label", "prediction", "confidence"):
        table.add_column(column)
    for i, (label, probs) in enumerate(zip(labels, probabilities)):
        predicted = int(probs.argmax())
        mark = "" if predicted == label else " [red]x[/]"
        table.add_row(str(offset + i), data.CLASS_NAMES[label], data.CLASS_NAMES[predicted] + mark,
                      f"{probs[predicted] * 100:.1f}%")
    console.print(table)


COMMANDS = [inspect, infer]
