"""Exact behaviour of resnet_deploy/bench.py with fake runners and a fake clock (no real timing is asserted),
written to kill the mutants tools/mutation.sh finds there: the feed, warm-up and rounds, the statistics and
warnings at their thresholds, the memory check, the machine fingerprint and its comparison, and the baseline
gate (ratios, --max-regression, --max-median-regression, references, environment fields, CI=true) with
values just inside and just outside each limit."""

from __future__ import annotations

import inspect
import json
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy import bench
from resnet_deploy.bench import (
    absolute_skip_reason,
    apply_baseline_gate,
    check_baseline,
    check_memory,
    compare,
    hardware_difference,
    latency_stats,
    machine_difference,
    make_baseline,
    measure,
    phase_warnings,
    read_baseline,
    same_machine,
    speedup,
)
from resnet_deploy.errors import ArtifactError, GateFailed, ResnetDeployError
from resnet_deploy.runners.base import BaseRunner, TensorMeta


class Clock:
    """A clock that advances only when told to (each runner's inference, or every read by `tick`)."""

    def __init__(self, tick: float = 0.0):
        self.now, self.tick, self.reads = 0.0, tick, 0

    def __call__(self) -> float:
        self.reads += 1
        self.now += self.tick
        return self.now


class Runner(BaseRunner):
    """Takes `seconds[i]` (cycled) of fake time per inference; records each feed's batch and the call order."""

    backend = "fake"

    def __init__(self, name, clock, seconds, log, timings=None, per_image=40, working=100):
        super().__init__(name)
        self.clock, self.seconds, self.log, self.timings = clock, list(seconds), log, timings
        self.per_image, self.working, self.calls, self.batches = per_image, working, 0, []

    def _activate(self):
        pass

    def _deactivate(self):
        pass

    def _input_metadata(self):
        return [TensorMeta("images", np.dtype(np.float32), (-1, 1, 2, 2))]

    def input_bytes_per_image(self) -> int:
        return self.per_image

    def bytes_per_image(self) -> int:
        return self.working

    def _infer(self, feed):
        (batch,) = feed.values()
        self.batches.append(batch)
        self.clock.now += self.seconds[self.calls % len(self.seconds)]
        self.calls += 1
        self.log.append(self.name)
        if self.timings:
            self.last_timings = dict(self.timings)
        return {"logits": np.zeros((len(batch), 10), np.float32)}


IMAGES = np.arange(3 * 4, dtype=np.float64).reshape(3, 1, 2, 2)


# --- statistics ---------------------------------------------------------------------------------------------

def test_latency_stats_of_two_values_and_none():
    stats = latency_stats([0.001, 0.003])
    assert stats == pytest.approx({"count": 2, "min": 1.0, "max": 3.0, "mean": 2.0, "std": 1.0, "median": 2.0,
                                   "p90": 2.8, "p95": 2.9, "p99": 2.98})
    assert list(stats) == ["count", "min", "max", "mean", "std", "median", "p90", "p95", "p99"]
    assert isinstance(stats["count"], int) and all(isinstance(v, float) for k, v in stats.items() if k != "count")
    with pytest.raises(ValueError, match="^no timings to summarize$"):
        latency_stats([])


def test_statistics_are_computed_in_float64_whatever_the_input():
    times = np.array([0.001, 0.002, 0.004], np.float32)
    stats = latency_stats(times)
    exact = times.astype(np.float64) * 1000.0
    assert stats["min"] == float(exact[0]) != float(times[0] * np.float32(1000.0))
    assert stats["mean"] == float(exact.mean())


def test_speedup_is_the_median_of_per_round_ratios():
    assert speedup([4.0, 2.0, 9.0], [1.0, 2.0, 3.0]) == 3.0
    assert speedup([1.0, 3.0], [2.0, 1.0]) == pytest.approx(1.75)


@pytest.mark.parametrize("std, mean, unstable", [(0.0249, 1.0, False), (0.0251, 1.0, True), (0.05, 2.0, False),
                                                 (0.051, 2.0, True)])
def test_unstable_above_2_5_percent_cv(std, mean, unstable):
    warnings = phase_warnings({"compute": {"median": 1.0, "std": std, "mean": mean}})
    assert [w.startswith("unstable: ") for w in warnings] == ([True] if unstable else [])
    if unstable:
        assert warnings[0] == (f"unstable: compute time varies by {100 * std / mean:.1f}% (coefficient of "
                               "variation); lock the GPU clocks or use a quieter machine before comparing")


def test_cv_defaults_to_no_std_and_the_median_as_mean():
    assert phase_warnings({"compute": {"median": 1.0}}) == []
    assert phase_warnings({"compute": {"median": 1.0, "std": 0.026}})[0].startswith("unstable: compute time varies "
                                                                                       "by 2.6%")
    assert phase_warnings({"compute": {"median": 0.0, "std": 5.0, "mean": 1.0}, "enqueue": {"median": 9.0}}) == []
    assert phase_warnings({"enqueue": {"median": 9.0}, "h2d": {"median": 9.0}}) == []


