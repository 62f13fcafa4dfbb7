"""`resnet-deploy infer`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import NON_NEGATIVE_INT, POSITIVE_INT, backend_option, data_dir_option, threads_option


@click.command()
@click.argument("artifact", type=click.Path(dir_okay=False, path_type=Path))
@backend_option()
@click.option("--count", default=16, show_default=True, type=POSITIVE_INT, help="How many images to classify.")
@click.option("--split", type=click.Choice(["test", "val", "train"]), default="test", show_default=True)
@click.option("--offset", default=0, show_default=True, type=NON_NEGATIVE_INT, help="Index of the first image.")
@threads_option
@data_dir_option
def infer(artifact, backend, count, split, offset, threads, data_dir) -> None:
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

    with load_runner(artifact, backend, threads=threads) as runner:
        dataset = data.load_fashion_mnist(data_dir)
        split_images, split_labels = getattr(dataset, f"{split}_images"), getattr(dataset, f"{split}_labels")
        if offset >= len(split_images):
            raise ResnetDeployError(f"--offset {offset} is past the end of the {split} split "
                                    f"({len(split_images)} images)")
        images, labels = split_images[offset:offset + count], split_labels[offset:offset + count]
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


COMMANDS = [infer]
