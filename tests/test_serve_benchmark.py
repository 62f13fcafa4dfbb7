"""benchmarks/serve_batching.py: medians over rounds, the goals it checks and its table (no server)."""

import pytest

from tests.benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("tritonclient.grpc", reason="serve extra not installed")
    return load_benchmark("serve_batching")


def _run(label, protocol, concurrency, images_per_s, p99, round_index=1):
    return {"round": round_index, "label": label, "protocol": protocol, "concurrency": concurrency,
            "images_per_s": images_per_s, "failed": 0, "server": {"avg_batch": 3.0},
            "latency_ms": {"p50": p99 / 2, "p95": p99 * 0.9, "p99": p99}}


def _report(bench, batched_16, failed=0, mismatches=0, local=1800.0):
    runs = [_run(label, "grpc", c, ips, 10.0, r) for r in (1, 2) for label, c, ips in
            [("dynamic batching", 1, 300), ("dynamic batching", 16, batched_16 + r), ("no batching", 1, 300),
             ("no batching", 16, 400 + r)]]
    report = {"runs": runs, "onnx": "m.onnx", "summary": bench.summarize(runs, ["grpc"], [1, 16]),
              "soak": {"duration_s": 60.0, "concurrency": 8, "sent": 100 + failed, "answered": 100, "failed": failed,
                       "images_per_s": 500.0, "latency_ms": {"p99": 20.0}},
              "accuracy": {"local_top1": 0.9, "m": {"top1": 0.9, "mismatches_vs_local": mismatches}},
              "fingerprint": {"versions": {"onnxruntime": "1.32.0"}, "cpu": "cpu", "cores": 2},
              "local": {"3": {"images_per_s": local}},  # the batcher formed batches of 3
              "load_average_before": (1.0, 1.0, 1.0), "load_average_after": (1.0, 1.0, 1.0),
              "settings": {"duration_s": 10, "rounds": 2}}
    report["goals"] = bench.goals(report)
    return report


def test_medians_over_rounds(bench):
    summary = _report(bench, 1000)["summary"]
    row = next(r for r in summary if (r["label"], r["concurrency"]) == ("dynamic batching", 16))
    assert row["images_per_s"] == 1001.5 and row["latency_ms"]["p99"] == 10.0 and row["avg_batch"] == 3.0


@pytest.mark.parametrize("batched_16, failed, mismatches, local, met", [
    (1000, 0, 0, 1800, [True, True, True, True]),
    (700, 0, 0, 1400, [False, True, True, True]),
    (1000, 1, 0, 1800, [True, True, False, True]),
    (1000, 0, 2, 1800, [True, True, True, False]),
    (1000, 0, 0, 2003, [True, True, True, True]),  # 1001.5 / 2003 = 50.0%
    (1000, 0, 0, 2004, [True, False, True, True]),
])
def test_goals(bench, batched_16, failed, mismatches, local, met):
    report = _report(bench, batched_16, failed, mismatches, local)
    assert [goal["met"] for goal in report["goals"]] == met
    assert "of the local runner's at the batch formed (3)" in report["goals"][1]["goal"]
    table = bench.markdown(report)
    assert "| dynamic batching | grpc | 16 |" in table and ("| NO |" in table) == (not all(met))


def test_concurrency_without_the_goals_one_is_refused(bench, capsys):
    with pytest.raises(SystemExit) as exit_info:
        bench.main(["--onnx", "m.onnx", "--concurrency", "1,8"])
    assert exit_info.value.code == 2
    assert "--concurrency must include 16" in capsys.readouterr().err
