"""`resnet-deploy bundle` (make the device bundle) and `verify-bundle` (check it on the device, no torch)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import (
    OUTPUT_PATH,
    FiniteFloatRange,
    calibration_count_option,
    calibration_method_option,
    data_dir_option,
    json_option,
    max_drop_option,
    parity_limit_option,
    source_options,
)


@click.command()
@source_options("Start from this FP32 ONNX (e.g. what `build` exported) instead of a checkpoint.")
@click.option(
    "--out",
    "out_dir",
    type=OUTPUT_PATH,
    metavar="DIR",
    default=None,
    help="Bundle folder (default: bundles/<model>); the .tar.gz is written beside it.",
)
@click.option("--no-tar", is_flag=True, help="Write only the folder.")
@calibration_method_option("--calibration-method")
@calibration_count_option("--calibration-count")
@max_drop_option()
@click.option(
    "--deepstream-batch-size",
    default=1,
    show_default=True,
    type=click.IntRange(1, 1024),
    help="nvinfer batch-size (frames or objects per batch).",
)
@click.option(
    "--classifier-threshold",
    default=0.5,
    show_default=True,
    type=FiniteFloatRange(0, 1),
    help="nvinfer classifier-threshold: softmax probability the best class must reach.",
)
@click.option(
    "--deepstream-video-range",
    type=click.Choice(["full", "limited"]),
    default="full",
    show_default=True,
    help="Luma range nvinfer sees: full (0-255, images) or limited (16-235, most decoded video); "
    "sets net-scale-factor and offsets.",
)
@data_dir_option
def bundle(
    checkpoint,
    onnx,
    out_dir,
    no_tar,
    calibration_method,
    calibration_count,
    max_drop_pp,
    deepstream_batch_size,
    classifier_threshold,
    deepstream_video_range,
    data_dir,
) -> None:
    """Write the device bundle: FP32, FP16 and INT8 Q/DQ graphs, calibration cache, labels, parity report,
    DeepStream configs, the project's torch-free wheel, DEVICE.md and a manifest with the SHA-256 of every
    file; a folder and a .tar.gz. The wheel is built offline from this checkout.

    Stages already built are reused; a failed parity gate exits 1 and writes no bundle.

    \b
    Examples:
      resnet-deploy bundle --checkpoint checkpoints/resnet18-w0.25/best.pt
      resnet-deploy bundle --onnx artifacts/resnet18-w0.25.onnx --out /media/usb/resnet18-w0.25
    """
    from resnet_deploy.cli.parity import print_parity_table
    from resnet_deploy.device.deepstream import DeepStreamSettings
    from resnet_deploy.device.make import make_bundle
    from resnet_deploy.pipeline import BuildOptions

    if checkpoint and onnx:
        raise click.UsageError("give --checkpoint or --onnx, not both")
    options = BuildOptions(
        checkpoint=checkpoint,
        onnx=onnx,
        calibration_method=calibration_method,
        calibration_count=calibration_count,
        max_drop_pp=max_drop_pp,
        data_dir=data_dir,
    )
    result = make_bundle(
        options,
        out_dir,
        tarball=not no_tar,
        log=console.print,
        deepstream_settings=DeepStreamSettings(
            deepstream_batch_size, classifier_threshold, video_range=deepstream_video_range
        ),
    )
    made = result.bundle
    table = Table(title=f"bundle {made.folder} ({len(made.manifest['files'])} files + manifest.json)")
    for column in ("file", "role", "bytes", "sha256"):
        table.add_column(column)
    for relative, entry in made.manifest["files"].items():
        table.add_row(relative, entry["role"], f"{entry['bytes']:,}", entry["sha256"][:16])
    console.print(table)
    print_parity_table(json.loads(made.path("parity_report").read_text()))
    if result.tarball:
        console.print(f"tarball {result.tarball} ({result.tarball.stat().st_size / 1e6:.1f} MB)")
    console.print(f"on the device: see {made.folder / 'DEVICE.md'}")


@click.command("verify-bundle")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--parity",
    "run_parity",
    is_flag=True,
    help="Also run the FP16 and INT8 graphs against the FP32 graph on ONNX Runtime (test split).",
)
@max_drop_option()
@parity_limit_option
@json_option(None, help="Parity report (default: reports/bundle-parity-<bundle>.json).")
@data_dir_option
def verify_bundle(path, run_parity, max_drop_pp, parity_limit, json_path, data_dir) -> None:
    """Check a bundle folder (or unpack a bundle .tar.gz safely) against its manifest; needs no torch.

    A changed, missing or unlisted file exits 2 naming it; with --parity a failed gate exits 1. A tarball
    unpacks beside it; an existing folder of that name is replaced only when it holds nothing but an
    older bundle's own files, else exit 2 naming the others (nothing is deleted).

    \b
    Examples:
      resnet-deploy verify-bundle bundles/resnet18-w0.25
      resnet-deploy verify-bundle resnet18-w0.25.tar.gz --parity
    """
    from resnet_deploy.device.bundle import bundle_parity, open_bundle

    checked = open_bundle(path)
    manifest = checked.manifest
    console.print(
        f"{checked.folder}: {len(manifest['files'])} files match manifest.json "
        f"(model {manifest['model']['name']}, made {manifest['created']} with "
        f"resnet-deploy {manifest['versions']['resnet-deploy']})"
    )
    if not run_parity:
        return
    json_path = json_path or Path("reports") / f"bundle-parity-{checked.folder.name}.json"
    report = bundle_parity(checked, json_path, max_drop_pp=max_drop_pp, limit=parity_limit, data_dir=data_dir)
    table = Table(
        title=f"parity on this machine, {report['dataset']['count']} test images, reference "
        f"{report['reference']['name']} top-1 {report['reference']['top1'] * 100:.2f}%"
    )
    for column in ("artifact", "precision", "top-1 here", "top-1 workstation", "agreement", "gates"):
        table.add_column(column)
    for entry in report["artifacts"]:
        recorded = entry["workstation_top1"]
        table.add_row(
            entry["label"],
            entry["precision"],
            f"{entry['top1'] * 100:.2f}%",
            "-" if recorded is None else f"{recorded * 100:.2f}%",
            f"{entry['agreement'] * 100:.2f}%",
            ", ".join(("pass " if g["passed"] else "FAIL ") + g["name"] for g in entry["gates"]),
        )
    console.print(table)
    console.print(f"report {json_path}")


COMMANDS = [bundle, verify_bundle]