@pytest.mark.parametrize("enqueue, compute, bound", [(0.79, 1.0, False), (0.8, 1.0, True), (0.81, 1.0, True),
                                                     (1.59, 2.0, False), (1.6, 2.0, True), (0.5, 0.5, True)])
def test_enqueue_bound_from_80_percent_of_compute(enqueue, compute, bound):
    phases = {"compute": {"median": compute, "std": 0.0, "mean": compute}, "enqueue": {"median": enqueue}}
    warnings = phase_warnings(phases)
    expected = [f"enqueue-bound: median enqueue {enqueue:.3f} ms vs compute {compute:.3f} ms; "
                "the GPU may idle between inferences (try CUDA graphs or larger batches)"]
    assert warnings == (expected if bound else [])


@pytest.mark.parametrize("h2d, d2h, bound", [(0.5, 0.5, False), (0.5, 0.51, True), (1.01, 0.0, True),
                                             (0.0, 1.01, True)])
def test_transfer_bound_above_compute(h2d, d2h, bound):
    phases = {"compute": {"median": 1.0, "std": 0.0, "mean": 1.0}, "h2d": {"median": h2d}, "d2h": {"median": d2h}}
    phases = {k: v for k, v in phases.items() if v["median"]}
    expected = [f"transfer-bound: H2D + D2H {h2d + d2h:.3f} ms exceed compute 1.000 ms"]
    assert phase_warnings(phases) == (expected if bound else [])


# --- interleaved runs ---------------------------------------------------------------------------------------

def test_feed_repeats_the_images_up_to_the_batch_and_casts_to_contiguous_float32():
    clock, log = Clock(), []
    runner = Runner("a", clock, [0.001], log).activate()
    compare({"a": runner}, IMAGES, [2, 3, 5, 7], warmup_s=0.0, min_duration_s=0.0, min_iterations=1, rounds=1,
            clock=clock)
    two, three, five, seven = runner.batches[0::2]
    for batch in (two, three, five, seven):
        assert batch.dtype == np.float32 and batch.flags["C_CONTIGUOUS"]
    np.testing.assert_array_equal(two, IMAGES[:2])
    np.testing.assert_array_equal(three, IMAGES)
    np.testing.assert_array_equal(five, np.concatenate([IMAGES, IMAGES[:2]]))
    np.testing.assert_array_equal(seven, np.concatenate([IMAGES, IMAGES, IMAGES[:1]]))
    assert [len(b) for b in runner.batches] == [2, 2, 3, 3, 5, 5, 7, 7]


def test_warm_up_runs_until_its_deadline_then_rounds_alternate():
    clock, log = Clock(), []
    runners = {n: Runner(n, clock, [0.01], log).activate() for n in ("a", "b")}
    progress = []
    report = compare(runners, IMAGES, [1], warmup_s=0.025, min_duration_s=0.0, min_iterations=4, rounds=2,
                     clock=clock, progress=progress.append)
    # 0.025 s of warm-up: 3 inferences of 0.01 s each (the third crosses the deadline); then ceil(4 / 2) = 2
    # inferences per runner per round.
    assert log == ["a"] * 3 + ["b"] * 3 + ["a", "a", "b", "b"] * 2
    assert progress == ["batch 1: round 1/2", "batch 1: round 2/2"]
    assert report["reference"] == "a" and report["batch_sizes"] == [1]
    assert report["times_ms"]["1"]["a"] == pytest.approx([10.0] * 4)


def test_each_runners_block_starts_after_the_settle_pause_and_none_by_default():
    clock, log = Clock(), []
    runners = {n: Runner(n, clock, [0.01], log).activate() for n in ("a", "b")}
    compare(runners, IMAGES, [1], warmup_s=0.0, min_duration_s=0.0, min_iterations=2, rounds=2, clock=clock,
            sleep=lambda seconds: log.append(f"sleep {seconds}"), settle_s=0.3)
    assert log == ["a", "b"] + ["sleep 0.3", "a", "sleep 0.3", "b"] * 2  # warm-up, then one per round each
    log.clear()
    compare(runners, IMAGES, [1], warmup_s=0.0, min_duration_s=0.0, min_iterations=2, rounds=1, clock=clock,
            sleep=lambda seconds: log.append(f"sleep {seconds}"))
    assert log == ["a", "b", "a", "a", "b", "b"]


def test_a_round_lasts_its_share_of_the_minimum_duration():
    clock, log = Clock(), []
    runner = Runner("a", clock, [0.25], log).activate()
    report = compare({"a": runner}, IMAGES, [1], warmup_s=0.0, min_duration_s=1.0, min_iterations=1, rounds=2,
                     clock=clock)
    # 0.5 s per round at 0.25 s per inference (binary fractions, so exact): a round stops as soon as 0.5 s
    # have passed, after 2 inferences.
    assert report["results"]["1"]["a"]["iterations"] == 4
    assert report["results"]["1"]["a"]["seconds"] == 1.0


