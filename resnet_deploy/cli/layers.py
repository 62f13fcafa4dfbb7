"""`resnet-deploy layers`: where an FP16, Q/DQ or fallback graph departs from FP32, layer by layer."""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import (
    IMAGE,
    POSITIVE_FLOAT,
    FiniteFloatRange,
    OutputPath,
    data_dir_option,
    json_option,
    threads_option,
)
from resnet_deploy.data import VAL_SIZE


@click.command()
@click.argument("reference", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("candidate", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--count",
    default=256,
    show_default=True,
    type=click.IntRange(1, VAL_SIZE),
    help="Validation images to run (the first N of the split).",
)
@click.option(
    "--batch-size",
    default=64,
    show_default=True,
    type=click.IntRange(1, 4096),
    help="Images per run (lowered automatically when one tensor would exceed --max-memory-mib).",
)
@click.option(
    "--max-memory-mib",
    default=512.0,
    show_default=True,
    type=POSITIVE_FLOAT,
    help="Bound on the exposed intermediate tensors of one run, both graphs together.",
)
@click.option(
    "--min-snr",
    "min_snr_db",
    type=FiniteFloatRange(),
    default=15.0,
    show_default=True,
    help="Flag layers below this SNR (dB).",
)
@click.option(
    "--min-cosine",
    type=FiniteFloatRange(-1, 1),
    default=0.98,
    show_default=True,
    help="Flag layers below this cosine similarity.",
)
@threads_option
@json_option(None, help="Write the comparison as JSON, one row per layer.")
@click.option(
    "--plot", "plot_path", type=OutputPath(IMAGE), default=None, help="Write a PNG of SNR by depth (needs matplotlib)."
)
@click.option("--only-below", is_flag=True, help="Print only the flagged layers (the JSON keeps all).")
@data_dir_option
def layers(
    reference,
    candidate,
    count,
    batch_size,
    max_memory_mib,
    min_snr_db,
    min_cosine,
    threads,
    json_path,
    plot_path,
    only_below,
    data_dir,
) -> None:
    """Compare every layer output of CANDIDATE with REFERENCE (usually the FP32 ONNX) on validation images.

    Tensors are matched by name across FP32, FP16, Q/DQ and fallback graphs. Per layer: cosine
    similarity, SNR in dB and max abs error; the first layer below --min-snr or --min-cosine is
    named. Intermediate outputs are exposed a chunk at a time, so memory stays within
    --max-memory-mib even for ResNet-152.

    \b
    Examples:
      resnet-deploy layers artifacts/resnet18-w0.25.onnx calibration/resnet18-w0.25.int8-entropy.qdq.onnx
      resnet-deploy layers artifacts/resnet18-w0.25.onnx artifacts/resnet18-w0.25.fp16.onnx \\
          --json reports/layers-fp16.json --plot reports/layers-fp16.png
    """
    from resnet_deploy import data
    from resnet_deploy.fileio import atomic_write_json
    from resnet_deploy.quantize.layers import compare_layers, plot_snr

    dataset = data.load_fashion_mnist(data_dir)
    images = data.normalize(dataset.val_images[:count])
    with console.status("comparing layers") as status:
        comparison = compare_layers(
            reference,
            candidate,
            images,
            batch_size=batch_size,
            max_memory_mib=max_memory_mib,
            min_snr_db=min_snr_db,
            min_cosine=min_cosine,
            threads=threads,
            progress=lambda done, total: status.update(f"comparing layers: chunk {done}/{total}"),
        )
    print_layer_table(comparison, reference, candidate, only_below)
    if json_path:
        atomic_write_json(json_path, comparison.as_json())
        console.print(f"JSON {json_path}")
    if plot_path:
        written = plot_snr(comparison, plot_path, f"{candidate.name}\nvs {reference.name}, {count} validation images")
        console.print(f"plot {written}" if written else "no plot: matplotlib is not installed (pip install '.[plot]')")


def _format_snr(value: float | None) -> str:
    return "exact" if value is None else f"{value:.1f}"


def print_layer_table(comparison, reference: Path, candidate: Path, only_below: bool = False) -> None:
    settings = comparison.settings
    table = Table(
        title=f"{candidate.name} vs {reference.name}: {settings['images']} validation images, "
        f"{comparison.chunks} chunk(s) at batch {comparison.batch_size}, {comparison.seconds:.1f} s"
    )
    for column in ("#", "tensor", "op", "layer", "cosine", "SNR dB", "max |err|", ""):
        table.add_column(column, justify="right" if column in ("#", "cosine", "SNR dB", "max |err|") else "left")
    rows = [row for row in comparison.rows if row["below"] or not only_below]
    for row in rows:
        flag = "[red]below[/]" if row["below"] else ""
        table.add_row(
            str(row["index"]),
            row["tensor"],
            row["op_type"],
            row["layer"] or "",
            f"{row['cosine']:.6f}",
            _format_snr(row["snr_db"]),
            f"{row['max_abs_error']:.3g}",
            flag,
        )
    if rows:
        console.print(table)
    if comparison.unmatched:
        console.print(
            f"[yellow]no counterpart in {candidate.name} for {len(comparison.unmatched)} tensors:[/] "
            + ", ".join(comparison.unmatched[:10]),
            soft_wrap=True,
        )
    first = comparison.first_below
    if first is None:
        console.print(
            f"every layer is at or above {settings['min_snr_db']:g} dB SNR and cosine {settings['min_cosine']:g}"
        )
    else:
        name = f"{first['tensor']} ({first['op_type']}{', ' + first['layer'] if first['layer'] else ''})"
        snr = first["snr_db"] if first["snr_db"] is not None else math.inf
        console.print(
            f"first layer below the threshold: #{first['index']} {name}: SNR {snr:.1f} dB, "
            f"cosine {first['cosine']:.6f}",
            soft_wrap=True,
        )


COMMANDS = [layers]
