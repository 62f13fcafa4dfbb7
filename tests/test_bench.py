"""Latency statistics, interleaving, the JSON report and the baseline gate (with a fake clock)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from resnet_deploy.bench import (apply_baseline_gate, compare, fingerprint, latency_stats, make_baseline,
                                 phase_warnings)
from resnet_deploy.cli import main
from resnet_deploy.errors import GateFailed
from resnet_deploy.runners.base import BaseRunner, TensorMeta

STATS = ("count", "min", "max", "mean", "median", "p90", "p95", "p99")


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class SleepRunner(BaseRunner):
    """Advances a fake clock by `seconds_per_image * batch` per inference and records the call order."""

    backend = "fake"

    def __init__(self, name, clock, seconds_per_image, log, phases=None):
        super().__init__(name)
        self.clock, self.seconds_per_image, self.log, self.phases = clock, seconds_per_image, log, phases

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _input_metadata(self):
        return [TensorMeta("input", np.dtype(np.float32), (-1, 1, 28, 28))]

    def _infer(self, feed):
        batch = len(feed["input"])
        self.clock.now += self.seconds_per_image * batch
        self.log.append(self.name)
        if self.phases:
            self.last_timings = dict(self.phases)
        return {"logits": np.zeros((batch, 10), np.float32)}


def run(speeds: dict[str, float], batch_sizes=(1, 4), **kwargs):
    clock, log = FakeClock(), []
    runners = {name: SleepRunner(name, clock, s, log).activate() for name, s in speeds.items()}
    report = compare(runners, np.zeros((4, 1, 28, 28), np.float32), batch_sizes, clock=clock, warmup_s=0.0,
                     min_duration_s=0.0, min_iterations=10, rounds=5, **kwargs)
    report["fingerprint"] = fingerprint()
    return report, log


def test_latency_stats_match_numpy_percentiles():
    times = np.random.default_rng(0).gamma(2.0, 0.003, size=997)
    stats = latency_stats(times)
    ms = times * 1000
    assert stats["count"] == 997
    for key, expected in [("min", ms.min()), ("max", ms.max()), ("mean", ms.mean()), ("median", np.median(ms)),
                          ("p90", np.percentile(ms, 90)), ("p95", np.percentile(ms, 95)), ("p99", np.percentile(ms, 99))]:
        assert stats[key] == pytest.approx(expected)


def test_artifacts_are_interleaved_and_ratios_come_from_one_run():
    report, log = run({"fp32": 0.002, "int8": 0.001})
    assert log[:4] == ["fp32", "fp32", "int8", "int8"]
    rounds = [label for _, _, label in report["order"]]
    assert rounds[:4] == ["fp32", "int8", "fp32", "int8"]
    for bs in ("1", "4"):
        entry = report["results"][bs]["int8"]
        assert set(STATS) <= set(entry["latency_ms"]) and entry["iterations"] >= 10
        assert entry["speedup_vs_reference"] == pytest.approx(2.0)
    assert report["results"]["4"]["fp32"]["throughput_ips"] == pytest.approx(500.0)


def test_baseline_gate_fails_on_regression_and_passes_within_threshold(tmp_path):
    baseline = tmp_path / "baseline.json"
    report, _ = run({"fp32": 0.002, "int8": 0.001})
    apply_baseline_gate(report, baseline, 10, update=True)
    assert json.loads(baseline.read_text())["speedup_vs_reference"]["1"]["int8"] == pytest.approx(2.0)

    slower, _ = run({"fp32": 0.002, "int8": 0.0013})
    with pytest.raises(GateFailed, match="int8 batch 1 speedup_vs_reference"):
        apply_baseline_gate(slower, baseline, 10)

    within, _ = run({"fp32": 0.002, "int8": 0.00105})
    apply_baseline_gate(within, baseline, 10)
    assert within["baseline"]["checks"] and all(c["passed"] for c in within["baseline"]["checks"])


def test_absolute_medians_are_compared_only_on_the_same_machine(tmp_path):
    baseline = tmp_path / "baseline.json"
    report, _ = run({"fp32": 0.002, "int8": 0.001})
    apply_baseline_gate(report, baseline, 10, update=True)
    both_slower, _ = run({"fp32": 0.004, "int8": 0.002})
    with pytest.raises(GateFailed, match="median_ms"):
        apply_baseline_gate(both_slower, baseline, 10)
    other = json.loads(baseline.read_text())
    other["fingerprint"]["cpu"] = "another CPU"
    baseline.write_text(json.dumps(other))
    apply_baseline_gate(both_slower, baseline, 10)
    assert not both_slower["baseline"]["same_machine"]
    assert {c["metric"] for c in both_slower["baseline"]["checks"]} == {"speedup_vs_reference"}


def test_phase_statistics_and_trtexec_like_warnings():
    clock, log = FakeClock(), []
    phases = {"h2d": 0.002, "compute": 0.001, "d2h": 0.001, "enqueue": 0.0009}
    runner = SleepRunner("trt", clock, 0.001, log, phases).activate()
    report = compare({"trt": runner}, np.zeros((1, 1, 28, 28), np.float32), [1], clock=clock, warmup_s=0,
                     min_duration_s=0, min_iterations=5, rounds=1)
    entry = report["results"]["1"]["trt"]
    assert entry["phases_ms"]["compute"]["median"] == pytest.approx(1.0)
    assert any(w.startswith("enqueue-bound") for w in entry["warnings"])
    assert any(w.startswith("transfer-bound") for w in entry["warnings"])
    assert phase_warnings({"compute": {"median": 5.0}, "enqueue": {"median": 0.1}}) == []


def test_make_baseline_records_machine_and_reference():
    report, _ = run({"a": 0.001, "b": 0.002}, batch_sizes=(2,))
    baseline = make_baseline(report)
    assert baseline["reference"] == "a" and baseline["fingerprint"]["cores"]
    assert baseline["speedup_vs_reference"]["2"]["b"] == pytest.approx(0.5)


@pytest.mark.slow
def test_bench_command_on_a_real_onnx(tmp_path, data_dir):
    import torch

    from resnet_deploy.export import export_onnx
    from resnet_deploy.models import create_model

    torch.manual_seed(0)
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(create_model("resnet18", width=0.0625).eval(), onnx_path)
    report_path = tmp_path / "bench.json"
    args = ["bench", str(onnx_path), "--batch-sizes", "1,8", "--duration-s", "0.2", "--warmup-ms", "20",
            "--rounds", "2", "--json", str(report_path), "--data-dir", str(data_dir),
            "--baseline", str(tmp_path / "base.json"), "--update-baseline"]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    report = json.loads(report_path.read_text())
    assert set(report["results"]) == {"1", "8"}
    assert set(STATS) <= set(report["results"]["8"]["tiny.onnx"]["latency_ms"])
    assert json.loads((tmp_path / "base.json").read_text())["reference"] == "tiny.onnx"


@pytest.mark.slow
def test_bench_command_exit_codes_against_a_baseline(tmp_path, data_dir):
    import torch

    from resnet_deploy.export import export_onnx
    from resnet_deploy.models import create_model

    torch.manual_seed(0)
    onnx_path = tmp_path / "tiny.onnx"
    export_onnx(create_model("resnet18", width=0.0625).eval(), onnx_path)
    baseline = tmp_path / "base.json"
    args = ["bench", str(onnx_path), "--batch-sizes", "4", "--duration-s", "0.1", "--warmup-ms", "10", "--rounds", "1",
            "--json", str(tmp_path / "b.json"), "--data-dir", str(data_dir), "--baseline", str(baseline),
            "--max-regression", "10"]

    def exit_code(extra=()):
        with pytest.raises(SystemExit) as exit_info:
            main([*args, *extra])
        return exit_info.value.code

    assert exit_code(["--update-baseline"]) == 0
    recorded = json.loads(baseline.read_text())
    recorded["median_ms"]["4"]["tiny.onnx"] = 1e-6
    baseline.write_text(json.dumps(recorded))
    assert exit_code() == 1
    recorded["median_ms"]["4"]["tiny.onnx"] = 1e6
    baseline.write_text(json.dumps(recorded))
    assert exit_code() == 0