def test_each_runner_gets_its_summary_speedup_and_times():
    clock, log = Clock(), []
    runners = {"ref": Runner("ref", clock, [0.004], log).activate(),
               "fast": Runner("fast", clock, [0.001, 0.001, 0.003], log).activate()}
    report = compare(runners, IMAGES, [2], reference="ref", warmup_s=0.0, min_duration_s=0.0, min_iterations=9,
                     rounds=3, clock=clock)
    # fast's cycle (1, 1, 3 ms) is shifted by its one warm-up inference: each round of 3 times 1, 3, 1 ms,
    # median 1 ms, against ref's 4 ms.
    fast = report["results"]["2"]["fast"]
    assert fast["iterations"] == 9 and fast["seconds"] == pytest.approx(0.015)
    assert fast["throughput_ips"] == pytest.approx(2 * 9 / 0.015)
    assert fast["latency_ms"]["median"] == pytest.approx(1.0) and fast["latency_ms"]["max"] == pytest.approx(3.0)
    assert fast["speedup_vs_reference"] == pytest.approx(4.0)
    assert report["results"]["2"]["ref"]["speedup_vs_reference"] == 1.0
    assert report["times_ms"]["2"]["fast"] == pytest.approx([1.0, 3.0, 1.0, 1.0, 3.0, 1.0, 1.0, 3.0, 1.0])
    assert "phases_ms" not in fast and "warnings" not in fast


def test_round_medians_use_only_that_rounds_times():
    clock, log = Clock(), []
    runners = {"ref": Runner("ref", clock, [0.002], log).activate(),
               "cand": Runner("cand", clock, [0.001, 0.001, 0.001, 0.001, 0.008, 0.008], log).activate()}
    report = compare(runners, IMAGES, [1], warmup_s=0.0, min_duration_s=0.0, min_iterations=4, rounds=2,
                     clock=clock)
    # cand after its warm-up: round 1 (0.001, 0.001), round 2 (0.001, 0.008); per-round medians 1 and 4.5 ms;
    # ratios 2 and 2/4.5: their median is (2 + 0.444) / 2.
    assert report["results"]["1"]["cand"]["speedup_vs_reference"] == pytest.approx((2 + 2 / 4.5) / 2)


def test_phases_are_summarized_with_their_warnings():
    clock, log = Clock(), []
    timings = {"compute": 1.0, "enqueue": 0.9, "h2d": 0.1}
    runner = Runner("a", clock, [0.001], log, timings=timings).activate()
    result = measure(runner, IMAGES, 1, warmup_s=0.0, min_duration_s=0.0, min_iterations=3, clock=clock)
    assert set(result["phases_ms"]) == {"compute", "enqueue", "h2d"}
    assert result["phases_ms"]["enqueue"]["count"] == 3 and result["phases_ms"]["enqueue"]["median"] == 900.0
    assert result["warnings"] == [
        "enqueue-bound: median enqueue 900.000 ms vs compute 1000.000 ms; the GPU may idle between inferences "
        "(try CUDA graphs or larger batches)"]
    assert result["iterations"] == 3


def test_measure_passes_its_settings_and_runs_one_round(monkeypatch):
    seen = {}

    def fake_compare(runners, images, batch_sizes, **kwargs):
        seen.update(runners=runners, batch_sizes=batch_sizes, **kwargs)
        return {"results": {"8": {"x": "the entry"}}}

    monkeypatch.setattr(bench, "compare", fake_compare)
    clock = Clock()
    runner = Runner("x", clock, [0.1], [])
    assert measure(runner, IMAGES, 8, 0.5, 2.0, 7, clock=clock) == "the entry"
    assert seen == {"runners": {"x": runner}, "batch_sizes": [8], "warmup_s": 0.5, "min_duration_s": 2.0,
                    "min_iterations": 7, "rounds": 1, "clock": clock}
    seen.clear()
    measure(runner, IMAGES, 8, clock=clock)
    assert (seen["warmup_s"], seen["min_duration_s"], seen["min_iterations"]) == (0.2, 3.0, 10)


def test_compare_defaults_10_iterations_in_5_rounds():
    clock, log = Clock(), []
    progress = []
    report = compare({"a": Runner("a", clock, [0.0], log).activate()}, IMAGES, [1], warmup_s=0.0, min_duration_s=0.0,
                     progress=progress.append)
    assert report["results"]["1"]["a"]["iterations"] == 10 and len(progress) == 5


def test_compare_default_warm_up_is_0_2_seconds():
    """Real time: an inference sleeps 0.1 s, so 0.2 s of warm-up holds at most 2 (time.sleep never returns early)."""

    class Sleeping(Runner):
        def _infer(self, feed):
            time.sleep(0.1)
            return super()._infer(feed)

    log: list[str] = []
    compare({"a": Sleeping("a", Clock(), [0.0], log).activate()}, IMAGES, [1], min_duration_s=0.0, min_iterations=1,
            rounds=1)
    assert 2 <= len(log) <= 3  # warm-up (1 or 2) and 1 timed


