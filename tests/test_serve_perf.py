"""benchmarks/serve_perf.py: perf_analyzer's CSV, the per-request breakdown, medians and goals (no server), and
one short real perf_analyzer run against a served tiny model where tools/perf_analyzer.sh has installed it."""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.benchmark_scripts import load_benchmark
from tests.serving import require_serving

# perf_analyzer 2.41.0 `-f X --verbose-csv`, resnet18-w0.0625 served with --threads 1, gRPC, concurrency 16
GRPC_CSV = """\
Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,\
Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,\
Avg latency,request/response,response wait
16,1306.54,4,1444,4831,111,5263,576,1,11595,17354,19568,24466,12233,5,12215
"""
ROOT = Path(__file__).resolve().parents[1]
PERF_ANALYZER = ROOT / ".cache" / "perf-analyzer" / "bin" / "perf_analyzer"


@pytest.fixture(scope="module")
def bench():
    pytest.importorskip("tritonclient.http", reason="serve extra not installed")
    return load_benchmark("serve_perf")


def _row(bench, infer_per_s=1306.54, avg_batch=6.9, label="a", concurrency=16):
    row = {**bench.parse_csv(GRPC_CSV), "infer_per_s": infer_per_s, "avg_batch": avg_batch}
    return {"round": 1, "label": label, "protocol": "grpc", "concurrency": concurrency, **row}


def test_csv_columns_by_name(bench):
    row = bench.parse_csv(GRPC_CSV)
    assert row == {"infer_per_s": 1306.54, "client_send": 4, "client_recv": 1, "network": 1444, "queue": 4831,
                   "compute_input": 111, "compute_infer": 5263, "compute_output": 576, "avg_latency": 12233,
                   "p50": 11595, "p99": 24466}


def test_breakdown_splits_compute_into_hop_and_runner(bench):
    [summary] = bench.summarize([_row(bench)])
    result = bench.breakdown(summary, {"7": 2800.0})  # batch 6.9 rounds to 7: 2.5 ms per batch locally
    phases = result["phases_us"]
    assert summary["batch"] == 7
    assert phases == pytest.approx({"client": 5, "network": 1444, "queue": 4831, "runner": 2500.0,
                                    "pytriton_hop": 111 + 5263 + 576 - 2500.0})
    # nothing lost or counted twice: the phases add up to perf_analyzer's components (12230 us; its mean 12233)
    assert sum(phases.values()) == pytest.approx(4 + 1 + 1444 + 4831 + 111 + 5263 + 576)
    assert result["local_share"] == pytest.approx(1306.54 / 2800)


def test_breakdown_without_a_local_figure_keeps_compute_in_the_hop(bench):
    [summary] = bench.summarize([_row(bench, avg_batch=1.2, concurrency=1)])
    result = bench.breakdown(summary, {"7": 2800.0})
    assert result["phases_us"]["runner"] is None and result["local_share"] is None
    assert result["phases_us"]["pytriton_hop"] == 111 + 5263 + 576


def test_medians_over_rounds_leave_failed_runs_out(bench):
    runs = [_row(bench, 1000, 6.0), _row(bench, 1200, 8.0), _row(bench, 1100, 7.0),
            {"round": 4, "label": "a", "protocol": "grpc", "concurrency": 16, "error": ["Failed to obtain stable"]}]
    [row] = bench.summarize(runs)
    assert (row["infer_per_s"], row["avg_batch"], row["batch"], row["rounds"]) == (1100, 7.0, 7, 3)


@pytest.mark.parametrize("served, met", [(1400.0, True), (1399.0, False)])
def test_goal_at_half_the_local_throughput(bench, served, met):
    rows = [bench.breakdown(bench.summarize([_row(bench, served, 7.0)])[0], {"7": 2800.0}),
            bench.breakdown(bench.summarize([_row(bench, 50.0, 1.0, concurrency=1)])[0], {"7": 2800.0})]
    [goal] = bench.goals(rows)  # concurrency 1 is reported, not a goal
    assert goal["met"] is met and "batch formed (7)" in goal["goal"]


