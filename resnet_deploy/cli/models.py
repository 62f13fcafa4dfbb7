"""`resnet-deploy models`: the model zoo with parameters and MACs."""

from __future__ import annotations

from typing import Any

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import json_option, width_option
from resnet_deploy.model_options import STEMS


@click.command()
@width_option(1.0)
@click.option("--stem", type=click.Choice(STEMS), default="small", show_default=True)
@json_option(None, "Also write the table as JSON.")
def models(width, stem, json_path) -> None:
    """List the ResNet zoo: parameters and MACs at 1x28x28 (1 channel, 10 classes).

    \b
    Examples:
      resnet-deploy models
      resnet-deploy models --width 0.25 --json reports/models.json
    """
    from resnet_deploy.fileio import atomic_write_json, check_writable
    from resnet_deploy.models import count_macs, count_parameters, create_model, list_models

    if json_path:
        check_writable(json_path)
    rows: list[dict[str, Any]] = []
    for name in list_models():
        model = create_model(name, width=width, stem=stem)
        rows.append(
            {
                "name": name,
                "block": model.config["block"],
                "depth": _depth(model.config),
                "layers": model.config["layers"],
                "preact": model.config["preact"],
                "parameters": count_parameters(model),
                "macs": count_macs(model, (1, 1, 28, 28)),
            }
        )
    table = Table(title=f"ResNet zoo (width {width:g}, {stem} stem, 1x28x28 input, 10 classes)")
    for column in ("model", "block", "depth", "layers", "params (M)", "MACs (M)"):
        table.add_column(column, justify="right" if column[0] in "dpM" else "left")
    for row in rows:
        table.add_row(
            row["name"],
            row["block"],
            str(row["depth"]),
            "-".join(map(str, row["layers"])),
            f"{row['parameters'] / 1e6:.2f}",
            f"{row['macs'] / 1e6:.1f}",
        )
    console.print(table)
    if json_path:
        atomic_write_json(json_path, rows)


def _depth(config: dict) -> int:
    """Weighted layers as the paper counts them: stem conv + block convs + fc."""
    convs_per_block = 2 if config["block"] == "BasicBlock" else 3
    return convs_per_block * sum(config["layers"]) + 2


COMMANDS = [models]
