"""benchmarks/batch1.py on an untrained width-0.125 model: every variant in one interleaved run, ratios and
overheads computed from that run's own numbers, and the trace arithmetic on synthetic traces."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from tests.benchmark_scripts import load_benchmark

pytestmark = pytest.mark.slow

RUNS = 5


@pytest.fixture(scope="module")
def batch1():
    return load_benchmark("batch1")


@pytest.fixture(scope="module")
def run(batch1, data_dir, tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench-batch1")
    args = ["--width", "0.125", "--duration-s", "0.05", "--profile-runs", str(RUNS), "--settle-s", "0"]
    assert batch1.main([*args, "--threads", "1", "--data-dir", str(data_dir), "--out-dir", str(out)]) == 0
    (path,) = out.glob("batch1-*.json")
    assert path.name == "batch1-resnet18-w0.125-untrained.json"
    return json.loads(path.read_text()), (out / f"{path.stem}.md").read_text()


def test_every_variant_is_measured_with_the_machine(run, batch1):
    report, _ = run
    graphs = ("onnxruntime fp32", "onnxruntime int8 (CPU target)")
    expected = [f"{kind} [{variant}]" for kind in graphs for variant in batch1.ORT_VARIANTS]
    expected += [f"{batch1.FLOOR} [{variant}]" for variant in batch1.PROFILED_ORT]
    expected += [f"pytorch eager [{variant}]" for variant in batch1.EAGER_VARIANTS]
    assert [row["runner"] for row in report["variants"]] == expected
    assert all(0 < row["p50_us"] <= row["p99_us"] and row["iterations"] >= 10 for row in report["variants"])
    assert report["fingerprint"]["versions"]["onnxruntime"] and isinstance(report["fingerprint"]["isa"], list)
    assert report["threads"] == 1 and report["eager_default_threads"] == 1 and report["batch"] == 1


def test_ratios_come_from_this_runs_medians(run, batch1):
    report, _ = run
    rows = {row["runner"]: row for row in report["variants"]}
    eager = rows[batch1.EAGER]["p50_us"]
    for row in report["variants"]:
        assert row["vs_eager"] == pytest.approx(eager / row["p50_us"], rel=1e-9)
    assert rows[batch1.EAGER]["vs_eager"] == 1.0 and rows[batch1.REFERENCE]["vs_ort_fp32_default"] == 1.0
    assert [(g["runner"], g["wanted"]) for g in report["goals"]] == [
        ("onnxruntime fp32 [default]", ">= 10x"),
        ("onnxruntime fp32 [1 thread, I/O binding]", ">= 10x"),
        ("onnxruntime int8 (CPU target) [default]", ">= 15x"),
        ("onnxruntime int8 (CPU target) [1 thread, I/O binding]", ">= 15x"),
    ]
    for goal in report["goals"]:
        ratio = rows[goal["runner"]]["vs_eager"]
        assert goal["measured"] == f"{ratio:.2f}x"
        assert goal["met"] == (ratio >= float(goal["wanted"].removeprefix(">= ").removesuffix("x")))


def test_profiles_split_wall_into_kernels_and_overhead(run):
    report, _ = run
    profiles = report["profiles"]
    assert list(profiles) == [
        "onnxruntime fp32 [default]",
        "onnxruntime fp32 [1 thread, I/O binding]",
        "onnxruntime int8 (CPU target) [default]",
        "onnxruntime int8 (CPU target) [1 thread, I/O binding]",
        "pytorch eager [default]",
        "pytorch eager [1 thread]",
    ]
    for label, p in profiles.items():
        assert p["runs"] == RUNS and p["kernels_p50_us"] > 0 and p["unprofiled_wall_p50_us"] > 0
        assert p["overhead_us"] == pytest.approx(p["wall_p50_us"] - p["kernels_p50_us"], abs=1e-9)
        ops = list(p["top_ops_us"].values())
        assert ops == sorted(ops, reverse=True) and 0 < len(ops) <= 6
        assert ("session_run_p50_us" in p) == label.startswith("onnxruntime")
    assert "Conv" in profiles["onnxruntime fp32 [default]"]["top_ops_us"]
    assert "QLinearConv" in profiles["onnxruntime int8 (CPU target) [default]"]["top_ops_us"]
    assert any("conv" in op for op in profiles["pytorch eager [1 thread]"]["top_ops_us"])
    assert profiles["pytorch eager [1 thread]"]["top_nodes_us"] == {}


def test_markdown_shows_the_json_figures(run):
    report, table = run
    assert table.startswith("Model resnet18-w0.125-untrained, batch 1")
    for row in report["variants"]:
        assert f"| {row['runner']} | {row['p50_us']:.0f} | {row['p99_us']:.0f} | {row['vs_eager']:.2f}x |" in table
    fp32 = report["profiles"]["onnxruntime fp32 [default]"]
    assert f"| onnxruntime fp32 [default] | {fp32['wall_p50_us']:.0f} | {fp32['kernels_p50_us']:.0f} |" in table
    assert table.count("| no |") + table.count("| yes |") == len(report["goals"])


def test_split_trace_keeps_the_last_runs_and_their_nodes(batch1):
    def node(name, op, ts, dur):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    trace = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 50},  # warm-up, dropped
        node("conv1", "Conv", 5, 40),
        {"cat": "Session", "name": "model_run", "ts": 100, "dur": 30},
        node("conv1", "Conv", 101, 10),
        node("fc", "Gemm", 112, 4),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 40},
        node("conv1", "Conv", 202, 20),
        node("fc", "Gemm", 225, 6),
        node("late", "Conv", 300, 99),  # after every run
    ]
    runs, kernels, nodes, ops = batch1.split_trace(trace, 2)
    assert runs == [30, 40] and kernels == [14, 26]
    assert nodes == {"conv1": 15.0, "fc": 5.0} and ops == {"Conv": 15.0, "Gemm": 5.0}


def test_split_events_sums_self_times_per_marked_run(batch1):
    def event(name, start, end, self_us):
        return SimpleNamespace(name=name, time_range=SimpleNamespace(start=start, end=end), self_cpu_time_total=self_us)

    events = [
        event("run", 0, 100, 10),
        event("aten::conv2d", 5, 60, 5),
        event("aten::_slow_conv2d_forward", 6, 59, 50),
        event("run", 200, 300, 20),
        event("aten::conv2d", 210, 280, 7),
        event("aten::_slow_conv2d_forward", 211, 279, 60),
        event("aten::empty", 400, 401, 1),  # outside any run
    ]
    kernels, ops = batch1.split_events(events, "run")
    assert kernels == [55, 67]
    assert ops == {"aten::conv2d": 6.0, "aten::_slow_conv2d_forward": 55.0}


def test_bound_runner_matches_the_plain_runner_and_returns_copies(batch1, untrained_onnx, data_dir):
    from resnet_deploy import data
    from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner

    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:3])
    with (
        OnnxRuntimeRunner(untrained_onnx, ["CPUExecutionProvider"], 1) as plain,
        batch1.BoundRunner(untrained_onnx, ["CPUExecutionProvider"], 1) as bound,
    ):
        first = bound.infer({"input": images[:1]})["logits"]
        second = bound.infer({"input": images[1:2]})["logits"]
        both = bound.infer({"input": images[:2]})["logits"]  # a new shape: bound again
        np.testing.assert_array_equal(first, plain.infer({"input": images[:1]})["logits"])
        np.testing.assert_array_equal(second, plain.infer({"input": images[1:2]})["logits"])
        np.testing.assert_array_equal(both, plain.infer({"input": images[:2]})["logits"])
    assert not np.array_equal(first, second) and both.shape == (2, 10)


def test_bad_input_exits_2_naming_the_option(batch1, tmp_path, capsys):
    with pytest.raises(SystemExit) as missing:
        batch1.main(["--cpu-int8", str(tmp_path / "absent.onnx")])
    assert (
        missing.value.code == 2 and f"--cpu-int8 {tmp_path / 'absent.onnx'}: file not found" in capsys.readouterr().err
    )
    with pytest.raises(SystemExit) as zero:
        batch1.main(["--profile-runs", "0"])
    assert zero.value.code == 2 and "--profile-runs >= 1" in capsys.readouterr().err
