"""`resnet-deploy infer`: classify Fashion-MNIST images or your own photos with any artifact."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import (
    NON_NEGATIVE_INT,
    POSITIVE_INT,
    backend_option,
    data_dir_option,
    given_params,
    json_option,
    threads_option,
)

DATASET_OPTIONS = ("count", "split", "offset")


@click.command()
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("images", nargs=-1, type=click.Path(path_type=Path))
@backend_option()
@click.option("--top-k", type=click.IntRange(1, 10), default=3, show_default=True, help="Classes shown per image.")
@click.option("--count", default=16, show_default=True, type=POSITIVE_INT, help="How many dataset images to classify.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--offset", default=0, show_default=True, type=NON_NEGATIVE_INT, help="Index of the first dataset image.")
@threads_option
@json_option(Path("reports/infer.json"), "Predictions JSON.")
@data_dir_option
@click.pass_context
def infer(ctx, artifact, images, backend, top_k, count, split, offset, threads, json_path, data_dir) -> None:
    """Classify images with any artifact (checkpoint, ONNX, engine): your own PNG/JPEG files or folders of
    them, or Fashion-MNIST images (without IMAGES). Shows the top-k classes as a table and writes JSON.

    Photos are converted the way Fashion-MNIST was made: grayscale, trimmed, fitted into 28 x 28, a light
    object on a dark background (dark-on-light photos are inverted). Class names come from the bundle the
    artifact lies in or was built from (`build --bundle`), else Fashion-MNIST's.

    \b
    Examples:
      resnet-deploy infer engines/resnet18-w0.25_int8_b256_sm87-nvidia-jetson-agx-orin_trt10.3.0.engine photos/
      resnet-deploy infer calibration/resnet18-w0.25.int8-entropy.qdq.onnx shoe.jpg shirt.png --top-k 5
      resnet-deploy infer artifacts/resnet18-w0.25.onnx --count 8 --split val
    """
    from resnet_deploy.device.bundle import class_names_for
    from resnet_deploy.fileio import atomic_write_json, check_writable
    from resnet_deploy.runners import load_runner

    if images:
        clashing = [param.opts[0] for param, _ in given_params(ctx, DATASET_OPTIONS)]
        if clashing:
            raise click.UsageError(f"{', '.join(clashing)} choose dataset images; drop them when giving IMAGES")
    class_names, names_from = class_names_for(artifact)
    runner = load_runner(artifact, backend, threads=threads)
    check_writable(json_path)
    if images:
        report = _classify_photos(runner, images, class_names, top_k)
    else:
        report = _classify_dataset(runner, data_dir, split, offset, count, class_names, top_k)
    report.update(
        {"artifact": str(artifact), "backend": runner.backend, "class_names_from": names_from, "top_k": top_k}
    )
    atomic_write_json(json_path, report)
    console.print(f"class names: {names_from}; report {json_path}")


def _logits(runner, images):
    """Normalized logits of uint8 images (N, 28, 28) through the runner, in batches it accepts."""
    import time

    from resnet_deploy import data
    from resnet_deploy.parity import collect_logits

    with runner:
        started = time.perf_counter()
        logits = collect_logits(runner, data.normalize(images))
    return logits, time.perf_counter() - started


def _top_k_text(predictions) -> str:
    return ", ".join(f"{p['class']} {p['probability'] * 100:.1f}%" for p in predictions)


def _classify_photos(runner, paths, class_names, top_k) -> dict:
    from resnet_deploy.evaluate import top_k as top_classes
    from resnet_deploy.images import load_images

    photos = load_images(paths)
    logits, seconds = _logits(runner, photos.images)
    predictions = top_classes(logits, class_names, top_k)
    table = Table(title=f"{runner.name} ({runner.backend}): {len(photos.names)} images in {seconds * 1000:.1f} ms")
    for column in ("image", f"top-{top_k}", "converted"):
        table.add_column(column)
    entries = []
    for name, inverted, note, predicted in zip(photos.names, photos.inverted, photos.notes, predictions):
        table.add_row(name, _top_k_text(predicted), note)
        entries.append({"file": name, "inverted": inverted, "conversion": note, "predictions": predicted})
    console.print(table)
    return {"source": "files", "seconds": seconds, "images": entries}


def _classify_dataset(runner, data_dir, split, offset, count, class_names, top_k) -> dict:
    from resnet_deploy import data
    from resnet_deploy.errors import ResnetDeployError
    from resnet_deploy.evaluate import top_k as top_classes

    dataset = data.load_fashion_mnist(data_dir)
    split_images, split_labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
    if offset >= len(split_images):
        raise ResnetDeployError(f"--offset {offset} is past the end of the {split} split ({len(split_images)} images)")
    images, labels = split_images[offset : offset + count], split_labels[offset : offset + count]
    logits, seconds = _logits(runner, images)
    predictions = top_classes(logits, class_names, top_k)
    table = Table(title=f"{runner.name} ({runner.backend}): {len(images)} {split} images in {seconds * 1000:.1f} ms")
    for column in ("index", "label", f"top-{top_k}"):
        table.add_column(column)
    entries = []
    for i, (label, predicted) in enumerate(zip(labels, predictions)):
        mark = "" if predicted[0]["index"] == label else " [red]x[/]"
        table.add_row(str(offset + i), class_names[label], _top_k_text(predicted) + mark)
        entries.append({"index": offset + i, "label": class_names[label], "predictions": predicted})
    console.print(table)
    top1 = sum(e["predictions"][0]["index"] == label for e, label in zip(entries, labels)) / len(entries)
    return {"source": f"Fashion-MNIST {split}", "seconds": seconds, "top1": top1, "images": entries}


COMMANDS = [infer]
