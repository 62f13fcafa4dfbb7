"""The INT8 fallback options shared by `calibrate` and `build`, and the report they print."""

from __future__ import annotations

import functools

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import FiniteFloatRange
from resnet_deploy.quantize.qdq import FALLBACKS

_OPTIONS = [
    click.option(
        "--accuracy-budget",
        "accuracy_budget_pp",
        type=FiniteFloatRange(min=0),
        default=None,
        help="Keep the fewest layers out of INT8 so that validation top-1 is at most PP below FP32 "
        "(per-layer sensitivity measured on the validation split).",
    ),
    click.option(
        "--min-agreement",
        "min_agreement_pct",
        type=FiniteFloatRange(0, 100, min_open=True),
        default=None,
        help="Likewise, until top-1 agreement with FP32 on validation is at least PCT %.",
    ),
    click.option(
        "--fallback",
        "fallback_precision",
        type=click.Choice(FALLBACKS),
        default="fp16",
        show_default=True,
        help="Precision of the layers kept out of INT8.",
    ),
    click.option(
        "--exclude",
        default="",
        help="Layers kept out of INT8, comma-separated: names as `resnet-deploy layers` shows them "
        "(layer2.0.conv1), ONNX node names, first, last.",
    ),
    click.option("--keep-fp32", default="", help="Layers kept in FP32 whatever --fallback says, e.g. first,last."),
]

OPTION_NAMES = ("accuracy_budget_pp", "min_agreement_pct", "fallback_precision", "exclude", "keep_fp32")


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in text.split(",") if name.strip())


def fallback_options(function):
    """Add the fallback options to a command; it receives them as one `fallback` (`FallbackSettings`)."""

    @functools.wraps(function)
    def wrapper(*args, accuracy_budget_pp, min_agreement_pct, fallback_precision, exclude, keep_fp32, **kwargs):
        from resnet_deploy.quantize.fallback import FallbackSettings

        settings = FallbackSettings(
            accuracy_budget_pp, min_agreement_pct, fallback_precision, _names(exclude), _names(keep_fp32)
        )
        return function(*args, fallback=settings, **kwargs)

    for option in reversed(_OPTIONS):
        wrapper = option(wrapper)
    return wrapper


def print_fallback_report(report: dict) -> None:
    """Excluded layers, INT8 MAC share, and top-1 of FP32, plain PTQ and the fallback graph per split."""
    settings = report["settings"]
    budget = [
        f"drop <= {settings['accuracy_budget_pp']:g} pp" if settings["accuracy_budget_pp"] is not None else "",
        f"agreement >= {settings['min_agreement_pct']:g}%" if settings["min_agreement_pct"] is not None else "",
    ]
    budget_text = " and ".join(b for b in budget if b) or "none (layers as named)"
    table = Table(
        title=f"INT8 fallback ({report['method']}): budget {budget_text} on validation; "
        f"{len(report['excluded'])} layers out of INT8, {report['int8_mac_share'] * 100:.1f}% "
        f"of conv/gemm MACs in INT8"
    )
    for column in (
        "split",
        "FP32 top-1",
        "PTQ top-1",
        "PTQ drop",
        "PTQ agreement",
        "fallback top-1",
        "fallback drop",
        "fallback agreement",
    ):
        table.add_column(column)
    for split, values in report["accuracy"].items():
        table.add_row(
            f"{split} ({values['images']})",
            f"{values['fp32_top1'] * 100:.2f}%",
            f"{values['ptq_top1'] * 100:.2f}%",
            f"{values['ptq_drop_pp']:+.2f} pp",
            f"{values['ptq_agreement'] * 100:.2f}%",
            f"{values['fallback_top1'] * 100:.2f}%",
            f"{values['fallback_drop_pp']:+.2f} pp",
            f"{values['fallback_agreement'] * 100:.2f}%",
        )
    console.print(table)
    if report["excluded"]:
        console.print(
            "out of INT8: "
            + ", ".join(
                f"{row['layer']} ({row['node']}, {row['precision']}, "
                f"{row['macs'] / report['total_macs'] * 100:.1f}% MACs)"
                for row in report["excluded"]
            ),
            soft_wrap=True,
        )
    if report["budget_met"] is False:
        console.print("[yellow]the budget is not met even with every layer out of INT8[/]")
    console.print(
        f"fallback graph {report['onnx']}, TensorRT 10 layer precisions {report['layer_precisions']}; "
        f"{report['evaluations']} graphs scored in {report['search_seconds']:.1f} s",
        soft_wrap=True,
    )
