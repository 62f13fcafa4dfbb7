"""Latency statistics, interleaving, the JSON report and the baseline gate (with a fake clock)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy.bench import (apply_baseline_gate, compare, fingerprint, latency_stats, make_baseline, measure,
                                 phase_warnings, same_machine)
from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError, GateFailed, ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, TensorMeta

pytestmark = pytest.mark.runtime

STATS = ("count", "min", "max", "mean", "std", "median", "p90", "p95", "p99")


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


def test_latency_stats_on_known_timings():
    """1..100 ms in shuffled order: linear-interpolation percentiles (numpy's default, trtexec's too) by hand."""
    times = np.random.default_rng(0).permutation(np.arange(1, 101)) / 1000.0
    stats = latency_stats(times)
    expected = {"count": 100, "min": 1.0, "max": 100.0, "mean": 50.5, "median": 50.5,
                "std": (9999 / 12) ** 0.5,  # population std of 1..n: sqrt((n^2 - 1) / 12)
                "p90": 90.1, "p95": 95.05, "p99": 99.01}  # rank p/100 * 99 between neighbours
    assert stats == pytest.approx(expected)


def test_artifacts_are_interleaved_and_ratios_come_from_one_run():
    report, log = run({"fp32": 0.002, "int8": 0.001})
    # A warm-up of 0 s is still one inference per artifact (it sets up per-shape state such as a CUDA graph);
    # then each round runs ceil(10 iterations / 5 rounds) = 2 inferences per artifact.
    assert log[:10] == ["fp32", "int8"] + ["fp32", "fp32", "int8", "int8"] * 2
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


def test_measure_runs_at_least_the_duration_and_the_iterations():
    clock, log = FakeClock(), []
    runner = SleepRunner("fp32", clock, 0.001, log).activate()
    entry = measure(runner, np.zeros((3, 1, 28, 28), np.float32), 8, warmup_s=0.01, min_duration_s=0.4,
                    min_iterations=10, clock=clock)
    assert entry["latency_ms"]["median"] == pytest.approx(8.0)
    assert entry["iterations"] == 50 and entry["seconds"] == pytest.approx(0.4)
    assert entry["throughput_ips"] == pytest.approx(1000.0)
    assert len(log) == 50 + 2  # two warm-up inferences of 8 ms fill the 10 ms warm-up
    few = measure(runner, np.zeros((3, 1, 28, 28), np.float32), 1, warmup_s=0, min_duration_s=0, min_iterations=7,
                  clock=clock)
    assert few["iterations"] == 7 and "phases_ms" not in few


def test_unstable_compute_time_is_flagged_above_trtexecs_threshold():
    """trtexec warns above a 2.5% coefficient of variation of GPU compute time (TensorRT 10.13.2 on)."""
    def warnings_for(std):
        return [w.split(":")[0] for w in phase_warnings({"compute": {"median": 2.0, "mean": 2.0, "std": std}})]

    assert warnings_for(0.01) == [] and warnings_for(0.049) == []  # 0.5% and 2.45%
    assert warnings_for(0.051) == ["unstable"] and warnings_for(0.4) == ["unstable"]  # 2.55% and 20%


def test_baseline_must_cover_the_same_artifacts_and_reference(tmp_path):
    baseline = tmp_path / "baseline.json"
    with pytest.raises(ArtifactError, match="--update-baseline"):
        apply_baseline_gate(run({"fp32": 0.002, "int8": 0.001})[0], baseline, 10)
    apply_baseline_gate(run({"fp32": 0.002, "int8": 0.001})[0], baseline, 10, update=True)
    renamed, _ = run({"fp32": 0.002, "int8-v2": 0.001})
    with pytest.raises(ArtifactError, match="int8 at batch 1"):
        apply_baseline_gate(renamed, baseline, 10)
    other_reference, _ = run({"int8": 0.001, "fp32": 0.002})
    with pytest.raises(ArtifactError, match="reference"):
        apply_baseline_gate(other_reference, baseline, 10)
    fewer_sizes, _ = run({"fp32": 0.002, "int8": 0.001}, batch_sizes=(1,))
    with pytest.raises(ArtifactError, match="int8 at batch 4"):
        apply_baseline_gate(fewer_sizes, baseline, 10)


def test_memory_check_counts_every_feed_and_the_largest_working_set(monkeypatch):
    from resnet_deploy import bench

    clock, log = FakeClock(), []
    runners = {name: SleepRunner(name, clock, 0.001, log).activate() for name in ("a", "b")}
    per_image = 3 * 28 * 28 * 4  # two input feeds, and one runner's input while it works
    monkeypatch.setattr(bench, "available_memory_bytes", lambda: 1000 * per_image)
    bench.check_memory(runners, [1, 1000])
    with pytest.raises(ResnetDeployError, match="--batch-sizes 1001: needs about"):
        bench.check_memory(runners, [1, 1001])


def test_fingerprint_names_the_machine():
    machine = fingerprint()
    assert machine["cores"] >= 1 and machine["cpu"] and "gpu" in machine
    assert machine["versions"]["numpy"] == np.__version__
    assert same_machine(machine, dict(machine))
    assert not same_machine(machine, {**machine, "gpu": "NVIDIA H100 80GB HBM3, 570.86"})


def _bench(args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main(["bench", *map(str, args)])
    return exit_info.value.code


@pytest.mark.slow
def test_bench_command_on_a_real_onnx(tmp_path, data_dir, untrained_onnx):
    report_path, plots = tmp_path / "bench.json", tmp_path / "plots"
    assert _bench([untrained_onnx, "--batch-sizes", "1,8", "--duration-s", "0.2", "--warmup-ms", "20", "--rounds", "2",
                   "--json", report_path, "--data-dir", data_dir, "--plots", plots,
                   "--baseline", tmp_path / "base.json", "--update-baseline"]) == 0
    report = json.loads(report_path.read_text())
    assert set(report["results"]) == {"1", "8"}
    for bs in ("1", "8"):
        entry = report["results"][bs]["tiny.onnx"]
        assert set(STATS) <= set(entry["latency_ms"]) and entry["iterations"] >= 10 and entry["throughput_ips"] > 0
    assert report["artifacts"]["tiny.onnx"]["backend"] == "onnxruntime" and report["fingerprint"]["cores"]
    assert json.loads((tmp_path / "base.json").read_text())["reference"] == "tiny.onnx"
    for name in ("latency.png", "throughput.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_bench_plots_are_skipped_with_a_note_without_matplotlib(tmp_path, data_dir, untrained_onnx, monkeypatch,
                                                                capsys):
    from resnet_deploy import plots

    monkeypatch.setattr(plots, "_pyplot", lambda: None)
    assert _bench([untrained_onnx, "--batch-sizes", "2", "--duration-s", "0.05", "--warmup-ms", "5", "--rounds", "1",
                   "--json", tmp_path / "b.json", "--data-dir", data_dir, "--plots", tmp_path / "plots"]) == 0
    assert "plots skipped: install matplotlib" in capsys.readouterr().out
    assert not (tmp_path / "plots").exists()


@pytest.mark.slow
def test_bench_command_exit_codes_against_a_baseline(tmp_path, data_dir, untrained_onnx):
    baseline = tmp_path / "base.json"
    args = [untrained_onnx, "--batch-sizes", "4", "--duration-s", "0.1", "--warmup-ms", "10", "--rounds", "1",
            "--json", tmp_path / "b.json", "--data-dir", data_dir, "--baseline", baseline, "--max-regression", "10"]
    assert _bench([*args, "--update-baseline"]) == 0
    recorded = json.loads(baseline.read_text())
    recorded["median_ms"]["4"]["tiny.onnx"] = 1e-6
    baseline.write_text(json.dumps(recorded))
    assert _bench(args) == 1
    recorded["median_ms"]["4"]["tiny.onnx"] = 1e6
    baseline.write_text(json.dumps(recorded))
    assert _bench(args) == 0
    assert _bench([*args[:-4], "--baseline", tmp_path / "missing.json"]) == 2


# ---- Jetson fingerprint and CUDA graphs ------------------------------------------------------------------

JETSON_FIXTURES = Path(__file__).parent / "fixtures" / "jetson-orin-jp6"


def jetson_machine(monkeypatch, board: str) -> dict:
    from resnet_deploy.device import jetson

    monkeypatch.setattr(jetson, "ROOT", JETSON_FIXTURES / board)
    return fingerprint()


def test_a_jetson_fingerprint_compares_board_l4t_power_mode_and_locked_clocks(monkeypatch):
    locked, unlocked = jetson_machine(monkeypatch, "locked"), jetson_machine(monkeypatch, "unlocked")
    assert locked["jetson"]["l4t"] == "36.4.3" and locked["jetson"]["clocks"]["locked"] is True
    assert same_machine(locked, copy.deepcopy(locked))
    hotter = copy.deepcopy(locked)
    hotter["jetson"]["clocks"]["domains"][0]["cur"] -= 1000  # current frequencies are not the machine
    assert same_machine(locked, hotter)
    other_mode = copy.deepcopy(locked)
    other_mode["jetson"]["power_mode"]["id"] = 2
    assert not same_machine(locked, other_mode)
    assert not same_machine(unlocked, copy.deepcopy(unlocked)), "unlocked clocks: absolute times are not comparable"
    assert not same_machine(locked, {k: v for k, v in locked.items() if k != "jetson"})


@pytest.mark.slow
def test_bench_on_an_unlocked_jetson_warns_and_records_the_board(tmp_path, data_dir, untrained_onnx, monkeypatch,
                                                                 capsys):
    from resnet_deploy.device import jetson

    monkeypatch.setattr(jetson, "ROOT", JETSON_FIXTURES / "unlocked")
    assert _bench([untrained_onnx, "--batch-sizes", "2", "--duration-s", "0", "--warmup-ms", "0", "--rounds", "1",
                   "--iterations", "2", "--json", tmp_path / "b.json", "--data-dir", data_dir]) == 0
    out = " ".join(capsys.readouterr().out.split())
    report = json.loads((tmp_path / "b.json").read_text())
    board = report["fingerprint"]["jetson"]
    assert board["jetpack"] == "6.2" and board["power_mode"]["name"] == "MODE_30W"
    (warning,) = report["machine_warnings"]
    assert "Jetson clocks are not locked" in warning and f"warning {warning}" in out
    assert report["settings"]["cuda_graph"] is False


def test_bench_cuda_graph_needs_an_engine(tmp_path, untrained_onnx, capsys):
    assert _bench([untrained_onnx, "--cuda-graph", "--json", tmp_path / "b.json"]) == 2
    assert "--cuda-graph applies to TensorRT engines; none of the artifacts is one" in capsys.readouterr().err


def test_bench_cuda_graph_captures_each_batch_size_of_the_engine_on_the_fakes(tmp_path, data_dir, monkeypatch):
    """An engine (fake TensorRT) with --cuda-graph beside an ONNX file without: one graph per batch size."""
    from resnet_deploy.trt.builder import build_engine
    from resnet_deploy.trt.settings import EngineSettings
    from tests import fakes
    from tests.fakes.graphs import tiny_graphs

    rec, _ = fakes.install(monkeypatch, "10.3")
    graphs = tiny_graphs(tmp_path)
    engine = build_engine(graphs["fp32"], EngineSettings(precision="fp32", opt_batch=4, max_batch=8), tmp_path,
                          log=lambda _: None).engine_path
    assert _bench([graphs["fp32"], engine, "--cuda-graph", "--batch-sizes", "1,4", "--duration-s", "0",
                   "--warmup-ms", "0", "--rounds", "2", "--iterations", "4", "--json", tmp_path / "b.json",
                   "--data-dir", data_dir]) == 0
    report = json.loads((tmp_path / "b.json").read_text())
    assert report["artifacts"][engine.name]["cuda_graph"] == {"requested": True, "fallback": None,
                                                               "captured": [[1, 1, 28, 28], [4, 1, 28, 28]]}
    assert "cuda_graph" not in report["artifacts"]["tiny.onnx"] and report["settings"]["cuda_graph"]
    launches = [c for c in rec.calls if c[0] == "graph_launch"]
    timed = sum(report["results"][bs][engine.name]["iterations"] for bs in ("1", "4"))
    assert sum(c[0] == "begin_capture" for c in rec.calls) == 2 and len(launches) == timed


def test_write_results_writes_the_report_and_its_table_then_prints_it(tmp_path, capsys):
    from resnet_deploy.bench import write_results

    out = tmp_path / "new" / "results"
    write_results(out, "run-x", {"ratio": 1.5}, "| a |\n")
    assert json.loads((out / "run-x.json").read_text()) == {"ratio": 1.5}
    assert (out / "run-x.md").read_text() == "| a |\n"
    assert capsys.readouterr().out == "| a |\n\n"