def test_variant_environment_and_options(bench):
    variant = bench.parse_variant("store, 2 instances|PYTRITON_NO_TENSORSTORE= A_B=1 --instances 2 --threads 1")
    assert variant == {"label": "store, 2 instances", "env": {"PYTRITON_NO_TENSORSTORE": "", "A_B": "1"},
                       "options": ["--instances", "2", "--threads", "1"]}
    assert bench.parse_variant("|--instances 2")["label"] == "--instances 2"


def test_profile_samples_by_process_and_kind(bench):
    serve = 'process 10:"python -m resnet_deploy serve m.onnx"'
    stub = 'process 12:"/ws/backends/python/triton_python_backend_stub model.py"'
    collapsed = "\n".join([
        f"{serve};_bootstrap (threading.py:1);InstanceCallable.__call__ (inference.py:1);Session.run (ort.py:406) 7",
        f"{serve};{stub};TritonPythonModel.execute (model.py:1);BaseProxy._callmethod (managers.py:1) 2",
        f"{serve};run_forever (base_events.py:1);EpollSelector.select (selectors.py:468) 3",
        f"{serve};handle (x.py:1);Socket.send (zmq/sugar/socket.py:713) 1",
        f"{serve};other (x.py:1) 1",
    ])
    result = bench.classify_profile(collapsed)
    assert result["samples"] == 14
    assert result["by_process"] == {"serve (PyTriton proxy + model callable)": 12,
                                    "Python backend stub (Triton side of PyTriton)": 2}
    assert result["by_kind"] == {"runner (ONNX Runtime)": 7, "waiting (select, locks, queues)": 3,
                                 "tensor store RPC (PyTriton's shared-memory block manager)": 2,
                                 "ZMQ and asyncio hand-offs": 1, "other Python": 1}


def test_input_data_is_normalized_real_images(bench, tmp_path):
    import json

    import numpy as np

    from resnet_deploy import data

    images = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    entries = json.loads(bench.write_input_data(images, tmp_path / "in.json").read_text())["data"]
    assert [e["images"]["shape"] for e in entries] == [[1, 28, 28], [1, 28, 28]]
    np.testing.assert_allclose(entries[1]["images"]["content"], data.normalize(images)[1].ravel(), atol=1e-6)


def _perf_analyzer_runs() -> bool:
    if not PERF_ANALYZER.is_file() or shutil.which("bash") is None:
        return False
    done = subprocess.run(["bash", str(ROOT / "tools" / "perf_analyzer.sh"), "--version"], capture_output=True)
    return done.returncode == 0


def test_real_perf_analyzer_run_against_a_served_model(bench, untrained_onnx, tmp_path, data_dir):
    """perf_analyzer over gRPC and HTTP at concurrency 2 against `serve` of an untrained width-0.125 model."""
    require_serving()
    if not _perf_analyzer_runs():
        pytest.skip("perf_analyzer not installed: run `bash tools/perf_analyzer.sh --install-only` (not in the "
                    "README install)")
    from resnet_deploy import data
    from resnet_deploy.serve.process import ServeProcess

    input_data = bench.write_input_data(data.load_fashion_mnist(data_dir).test_images[:8], tmp_path / "in.json")
    args = argparse.Namespace(measurement_interval_ms=500, stability_percentage=100)
    with ServeProcess([untrained_onnx], "--threads", "1", "--no-raw-model", "--max-queue-delay-us", "2000",
                      workspace=tmp_path / "ws") as server:
        runs = {protocol: bench.perf_run(server, "tiny", input_data, protocol, 2, args) for protocol in ("grpc", "http")}
    for protocol, run in runs.items():
        assert "error" not in run, (protocol, run)
        assert run["infer_per_s"] > 0 and run["compute_infer"] > 0 and run["avg_latency"] > 0, (protocol, run)
        # two closed-loop clients and a 2 ms batching window: the batcher merged requests, at most two at once
        assert 1.0 < run["avg_batch"] <= 2.0, (protocol, run)
