"""benchmarks/serve_batching.py: medians over rounds, the goals it checks and its table (no server)."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "serve_batching.py"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("tritonclient.grpc", reason="serve extra not installed")
    spec = importlib.util.spec_from_file_location("serve_batching", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(label, protocol, concurrency, images_per_s, p99, round_index=1):
    return {"round": round_index, "label": label, "protocol": protocol, "concurrency": concurrency,
            "images_per_s": images_per_s, "failed": 0, "server": {"avg_batch": 3.0},
            "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99}}


def _report(bench, batched_16, failed=0, mismatches=0):
    runs = [_run(label, "grpc", c, ips, 10.0, r) for r in (1, 2) for label, c, ips in
            [("dynamic batching", 1, 300), ("dynamic batching", 16, batched_16 + r), ("no batching", 1, 300),
             ("no batching", 16, 400 + r)]]
    report = {"runs": runs, "onnx": "m.onnx", "summary": bench.summarize(runs, ["grpc"], [1, 16]),
              "soak": {"duration_s": 60.0, "concurrency": 8, "sent": 100 + failed, "answered": 100, "failed": failed,
                       "images_per_s": 500.0, "latency_ms": {"p99": 20.0}},
              "accuracy": {"local_top1": 0.9, "m": {"top1": 0.9, "mismatches_vs_local": mismatches}},
              "fingerprint": {"versions": {"onnxruntime": "1.32.0"}, "cpu": "cpu", "cores": 2},
              "load_average_before": (1.0, 1.0, 1.0), "load_average_after": (1.0, 1.0, 1.0),
              "settings": {"duration_s": 10, "rounds": 2}}
    report["goals"] = bench.goals(report)
    return report


def test_medians_over_rounds(bench):
    summary = _report(bench, 1000)["summary"]
    row = next(r for r in summary if (r["label"], r["concurrency"]) == ("dynamic batching", 16))
    assert row["images_per_s"] == 1001.5 and row["latency_ms"]["p99"] == 10.0 and row["avg_batch"] == 3.0


@pytest.mark.parametrize("batched_16, failed, mismatches, met", [
    (1000, 0, 0, [True, True, True]),
    (700, 0, 0, [False, True, True]),
    (1000, 1, 0, [True, False, True]),
    (1000, 0, 2, [True, True, False]),
])
def test_goals(bench, batched_16, failed, mismatches, met):
    report = _report(bench, batched_16, failed, mismatches)
    assert [goal["met"] for goal in report["goals"]] == met
    table = bench.markdown(report)
    assert "| dynamic batching | grpc | 16 |" in table and ("| NO |" in table) == (not all(met))
