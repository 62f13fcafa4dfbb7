"""Load-test bookkeeping and endpoint parsing, without a server: every request counted, percentiles,
server-side deltas from Triton's statistics."""

from __future__ import annotations

import pytest

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.serve.client import Endpoint
from resnet_deploy.serve.loadtest import LoadSettings, Record, interleaved, summarize


@pytest.mark.parametrize(
    "url, protocol, expected",
    [
        ("localhost:8000", None, Endpoint("http", "localhost:8000")),
        ("http://10.0.0.5:9000/", None, Endpoint("http", "10.0.0.5:9000")),
        ("grpc://host", None, Endpoint("grpc", "host:8001")),
        ("host", "grpc", Endpoint("grpc", "host:8001")),
    ],
)
def test_endpoint_parse(url, protocol, expected):
    assert Endpoint.parse(url, protocol) == expected


@pytest.mark.parametrize("url", ["ftp://host:1", "host:port", "://:8000"])
def test_endpoint_parse_refuses_bad_urls(url):
    with pytest.raises(ResnetDeployError):
        Endpoint.parse(url)


def test_sibling_follows_tritons_port_layout():
    assert Endpoint("http", "h:18000").sibling("grpc") == Endpoint("grpc", "h:18001")
    assert Endpoint("grpc", "h:18001").sibling("http") == Endpoint("http", "h:18000")


def _stats(success, executions, inferences, queue_ns, infer_ns):
    return {
        "success_count": success,
        "fail_count": 0,
        "execution_count": executions,
        "inference_count": inferences,
        "queue_ns": queue_ns,
        "compute_input_ns": 0,
        "compute_infer_ns": infer_ns,
        "compute_output_ns": 0,
    }


def test_summary_counts_every_request_and_reads_server_deltas():
    records = [Record(0.0, 0.001 * (i + 1), None) for i in range(98)]
    records += [Record(0.0, 0.5, "connection refused"), Record(0.0, 0.4, "connection refused")]
    summary = summarize(
        records,
        2.0,
        LoadSettings(4, batch_size=2),
        _stats(10, 5, 10, 0, 0),
        _stats(108, 30, 108, 98_000_000, 196_000_000),
    )
    assert (summary["sent"], summary["answered"], summary["failed"]) == (100, 98, 2)
    assert summary["errors"] == {"connection refused": 2}
    assert summary["requests_per_s"] == 49 and summary["images_per_s"] == 98
    assert summary["latency_ms"]["p50"] == pytest.approx(49.5) and summary["latency_ms"]["max"] == pytest.approx(98)
    assert summary["server"]["avg_batch"] == pytest.approx(98 / 25)
    assert summary["server"]["queue_ms"] == pytest.approx(1.0) and summary["server"][
        "compute_infer_ms"
    ] == pytest.approx(2.0)


def test_summary_without_server_statistics_or_answers():
    summary = summarize([Record(0.0, 0.1, "UNAVAILABLE")], 1.0, LoadSettings(1), None, None)
    assert summary["answered"] == 0 and summary["failed"] == 1 and "server" not in summary
    assert summary["latency_ms"]["p99"] is None


def test_a_lost_instance_handshake_starts_triton_again_in_a_fresh_workspace(monkeypatch):
    from resnet_deploy.serve.binding import HANDSHAKE_RACE, START_ATTEMPTS, TritonService

    notes, workspaces = [], []
    service = TritonService([], raw_model=False, progress=notes.append)
    monkeypatch.setattr(service, "_workspace", lambda: f"ws-{len(workspaces)}")

    def start_once(workspace, failures):
        workspaces.append(workspace)
        if len(workspaces) <= failures:
            raise ResnetDeployError(f"Triton did not start (... File communication.py, in {HANDSHAKE_RACE} ...)")
        return "triton"

    monkeypatch.setattr(service, "_start_triton_once", lambda ws: start_once(ws, START_ATTEMPTS - 1))
    assert service._start_triton() == "triton"
    assert workspaces == [f"ws-{n}" for n in range(START_ATTEMPTS)] and len(notes) == START_ATTEMPTS - 1

    workspaces.clear()
    monkeypatch.setattr(service, "_start_triton_once", lambda ws: start_once(ws, START_ATTEMPTS))
    with pytest.raises(ResnetDeployError, match=HANDSHAKE_RACE):
        service._start_triton()
    assert len(workspaces) == START_ATTEMPTS

    def port_taken(workspace):
        workspaces.append(workspace)
        raise ResnetDeployError("Triton did not start (address in use)")

    workspaces.clear()
    monkeypatch.setattr(service, "_start_triton_once", port_taken)
    with pytest.raises(ResnetDeployError, match="address in use"):
        service._start_triton()
    assert len(workspaces) == 1  # only the handshake race is retried


def test_interleaved_alternates_servers_within_each_setting_round_by_round(capsys):
    calls = []

    def measure(server, protocol, concurrency):
        calls.append((server, protocol, concurrency))
        return {"images_per_s": len(calls)}

    runs = interleaved({"A": "a", "B": "b"}, ["grpc", "http"], [1, 16], 2, measure)
    setting_order = [(c, p, s) for c in (1, 16) for p in ("grpc", "http") for s in ("a", "b")]
    assert calls == [(s, p, c) for c, p, s in setting_order] * 2
    assert [(r["round"], r["label"], r["protocol"], r["concurrency"]) for r in runs[:3]] == [
        (1, "A", "grpc", 1),
        (1, "B", "grpc", 1),
        (1, "A", "http", 1),
    ]
    assert runs[-1]["round"] == 2 and runs[-1]["images_per_s"] == 16
    assert capsys.readouterr().err.splitlines()[1] == "round 1: B, grpc, concurrency 1"