def test_compare_default_duration_and_clock():
    """3 s per batch size would need a real 3 s run to observe: pinned on the signature."""
    parameters = inspect.signature(compare).parameters
    assert parameters["min_duration_s"].default == 3.0 and parameters["clock"].default is time.perf_counter


def test_warm_up_stops_once_its_deadline_is_reached():
    clock, log = Clock(), []
    compare({"a": Runner("a", clock, [0.25], log).activate()}, IMAGES, [1], warmup_s=0.5, min_duration_s=0.0,
            min_iterations=1, rounds=1, clock=clock)
    assert len(log) == 3  # 2 warm-up inferences reach 0.5 s exactly, then 1 timed


def test_an_unknown_reference_is_refused():
    clock = Clock()
    runners = {n: Runner(n, clock, [0.1], []).activate() for n in ("a", "b")}
    with pytest.raises(ArtifactError) as refused:
        compare(runners, IMAGES, [1], reference="c", clock=clock)
    assert str(refused.value) == "reference 'c' is not one of the benchmarked artifacts: a, b"


# --- memory -------------------------------------------------------------------------------------------------

def system_files(monkeypatch, files: dict[str, Path]) -> None:
    """bench's Path("/proc/...") reads `files[path]` instead; any other path is a KeyError."""
    monkeypatch.setattr(bench, "Path", lambda path: files[path])


def test_available_memory_is_memavailable_in_bytes(monkeypatch, tmp_path):
    meminfo = tmp_path / "meminfo"
    system_files(monkeypatch, {"/proc/meminfo": meminfo})

    def with_text(text):
        meminfo.write_text(text)
        return bench.available_memory_bytes()

    assert with_text("MemTotal: 9 kB\nMemAvailable:    2048 kB\nMemFree: 1 kB\n") == 2048 * 1024
    assert with_text("MemTotal: 9 kB\n") is None
    assert with_text("MemAvailable: lots\n") is None
    assert with_text("MemAvailable:\n") is None
    meminfo.unlink()
    assert bench.available_memory_bytes() is None


