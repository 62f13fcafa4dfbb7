"""benchmarks/training.py and benchmarks/recipes.py on real Fashion-MNIST, with tiny settings."""

from __future__ import annotations

import json
import sys

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def training():
    return load_benchmark("training")


@pytest.fixture(scope="module")
def recipes():
    return load_benchmark("recipes")


def test_configurations_vary_one_setting_at_a_time_from_the_default(training):
    rows = training.configurations([0.25, 0.5], compiled=True, threads=2)
    default = {"width": 0.25, "channels_last": True, "batch": 128, "threads": 2, "compiled": False}
    assert rows.count(default) == 1
    for row in rows:
        differing = {key for key in default if row[key] != default[key]}
        assert len(differing) <= 1 or differing == {"width", "channels_last"}, row
    assert {r["batch"] for r in rows} == {64, 128, 256}
    assert {r["threads"] for r in rows} == {1, 2}
    assert [r for r in rows if r["compiled"]] == [{**default, "compiled": True}]
    assert not any(r["compiled"] for r in training.configurations([0.25], compiled=False, threads=1))


def test_a_run_writes_rows_ratios_and_overheads(training, tmp_path, monkeypatch):
    monkeypatch.setattr(
        training,
        "configurations",
        lambda widths, compiled, threads: [
            {"width": 0.125, "channels_last": cl, "batch": 16, "threads": threads, "compiled": False}
            for cl in (True, False)
        ],
    )
    monkeypatch.setattr(training, "DEFAULT", training.DEFAULT.__class__(width=0.125, batch_size=16))
    assert (
        training.main(["--rounds", "1", "--steps", "1", "--threads", "1", "--no-compile", "--out-dir", str(tmp_path)])
        == 0
    )
    report = json.loads((tmp_path / "training.json").read_text())
    assert [r["channels_last"] for r in report["rows"]] == [True, False]
    for row in report["rows"]:
        assert row["epoch_s"] == pytest.approx(55000 * row["median_step_s"] / 16)
        assert row["gmac_per_s"] == pytest.approx(3 * row["macs"] * 55000 / row["epoch_s"] / 1e9)
    assert report["conv_peak_gmac_per_s"] > 0
    assert report["overheads"]["augment_s_per_epoch"] > 0 and report["overheads"]["validate_s_per_epoch"] > 0
    table = (tmp_path / "training.md").read_text()
    assert "| 0.125 | channels-last | 16 | 1 | no |" in table and "1.00x" in table
    share = report["rows"][0]["gmac_per_s"] / report["conv_peak_gmac_per_s"]
    assert f"| {share:.0%} |" in table
    model = training.create_model("resnet18", width=0.125)
    convs = [m for m in model.modules() if isinstance(m, training.torch.nn.Conv2d)]
    profile = {g["layers"]: g for g in report["conv_profile"]}
    assert sum(g["convs"] for g in profile.values()) == len(convs)
    stem = profile["3x3 1->8, 28->28 px"]  # batch 16, no input gradient: forward + weight gradient
    assert stem["convs"] == 1 and stem["macs"] == 2 * 16 * 8 * 28 * 28 * 9
    assert profile["3x3 8->8, 28->28 px"]["macs"] == 4 * 3 * 16 * 8 * 28 * 28 * 8 * 9
    for group in profile.values():
        assert group["gmac_per_s"] == pytest.approx(group["macs"] / (group["forward_ms"] + group["backward_ms"]) / 1e6)
        assert f"| {group['layers']} | {group['convs']} |" in table
    assert report["isa_limit"] is None and report["fingerprint"]["cores"]


def test_isa_limit_reruns_in_a_child_with_the_limit(training, tmp_path, monkeypatch):
    calls = []
    monkeypatch.delenv("RESNET_DEPLOY_BENCH_ISA", raising=False)
    monkeypatch.setattr(training.subprocess, "call", lambda command, env: calls.append((command, env)) or 7)
    assert training.main(["--isa", "avx2", "--out-dir", str(tmp_path)]) == 7
    ((command, env),) = calls
    assert command[:2] == [sys.executable, str(training.Path(training.__file__).resolve())]
    assert command[2:] == ["--isa", "avx2", "--out-dir", str(tmp_path)]
    assert env["ONEDNN_MAX_CPU_ISA"] == "AVX2" and env["ATEN_CPU_CAPABILITY"] == "avx2"
    assert env["RESNET_DEPLOY_BENCH_ISA"] == "avx2"


def test_a_recipe_run_is_trained_then_summarized(recipes, tmp_path, capsys):
    runs, out = tmp_path / "runs", tmp_path / "results"
    options = "--width 0.125 --epochs 2 --train-limit 1024 --threads 1"
    assert (
        recipes.main(
            ["default", "--seeds", "3", "--runs-dir", str(runs), "--train-options", options, "--out-dir", str(out)]
        )
        == 0
    )
    report = json.loads((out / "recipe-default.json").read_text())
    (run,) = report["runs"]
    meta = json.loads((runs / "default-s3" / "best.json").read_text())
    assert run["seed"] == 3 and run["epochs"] == 2 and run["test_top1"] == meta["accuracy"]["test"]
    assert run["training"]["width"] == 0.125 and run["training"]["train_limit"] == 1024
    assert 0.1 < run["test_top1"] <= 1 and run["wall_min"] == meta["wall_seconds"] / 60
    assert report["command"] == f"resnet-deploy train {options}"
    assert "resnet-deploy train --width 0.125" in capsys.readouterr().out
    assert "| 3 | 2 |" in (out / "recipe-default.md").read_text()


def test_from_run_only_reads_and_a_failed_run_stops(recipes, tmp_path, monkeypatch, capsys):
    run = tmp_path / "long-s0"
    run.mkdir()
    history = [{"seconds": s} for s in (10.0, 30.0, 20.0)]
    meta = {"model": {"name": "resnet18"}, "training": {"seed": 0}, "history": history, "wall_seconds": 90.0,
            "accuracy": {"val": 0.9, "test": 0.95}}
    (run / "best.json").write_text(json.dumps(meta))
    last = {k: v for k, v in meta.items() if k not in ("accuracy", "wall_seconds")}
    (run / "last.json").write_text(json.dumps({**last, "history": [*history, {"seconds": 40.0}, {"seconds": 50.0}]}))
    (tmp_path / "long-s1").mkdir()
    (tmp_path / "long-s1" / "best.json").write_text(json.dumps({**meta, "accuracy": {"val": 0.9, "test": 0.93}}))
    monkeypatch.setattr(recipes, "train", lambda *a: pytest.fail("trained"))
    assert (
        recipes.main(["long", "--seeds", "0,1", "--from-run", "--runs-dir", str(tmp_path), "--out-dir", str(tmp_path)])
        == 0
    )
    report = json.loads((tmp_path / "recipe-long.json").read_text())
    assert report["runs"][0]["epochs"] == 5 and report["runs"][0]["median_epoch_s"] == 30.0  # best.pt stops at best
    assert report["runs"][1]["epochs"] == 3 and report["runs"][1]["median_epoch_s"] == 20.0  # no last.pt
    assert report["runs"][0]["wall_min"] == 1.5
    assert report["mean_test_top1"] == pytest.approx(0.94)
    assert "| mean | | | 1.5 | | 94.00% |" in (tmp_path / "recipe-long.md").read_text()
    monkeypatch.setattr(recipes, "train", lambda *a: 2)
    assert recipes.main(["long", "--runs-dir", str(tmp_path / "new"), "--out-dir", str(tmp_path / "out")]) == 2
    assert "exited 2" in capsys.readouterr().err and not (tmp_path / "out").exists()
