"""`resnet-deploy export` and `parity`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.common import console, data_dir_option
from resnet_deploy.runners import BACKENDS


@click.command()
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--model", "model_name", default=None, help="Model of a bare state dict without sidecar.")
@click.option("--out", "onnx_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="ONNX path (default: artifacts/<run>.onnx).")
@click.option("--opset", default=18, show_default=True,
              help="ONNX opset: 18+ via torch.export (torch's default exporter), 17 via the TorchScript exporter.")
@click.option("--atol", default=1e-3, show_default=True, help="Max abs logit difference allowed vs PyTorch.")
@click.option("--check-images", default=1000, show_default=True, help="Test images for the parity check.")
@data_dir_option
def export(checkpoint_path, model_name, onnx_path, opset, atol, check_images, data_dir) -> None:
    """Export a checkpoint to ONNX (dynamic batch, BN folded) and check parity with PyTorch.

    \b
    Example:
      resnet-deploy export --checkpoint checkpoints/resnet18-w0.25/best.pt
    """
    from resnet_deploy import data
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.export import export_onnx, manifest_path
    from resnet_deploy.pipeline import artifact_stem

    model, _ = load_checkpoint(checkpoint_path, model_name)
    onnx_path = onnx_path or Path("artifacts") / f"{artifact_stem(checkpoint_path)}.onnx"
    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:check_images])
    manifest = export_onnx(model, onnx_path, opset=opset, check_images=images, atol=atol,
                           source_checkpoint=checkpoint_path)
    parity = manifest["parity"]
    console.print(f"{onnx_path}: opset {manifest['opset']}, {manifest['node_count']} nodes, "
                  f"BatchNorm nodes {manifest['batchnorm_nodes']}, export {manifest['export_seconds']:.1f} s "
                  f"({manifest['exporter']})")
    console.print(f"parity vs PyTorch on {parity['images']} test images: max |logit diff| "
                  f"{parity['max_abs_diff']:.2e}, argmax agreement {parity['argmax_agreement'] * 100:.2f}%")
    console.print(f"manifest {manifest_path(onnx_path)}")


@click.command()
@click.option("--checkpoint", "reference", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The FP32 reference: a .pt checkpoint (or an FP32 .onnx).")
@click.argument("artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--backend", type=click.Choice(["auto", *BACKENDS]), default="auto", show_default=True,
              help="Backend for the artifacts (auto: by file suffix).")
@click.option("--max-drop", "max_drop_pp", default=0.5, show_default=True, help="INT8 top-1 drop gate, pp.")
@click.option("--baseline", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Baseline JSON of per-artifact top-1 to gate against.")
@click.option("--max-baseline-drop", "max_baseline_drop_pp", default=0.1, show_default=True,
              help="Allowed top-1 drop below the baseline, pp.")
@click.option("--update-baseline", is_flag=True, help="Write this run as the new --baseline.")
@click.option("--batch-size", default=256, show_default=True)
@click.option("--limit", default=0, help="Use only the first N test images (0: all 10k).")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path),
              default=Path("reports/parity.json"), show_default=True)
@data_dir_option
def parity(reference, artifacts, backend, max_drop_pp, baseline, max_baseline_drop_pp, update_baseline,
           batch_size, limit, json_path, data_dir) -> None:
    """Accuracy parity of artifacts against the FP32 PyTorch reference on the 10k test split.

    Gates: FP32 agreement >= 99.99%, FP16 top-1 drop <= 0.05 pp, INT8 drop <= --max-drop. Exit 1
    when a gate fails.

    \b
    Example:
      resnet-deploy parity --checkpoint checkpoints/resnet18-w0.25/best.pt \\
          artifacts/resnet18-w0.25.onnx calibration/resnet18-w0.25.int8-entropy.qdq.onnx
    """
    from resnet_deploy.errors import GateFailed
    from resnet_deploy.parity import parity_for_artifacts

    if update_baseline and baseline is None:
        raise click.UsageError("--update-baseline needs --baseline FILE")
    try:
        report = parity_for_artifacts(reference, artifacts, json_path, backend=backend, max_drop_pp=max_drop_pp,
                                      limit=limit, batch_size=batch_size, data_dir=data_dir, baseline=baseline,
                                      update_baseline=update_baseline, max_baseline_drop_pp=max_baseline_drop_pp)
    except GateFailed:
        import json

        print_parity_table(json.loads(json_path.read_text()))
        raise
    print_parity_table(report)
    console.print(f"report {json_path}" + (f", baseline {baseline} updated" if update_baseline else ""))


def print_parity_table(report: dict) -> None:
    ref = report["reference"]
    table = Table(title=f"parity on {report['dataset']['count']} test images; reference {ref['name']} "
                        f"({ref['backend']}) top-1 {ref['top1'] * 100:.2f}%")
    for column in ("artifact", "backend", "precision", "top-1", "drop pp", "agreement", "max |diff|", "p99 |diff|",
                   "worst class", "gates"):
        table.add_column(column)
    for entry in report["artifacts"]:
        gates = ", ".join(("[green]pass[/]" if g["passed"] else "[red]FAIL[/]") + f" {g['name']}" for g in entry["gates"])
        diff = entry["logit_abs_diff"]
        worst = min(entry["per_class_delta_pp"].items(), key=lambda item: item[1])
        table.add_row(entry["label"], entry["backend"], entry["precision"], f"{entry['top1'] * 100:.2f}%",
                      f"{entry['top1_drop_pp']:+.2f}", f"{entry['agreement'] * 100:.2f}%", f"{diff['max']:.2e}",
                      f"{diff['p99']:.2e}", f"{worst[0]} {worst[1]:+.2f} pp", gates)
    console.print(table)


COMMANDS = [export, parity]