def test_memory_check_at_the_limit(monkeypatch):
    clock = Clock()
    runners = {"a": Runner("a", clock, [0.1], [], per_image=1024, working=3073),
               "b": Runner("b", clock, [0.1], [], per_image=512, working=1024)}
    needed = 64 * (1024 + 512 + 3073)  # every feed plus the largest working set, at the largest batch
    monkeypatch.setattr(bench, "available_memory_bytes", lambda: needed)
    check_memory(runners, [8, 64, 2])
    monkeypatch.setattr(bench, "available_memory_bytes", lambda: needed - 1)
    with pytest.raises(ResnetDeployError) as refused:
        check_memory(runners, [8, 64, 2])
    assert str(refused.value) == (
        "--batch-sizes 64: needs about 0.0 GiB of memory (5 KiB per image: the inputs of 2 artifact(s) and the "
        "largest one's activations); 0.0 GiB is available; use smaller batch sizes")
    monkeypatch.setattr(bench, "available_memory_bytes", lambda: None)
    check_memory(runners, [10**12])
    monkeypatch.setattr(bench, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(ResnetDeployError, match=r"^--batch-sizes 2000000: needs about 8\.6 GiB .* 1\.0 GiB is "):
        check_memory(runners, [2_000_000])


# --- the machine --------------------------------------------------------------------------------------------

def test_gpu_from_nvidia_smi(monkeypatch):
    calls = []

    def smi(args, **kwargs):
        calls.append((args, kwargs))
        return subprocess.CompletedProcess(args, 0, stdout="NVIDIA H100, 550.1\n\n  A2, 550.1 \n")

    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(bench.subprocess, "run", smi)
    assert bench._gpu() == "NVIDIA H100, 550.1; A2, 550.1"
    assert calls == [(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                      {"capture_output": True, "text": True, "timeout": 10, "check": True})]


def test_gpu_falls_back_to_the_board_model(monkeypatch, tmp_path):
    model = tmp_path / "model"
    model.write_text("NVIDIA Jetson Xavier NX\x00\n")
    system_files(monkeypatch, {"/proc/device-tree/model": model})
    monkeypatch.setattr(bench.shutil, "which", lambda name: "/usr/bin/nvidia-smi")

    def failing(args, **kwargs):
        raise subprocess.CalledProcessError(9, args)

    monkeypatch.setattr(bench.subprocess, "run", failing)
    assert bench._gpu() == "NVIDIA Jetson Xavier NX"
    monkeypatch.setattr(bench.subprocess, "run", lambda args, **kw: subprocess.CompletedProcess(args, 0, " \n"))
    assert bench._gpu() == "NVIDIA Jetson Xavier NX"
    monkeypatch.setattr(bench.shutil, "which", lambda name: None)
    model.write_text("\x00\n")
    assert bench._gpu() is None
    model.unlink()
    assert bench._gpu() is None


def test_fingerprint_fields(monkeypatch, tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: AMD EPYC 7B13: 64-Core\nmodel name\t: other\n")
    system_files(monkeypatch, {"/proc/cpuinfo": cpuinfo})
    monkeypatch.setattr(bench, "_gpu", lambda: "a GPU")
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 7)
    versions = {"onnxruntime": "1.2", "numpy": "1.26.4", "tensorrt": "10.3.0", "torch": "2.0"}

    def version(package):
        if package not in versions:
            raise bench.metadata.PackageNotFoundError(package)
        return versions[package]

    monkeypatch.setattr(bench.metadata, "version", version)
    machine = bench.fingerprint()
    assert machine["cpu"] == "AMD EPYC 7B13: 64-Core" and machine["cores"] == 7 and machine["gpu"] == "a GPU"
    assert machine["versions"] == versions
    assert list(machine["versions"]) == ["onnxruntime", "torch", "tensorrt", "numpy"]
    del versions["torch"]
    assert list(bench.fingerprint()["versions"]) == ["onnxruntime", "tensorrt", "numpy"]
    assert machine["os"] == f"{bench.platform.system()} {bench.platform.release()}"
    assert machine["python"] == bench.platform.python_version()
    cpuinfo.write_text("processor\t: 0\n")
    monkeypatch.setattr(bench.platform, "processor", lambda: "")
    monkeypatch.setattr(bench.platform, "machine", lambda: "aarch64")
    assert bench.fingerprint()["cpu"] == "aarch64"
    monkeypatch.setattr(bench.platform, "processor", lambda: "x86_64")
    cpuinfo.unlink()
    assert bench.fingerprint()["cpu"] == "x86_64"


MACHINE = {"cpu": "EPYC", "isa": ["avx2", "fma"], "cores": 2, "gpu": None, "os": "Linux 6", "python": "3.11.7",
           "versions": {"onnxruntime": "1.17.3", "numpy": "1.26.4"}}


def jetson(locked=True, model="Orin", l4t="36.4.3", mode=0):
    return {**MACHINE, "jetson": {"model": model, "l4t": l4t, "power_mode": {"id": mode, "name": "MAXN"},
                                  "clocks": {"locked": locked}}}


def test_machine_difference_of_each_field():
    assert machine_difference(MACHINE, dict(MACHINE)) is None
    assert machine_difference(MACHINE, {**MACHINE, "os": "Linux 7", "python": "3.12"}) is None  # not compared
    assert machine_difference(MACHINE, {**MACHINE, "cpu": "Xeon"}) == "cpu 'EPYC' here, 'Xeon' in the baseline"
    assert machine_difference(MACHINE, {**MACHINE, "gpu": "A2"}) == "gpu None here, 'A2' in the baseline"
    assert machine_difference(MACHINE, {**MACHINE, "isa": ["avx2", "fma", "avx512f"]}) == (
        "isa ['avx2', 'fma'] here, ['avx2', 'fma', 'avx512f'] in the baseline")
    assert machine_difference({**MACHINE, "cpu": "Xeon", "cores": 4}, MACHINE) == (
        "cpu 'Xeon' here, 'EPYC' in the baseline")  # the first difference
    assert machine_difference(MACHINE, {k: v for k, v in MACHINE.items() if k != "versions"}) == (
        "versions {'onnxruntime': '1.17.3', 'numpy': '1.26.4'} here, None in the baseline")
    other = {**MACHINE, "versions": {"onnxruntime": "1.18.0", "numpy": "1.26.4", "torch": "2.1"}}
    assert machine_difference(MACHINE, other) == ("onnxruntime 1.17.3 here, 1.18.0 in the baseline; "
                                                  "torch absent here, 2.1 in the baseline")
    assert machine_difference(other, MACHINE) == ("onnxruntime 1.18.0 here, 1.17.3 in the baseline; "
                                                  "torch 2.1 here, absent in the baseline")
    assert same_machine(MACHINE, dict(MACHINE)) is True and same_machine(MACHINE, other) is False


def test_hardware_difference_ignores_versions_and_clocks():
    newer = {**MACHINE, "versions": {"onnxruntime": "1.18.0"}, "os": "Linux 7"}
    assert hardware_difference(MACHINE, newer) is None and machine_difference(MACHINE, newer) is not None
    assert hardware_difference(jetson(locked=False), jetson()) is None
    assert hardware_difference(jetson(), jetson(mode=2)) == "another Jetson board, L4T release or power mode"
    assert hardware_difference(MACHINE, jetson()) == "another Jetson board, L4T release or power mode"
    assert hardware_difference(MACHINE, {**MACHINE, "isa": []}) == "isa ['avx2', 'fma'] here, [] in the baseline"
    assert hardware_difference({**MACHINE, "cores": 4}, MACHINE) == "cores 4 here, 2 in the baseline"
    assert hardware_difference(MACHINE, {**MACHINE, "cpu": "Xeon"}) == "cpu 'EPYC' here, 'Xeon' in the baseline"


def test_machine_difference_on_a_jetson():
    assert machine_difference(jetson(), jetson()) is None
    assert machine_difference(jetson(locked=False), jetson()) == "Jetson clocks are not locked"
    assert machine_difference(jetson(), jetson(locked=False)) == "Jetson clocks are not locked"
    assert machine_difference(jetson(locked=None), jetson(locked=None)) == "Jetson clocks are not locked"
    for other in (jetson(model="Xavier"), jetson(l4t="36.3.0"), jetson(mode=2), MACHINE):
        assert machine_difference(jetson(), other) == "another Jetson board, L4T release or power mode"
    assert machine_difference(MACHINE, jetson()) == "another Jetson board, L4T release or power mode"
    assert machine_difference({**jetson(), "cores": 6}, jetson()) == "cores 6 here, 2 in the baseline"


# --- the baseline gate --------------------------------------------------------------------------------------

def report_of(speedups: dict[str, float], medians: dict[str, float], machine=MACHINE, bs: str = "1") -> dict:
    results = {label: {"speedup_vs_reference": s, "latency_ms": {"median": medians[label]}}
               for label, s in speedups.items()}
    return {"reference": "ref", "results": {bs: results}, "fingerprint": machine}


BASE = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 4.0, "fast": 2.0, "slow": 8.0})


