"""Defects mutation testing found (benchmarks/results/mutation.md): the parity baseline gate compared an unrounded drop
((1.0 - 0.995) * 100 = 0.5000000000000004 failed a 0.5 pp limit while the report said 0.5), and a class
absent from a limited split wrote NaN into the JSON report."""

from __future__ import annotations

import json

import numpy as np

from resnet_deploy.parity import apply_baseline, compare


def _report(top1: float) -> dict:
    return {"artifacts": [{"label": "m.onnx", "top1": top1, "gates": []}], "thresholds": {}}


def test_a_baseline_drop_equal_to_the_limit_passes_as_reported():
    report = _report(0.995)
    apply_baseline(report, {"m.onnx": 1.0}, 0.5)
    (gate,) = report["artifacts"][0]["gates"]
    assert gate["value"] == 0.5 and gate["passed"] is True and report["passed"] is True
    report = _report(0.9949)
    apply_baseline(report, {"m.onnx": 1.0}, 0.5)
    assert report["artifacts"][0]["gates"][0]["passed"] is False and report["passed"] is False


def test_a_class_missing_from_the_labels_is_null_not_nan():
    labels = np.array([0, 0, 1])
    reference = np.eye(3, dtype=np.float32)[[0, 0, 1]]
    result = compare(reference, reference.copy(), labels, ["a", "b", "c"])
    assert result["per_class_delta_pp"] == {"a": 0.0, "b": 0.0, "c": None}
    assert "NaN" not in json.dumps(result)


def test_a_command_that_exits_with_a_code_keeps_it():
    """click 8.2+ returns ctx.exit(N)'s code from main(standalone_mode=False) instead of raising Exit."""
    import click

    from resnet_deploy import cli as cli_package

    @cli_package.cli.command("exit-five-for-test")
    @click.pass_context
    def exit_five(ctx):
        ctx.exit(5)

    try:
        assert cli_package.run(["exit-five-for-test"]) == 5
    finally:
        cli_package.cli.commands.pop("exit-five-for-test")
