"""`resnet-deploy export`."""

from __future__ import annotations

from pathlib import Path

import click

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import FILE_KINDS, NON_NEGATIVE_FLOAT, OutputPath, checkpoint_options, data_dir_option


def _check_opset(ctx: click.Context, param: click.Parameter, value: int) -> int:
    from resnet_deploy.errors import ArtifactError
    from resnet_deploy.export import check_opset

    try:
        check_opset(value)
    except ArtifactError as exc:
        raise click.BadParameter(str(exc)) from exc
    return value


@click.command()
@checkpoint_options
@click.option(
    "--out",
    "onnx_path",
    type=OutputPath(FILE_KINDS[".onnx"]),
    metavar="FILE",
    default=None,
    help="ONNX path (default: artifacts/<run>.onnx).",
)
@click.option(
    "--opset",
    type=int,
    default=18,
    show_default=True,
    callback=_check_opset,
    help="ONNX opset: 18+ via torch.export (torch's default exporter), 17 via the TorchScript exporter; "
    "at most what the installed torch and onnx support.",
)
@click.option(
    "--atol",
    type=NON_NEGATIVE_FLOAT,
    default=1e-3,
    show_default=True,
    help="Max abs logit difference allowed vs PyTorch.",
)
@click.option(
    "--check-images",
    type=click.IntRange(1, 10000),
    default=1000,
    show_default=True,
    help="Test images for the parity check (1..10000).",
)
@data_dir_option
def export(checkpoint_path, model_name, width, onnx_path, opset, atol, check_images, data_dir) -> None:
    """Export a checkpoint to ONNX (dynamic batch, BN folded) and check parity with PyTorch.

    \b
    Example:
      resnet-deploy export --checkpoint checkpoints/resnet18-w0.25/best.pt
    """
    from resnet_deploy import data
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.export import export_onnx, manifest_path
    from resnet_deploy.fileio import fit_name
    from resnet_deploy.pipeline import artifact_stem

    onnx_path = onnx_path or fit_name(Path("artifacts") / f"{artifact_stem(checkpoint_path)}.onnx")
    model, _ = load_checkpoint(checkpoint_path, model_name, width=width)
    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:check_images])
    manifest = export_onnx(
        model, onnx_path, opset=opset, check_images=images, atol=atol, source_checkpoint=checkpoint_path
    )
    parity = manifest["parity"]
    console.print(
        f"{onnx_path}: opset {manifest['opset']}, {manifest['node_count']} nodes, "
        f"BatchNorm nodes {manifest['batchnorm_nodes']}, export {manifest['export_seconds']:.1f} s "
        f"({manifest['exporter']})"
    )
    console.print(
        f"parity vs PyTorch on {parity['images']} test images: max |logit diff| "
        f"{parity['max_abs_diff']:.2e}, argmax agreement {parity['argmax_agreement'] * 100:.2f}%"
    )
    console.print(f"manifest {manifest_path(onnx_path)}")


COMMANDS = [export]