def test_make_baseline_keeps_speedups_medians_reference_and_machine():
    assert make_baseline(BASE) == {
        "reference": "ref", "fingerprint": MACHINE,
        "speedup_vs_reference": {"1": {"ref": 1.0, "fast": 2.0, "slow": 0.5}},
        "median_ms": {"1": {"ref": 4.0, "fast": 2.0, "slow": 8.0}},
    }


def checks_of(report, pct, median_pct=None):
    return {(c["label"], c["metric"]): c for c in check_baseline(report, make_baseline(BASE), pct, median_pct)}


def test_check_baseline_records_every_check_with_its_threshold():
    report = report_of({"ref": 1.0, "fast": 1.5, "slow": 0.5}, {"ref": 4.0, "fast": 2.5, "slow": 10.0})
    checks = checks_of(report, 20.0)
    assert list(checks) == [("fast", "speedup_vs_reference"), ("slow", "speedup_vs_reference"),
                            ("ref", "median_ms"), ("fast", "median_ms"), ("slow", "median_ms")]
    assert checks["fast", "speedup_vs_reference"] == {
        "batch_size": 1, "label": "fast", "metric": "speedup_vs_reference", "baseline": 2.0, "measured": 1.5,
        "threshold": pytest.approx(1.6), "passed": False}
    assert checks["slow", "speedup_vs_reference"]["passed"] is True
    assert checks["slow", "median_ms"] == {
        "batch_size": 1, "label": "slow", "metric": "median_ms", "baseline": 8.0, "measured": 10.0,
        "threshold": pytest.approx(10.0), "passed": True}
    assert checks["fast", "median_ms"]["threshold"] == pytest.approx(2.5) and checks["fast", "median_ms"]["passed"]
    assert checks["ref", "median_ms"]["passed"] is True


@pytest.mark.parametrize("pct", [10.0, 30.0])
def test_speedup_limit_just_inside_and_outside(pct):
    keep = 1 - pct / 100
    for factor, passed in ((1 + 1e-9, True), (1 - 1e-9, False)):
        report = report_of({"ref": 1.0, "fast": 2.0 * keep * factor, "slow": 0.5}, {"ref": 4.0, "fast": 2, "slow": 8})
        assert checks_of(report, pct)["fast", "speedup_vs_reference"]["passed"] is passed


@pytest.mark.parametrize("pct, median_pct", [(10.0, None), (10.0, 40.0), (30.0, 5.0)])
def test_median_limit_just_inside_and_outside(pct, median_pct):
    keep = 1 - (pct if median_pct is None else median_pct) / 100
    for factor, passed in ((1 - 1e-9, True), (1 + 1e-9, False)):
        report = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 4.0, "fast": 2.0 / keep * factor, "slow": 8})
        check = checks_of(report, pct, median_pct)["fast", "median_ms"]
        assert check["passed"] is passed and check["threshold"] == pytest.approx(2.0 / keep)
    speed = checks_of(report, pct, median_pct)["fast", "speedup_vs_reference"]
    assert speed["threshold"] == pytest.approx(2.0 * (1 - pct / 100))


