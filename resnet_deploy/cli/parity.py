"""`resnet-deploy parity`."""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import (
    NON_NEGATIVE_FLOAT,
    POSITIVE_INT,
    artifacts_argument,
    backend_option,
    baseline_options,
    data_dir_option,
    json_option,
    max_drop_option,
    parity_limit_option,
    threads_option,
)


@click.command()
@click.option(
    "--checkpoint",
    "reference",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The FP32 reference: a .pt checkpoint (or the FP32 .onnx).",
)
@artifacts_argument()
@backend_option()
@max_drop_option()
@baseline_options(
    click.option(
        "--max-baseline-drop",
        "max_baseline_drop_pp",
        type=NON_NEGATIVE_FLOAT,
        default=0.1,
        show_default=True,
        help="Allowed top-1 drop below the baseline, pp.",
    )
)
@click.option("--batch-size", type=POSITIVE_INT, default=256, show_default=True)
@parity_limit_option
@threads_option
@json_option(Path("reports/parity.json"))
@data_dir_option
def parity(
    reference,
    artifacts,
    backend,
    max_drop_pp,
    baseline,
    max_baseline_drop_pp,
    update_baseline,
    batch_size,
    parity_limit,
    threads,
    json_path,
    data_dir,
) -> None:
    """Accuracy parity of artifacts against the FP32 reference on the 10k test split.

    Gates: FP32 agreement >= 99.99%, FP16 top-1 drop <= 0.05 pp, INT8 drop <= --max-drop. Exit 1
    when a gate fails.

    \b
    Example:
      resnet-deploy parity --checkpoint checkpoints/resnet18-w0.25/best.pt \\
          artifacts/resnet18-w0.25.onnx calibration/resnet18-w0.25.int8-entropy.qdq.onnx
    """
    from resnet_deploy.errors import GateFailed
    from resnet_deploy.parity import parity_for_artifacts

    try:
        report = parity_for_artifacts(
            reference,
            artifacts,
            json_path,
            backend=backend,
            max_drop_pp=max_drop_pp,
            limit=parity_limit,
            batch_size=batch_size,
            data_dir=data_dir,
            baseline=baseline,
            update_baseline=update_baseline,
            max_baseline_drop_pp=max_baseline_drop_pp,
            threads=threads,
        )
    except GateFailed as exc:
        if exc.details is not None:  # parity_for_artifacts's gate always carries its report
            print_parity_table(exc.details)
        raise
    print_parity_table(report)
    console.print(f"report {json_path}" + (f", baseline {baseline} updated" if update_baseline else ""))


def print_parity_table(report: dict) -> None:
    ref = report["reference"]
    table = Table(
        title=f"parity on {report['dataset']['count']} test images; reference {ref['name']} "
        f"({ref['backend']}) top-1 {ref['top1'] * 100:.2f}%"
    )
    for column in (
        "artifact",
        "backend",
        "precision",
        "top-1",
        "drop pp",
        "agreement",
        "max |diff|",
        "p99 |diff|",
        "worst class",
        "gates",
    ):
        table.add_column(column)
    for entry in report["artifacts"]:
        gates = ", ".join(
            ("[green]pass[/]" if g["passed"] else "[red]FAIL[/]") + f" {g['name']}" for g in entry["gates"]
        )
        diff = entry["logit_abs_diff"]
        present = [item for item in entry["per_class_delta_pp"].items() if item[1] is not None]
        worst = min(present, key=lambda item: item[1]) if present else ("-", 0.0)
        table.add_row(
            entry["label"],
            entry["backend"],
            entry["precision"],
            f"{entry['top1'] * 100:.2f}%",
            f"{entry['top1_drop_pp']:+.2f}",
            f"{entry['agreement'] * 100:.2f}%",
            f"{diff['max']:.2e}",
            f"{diff['p99']:.2e}",
            f"{worst[0]} {worst[1]:+.2f} pp",
            gates,
        )
    console.print(table)


COMMANDS = [parity]