def test_only_what_the_run_measured_is_checked_and_medians_only_on_the_same_machine():
    report = report_of({"ref": 1.0, "fast": 2.0}, {"ref": 4.0, "fast": 2.0}, bs="1")
    assert list(checks_of(report, 10)) == [("fast", "speedup_vs_reference"), ("ref", "median_ms"),
                                           ("fast", "median_ms")]
    elsewhere = report_of({"ref": 1.0, "fast": 2.0}, {"ref": 4.0, "fast": 2.0}, machine={**MACHINE, "cores": 3})
    assert list(checks_of(elsewhere, 10)) == [("fast", "speedup_vs_reference")]
    other_batch = report_of({"ref": 1.0, "fast": 2.0}, {"ref": 4.0, "fast": 2.0}, bs="8")
    assert checks_of(other_batch, 10) == {}
    baseline = make_baseline(BASE)
    baseline["reference"] = "fast"  # the baseline's reference is never gated against itself
    assert [c["label"] for c in check_baseline(BASE, baseline, 10) if c["metric"] == "speedup_vs_reference"] == [
        "ref", "slow"]


def test_absolute_skip_reasons():
    baseline = make_baseline(BASE)
    assert absolute_skip_reason(BASE, baseline) is None
    assert absolute_skip_reason(BASE, {**baseline, "median_ms": {}}) == "the baseline records no medians"
    assert absolute_skip_reason(BASE, {k: v for k, v in baseline.items() if k != "median_ms"}) == (
        "the baseline records no medians")
    no_machine = {k: v for k, v in baseline.items() if k != "fingerprint"}
    assert absolute_skip_reason(BASE, no_machine) == "cpu 'EPYC' here, None in the baseline"


def test_read_baseline(tmp_path):
    path = tmp_path / "b.json"
    with pytest.raises(ArtifactError) as refused:
        read_baseline(path)
    assert str(refused.value) == f"{path}: no latency baseline yet; record one with --update-baseline"
    path.write_text(json.dumps(make_baseline(BASE)))
    assert read_baseline(str(path)) == make_baseline(BASE)
    path.write_text(json.dumps({**make_baseline(BASE), "speedup_vs_reference": {"1": {"fast": "quick"}}}))
    with pytest.raises(ArtifactError, match=r"b\.json: not a valid latency baseline: "):
        read_baseline(path)
    path.write_text("{")
    with pytest.raises(ArtifactError, match=r"b\.json: latency baseline is not valid JSON: "):
        read_baseline(path)


@pytest.mark.parametrize("value, ci", [("true", True), (" TRUE ", True), ("True", True), ("1", False),
                                       ("", False), (None, False), ("false", False)])
def test_running_in_ci(monkeypatch, value, ci):
    if value is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", value)
    assert bench.running_in_ci() is ci


def write_baseline(tmp_path: Path, **changes) -> Path:
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps({**make_baseline(BASE), **changes}))
    return path


def test_update_writes_the_baseline_and_checks_nothing(tmp_path):
    path = tmp_path / "new" / "baseline.json"
    path.parent.mkdir()
    report = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 4.0, "fast": 2.0, "slow": 8.0})
    apply_baseline_gate(report, str(path), 10, update=True)
    assert json.loads(path.read_text()) == make_baseline(BASE) and "baseline" not in report
    assert sorted(p.name for p in path.parent.iterdir()) == ["baseline.json"]


def test_a_passing_gate_records_its_checks(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    path = write_baseline(tmp_path)
    report = report_of({"ref": 1.0, "fast": 1.9, "slow": 0.5}, {"ref": 4.0, "fast": 2.1, "slow": 8.0})
    apply_baseline_gate(report, path, 10)
    assert report["baseline"] == {
        "path": str(path), "max_regression_pct": 10, "max_median_regression_pct": 10,
        "checks": check_baseline(report, make_baseline(BASE), 10), "same_machine": True, "absolute_skipped": None}
    assert "machine_warnings" not in report
    apply_baseline_gate(report, path, 10, max_median_regression_pct=4.0 + 1.0)
    assert report["baseline"]["max_median_regression_pct"] == 5.0


def test_a_failing_gate_names_each_regression_and_the_limits(tmp_path):
    path = write_baseline(tmp_path)
    report = report_of({"ref": 1.0, "fast": 1.5, "slow": 0.25}, {"ref": 4.0, "fast": 2.0, "slow": 9.0})
    with pytest.raises(GateFailed) as failed:
        apply_baseline_gate(report, path, 10)
    assert str(failed.value) == (
        "latency regression: fast batch 1 speedup_vs_reference 1.5 vs baseline 2; slow batch 1 "
        "speedup_vs_reference 0.25 vs baseline 0.5; slow batch 1 median_ms 9 vs baseline 8 (allowed 10%)")
    assert [c["passed"] for c in report["baseline"]["checks"]] == [False, False, True, True, False]
    with pytest.raises(GateFailed) as failed:
        apply_baseline_gate(report, path, 10, max_median_regression_pct=11)
    assert str(failed.value).endswith("; slow batch 1 median_ms 9 vs baseline 8 (allowed 10%, medians 11%)")
    with pytest.raises(GateFailed) as failed:
        apply_baseline_gate(report, path, 10, max_median_regression_pct=10.0)
    assert str(failed.value).endswith(" (allowed 10%)")


def test_the_median_limit_alone_lets_a_median_through(tmp_path):
    """Medians 12.5% slower fail --max-regression 10 but pass --max-median-regression 20; speedups keep 10%."""
    path = write_baseline(tmp_path)
    slower = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 4.5, "fast": 2.25, "slow": 9.0})
    apply_baseline_gate(slower, path, 10, max_median_regression_pct=20)
    assert all(c["passed"] for c in slower["baseline"]["checks"]) and len(slower["baseline"]["checks"]) == 5
    with pytest.raises(GateFailed, match=r"ref batch 1 median_ms 4\.5 vs baseline 4; "):
        apply_baseline_gate(slower, path, 10)
    with pytest.raises(GateFailed, match=r"^latency regression: fast batch 1 speedup_vs_reference 1\.7 vs baseline 2 "
                                         r"\(allowed 10%, medians 20%\)$"):
        apply_baseline_gate(report_of({"ref": 1.0, "fast": 1.7, "slow": 0.5}, {"ref": 4.5, "fast": 2.25, "slow": 9.0}),
                            path, 10, max_median_regression_pct=20)


def test_a_baseline_of_medians_only_checks_medians():
    baseline = {k: v for k, v in make_baseline(BASE).items() if k != "speedup_vs_reference"}
    checks = check_baseline(BASE, baseline, 10)
    assert [(c["label"], c["metric"], c["passed"]) for c in checks] == [
        ("ref", "median_ms", True), ("fast", "median_ms", True), ("slow", "median_ms", True)]


def test_on_another_machine_only_speedups_are_gated_with_a_note_even_under_ci(tmp_path, monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    path = write_baseline(tmp_path, fingerprint={**MACHINE, "gpu": "A2"})
    report = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 40.0, "fast": 20.0, "slow": 80.0})
    report["machine_warnings"] = ["earlier"]
    apply_baseline_gate(report, path, 10)
    why = "gpu None here, 'A2' in the baseline"
    note = (f"absolute medians not compared with {path}: {why}; only the speedups are gated (reduced-precision "
            "speedups depend on the ISA and GPU: record a baseline per machine kind)")
    assert report["baseline"]["absolute_skipped"] == why and report["baseline"]["same_machine"] is False
    assert report["machine_warnings"] == ["earlier", note]
    monkeypatch.setenv("CI", "true")
    fresh = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 40.0, "fast": 20.0, "slow": 80.0})
    apply_baseline_gate(fresh, path, 10)  # a CI runner of another kind: the speedups are its gate
    assert fresh["machine_warnings"] == [note]
    with pytest.raises(GateFailed, match=r"^latency regression: fast batch 1 speedup_vs_reference 1\.7 vs baseline 2 "):
        apply_baseline_gate(report_of({"ref": 1.0, "fast": 1.7, "slow": 0.5}, {"ref": 4.0, "fast": 2.0, "slow": 8.0}),
                            path, 10)


def test_under_ci_other_runtime_versions_fail_the_skipped_median_check(tmp_path, monkeypatch):
    path = write_baseline(tmp_path, fingerprint={**MACHINE, "versions": {**MACHINE["versions"], "onnxruntime": "0.1"}})
    monkeypatch.setenv("CI", "true")
    fresh = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 40.0, "fast": 20.0, "slow": 80.0})
    with pytest.raises(GateFailed) as failed:
        apply_baseline_gate(fresh, path, 10)
    why = f"onnxruntime {MACHINE['versions']['onnxruntime']} here, 0.1 in the baseline"
    assert str(failed.value) == (
        f"latency regression: absolute medians not compared ({why}) and CI=true needs every check to run: "
        "record the baseline on this machine kind with --update-baseline (allowed 10%)")
    assert fresh["machine_warnings"] == [
        f"absolute medians not compared with {path}: {why}; only the speedups are gated"]


def test_the_baseline_must_have_the_runs_reference_and_artifacts(tmp_path):
    report = report_of({"ref": 1.0, "fast": 2.0, "slow": 0.5}, {"ref": 4.0, "fast": 2.0, "slow": 8.0})
    path = write_baseline(tmp_path, reference="fast")
    with pytest.raises(ArtifactError) as refused:
        apply_baseline_gate(report, path, 10)
    assert str(refused.value) == (f"{path}: baseline reference is 'fast', this run's is 'ref'; pass --reference or "
                                  "--update-baseline")
    path = write_baseline(tmp_path, speedup_vs_reference={"1": {"ref": 1.0, "gone": 2.0}, "4": {"ref": 1.0}})
    with pytest.raises(ArtifactError) as refused:
        apply_baseline_gate(report, path, 10)
    assert str(refused.value) == (f"{path}: this run did not measure gone at batch 1, ref at batch 4; benchmark the "
                                  "same artifacts and batch sizes or pass --update-baseline")
    path = write_baseline(tmp_path, speedup_vs_reference={})
    with pytest.raises(ArtifactError) as refused:
        apply_baseline_gate(report, path, 10)
    assert str(refused.value) == (f"{path}: this run did not measure anything the baseline has; benchmark the "
                                  "same artifacts and batch sizes or pass --update-baseline")
