"""Closed-loop load against a Triton model (after perf_analyzer): N concurrent clients, each sending
its next request as soon as the previous one is answered, over HTTP or gRPC.

Every request a client starts is recorded as answered or failed (with the error), so a dying server
shows up as failures, never as silently missing requests. Server-side queue and compute times come
from Triton's statistics extension, read before and after the measured window.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.serve.client import STAT_PHASES, Endpoint, ModelClient, ModelIO, error_message

PERCENTILES = (50, 90, 95, 99)
ERROR_PAUSE_S = 0.01  # after a failed request, so a dead server is not hammered by a spinning client


@dataclass(frozen=True)
class LoadSettings:
    """One closed-loop run: clients, request batch, warm-up and measured seconds."""

    concurrency: int
    duration_s: float = 5.0
    batch_size: int = 1
    warmup_s: float = 1.0
    timeout_s: float = 30.0

    def __post_init__(self):
        for option, value, valid, rule in (
            ("--concurrency", self.concurrency, self.concurrency >= 1, ">= 1"),
            ("--batch-size", self.batch_size, self.batch_size >= 1, ">= 1"),
            ("--duration-s", self.duration_s, self.duration_s > 0, "> 0"),
            ("--warmup-s", self.warmup_s, self.warmup_s >= 0, ">= 0"),
            ("--timeout-s", self.timeout_s, self.timeout_s > 0, "> 0"),
        ):
            if not (valid and math.isfinite(value)):
                raise ResnetDeployError(f"{option} {value}: must be a finite number {rule}")


@dataclass
class Record:
    start: float
    latency_s: float
    error: str | None


def model_inputs(io: ModelIO, images_uint8: np.ndarray) -> np.ndarray:
    """Fashion-MNIST uint8 images as this model wants them: raw pixels, or normalized FP32 NCHW."""
    from resnet_deploy.data import normalize

    return images_uint8 if io.raw_pixels else normalize(images_uint8)


def run_load(
    endpoint: Endpoint,
    stats_endpoint: Endpoint,
    io: ModelIO,
    inputs: np.ndarray,
    settings: LoadSettings,
    stop: threading.Event | None = None,
) -> dict[str, Any]:
    """One closed-loop run; returns counts, throughput, latency percentiles and server statistics."""
    stop = stop or threading.Event()
    records: list[list[Record]] = [[] for _ in range(settings.concurrency)]
    connected = threading.Barrier(settings.concurrency + 1)
    clock: dict[str, float] = {}

    def client_loop(index: int) -> None:
        with ModelClient(endpoint, io.model, settings.timeout_s) as client:
            connected.wait()
            cursor = index * settings.batch_size
            while not stop.is_set() and time.perf_counter() < clock["end"]:
                batch = _take(inputs, cursor, settings.batch_size)
                cursor += settings.concurrency * settings.batch_size
                record = _timed(client, io, batch)
                records[index].append(record)
                if record.error is not None:
                    time.sleep(ERROR_PAUSE_S)

    clock["end"] = float("inf")
    threads = [threading.Thread(target=client_loop, args=(i,), daemon=True) for i in range(settings.concurrency)]
    for thread in threads:
        thread.start()
    connected.wait(timeout=settings.timeout_s)
    begin = time.perf_counter()
    clock["end"] = begin + settings.warmup_s + settings.duration_s
    stop.wait(settings.warmup_s)
    before = _statistics(stats_endpoint, io.model)  # first, so every measured request falls after it
    measured_from = time.perf_counter()
    for thread in threads:
        thread.join()
    window = max(time.perf_counter() - measured_from, 1e-9)
    after = _statistics(stats_endpoint, io.model)
    measured = [r for per_client in records for r in per_client if r.start >= measured_from]
    return summarize(measured, window, settings, before, after)


def _take(inputs: np.ndarray, cursor: int, size: int) -> np.ndarray:
    indices = np.arange(cursor, cursor + size) % len(inputs)
    return inputs[indices]


def _timed(client: ModelClient, io: ModelIO, batch: np.ndarray) -> Record:
    start = time.perf_counter()
    try:
        client.infer(io, batch)
        error = None
    except Exception as exc:  # every failure is a data point: refused connection, timeout, server error
        error = error_message(exc)[:160]
    return Record(start, time.perf_counter() - start, error)


def _statistics(endpoint: Endpoint, model: str) -> dict[str, int] | None:
    try:
        with ModelClient(endpoint, model, timeout_s=5.0) as client:
            return client.statistics()
    except Exception:  # the server may be down: the run is still reported, without server-side times
        return None


def summarize(
    records: Sequence[Record],
    window_s: float,
    settings: LoadSettings,
    before: dict[str, int] | None,
    after: dict[str, int] | None,
) -> dict[str, Any]:
    """Client-side counts, rates and latency percentiles, plus the server-side deltas when both reads worked."""
    answered = [r.latency_s * 1000 for r in records if r.error is None]
    errors = Counter(r.error for r in records if r.error is not None)
    result: dict[str, Any] = {
        "concurrency": settings.concurrency,
        "batch_size": settings.batch_size,
        "duration_s": round(window_s, 3),
        "sent": len(records),
        "answered": len(answered),
        "failed": sum(errors.values()),
        "errors": dict(errors.most_common(5)),
        "requests_per_s": len(answered) / window_s,
        "images_per_s": len(answered) * settings.batch_size / window_s,
        "latency_ms": _percentiles(answered),
    }
    if before is not None and after is not None:
        result["server"] = server_delta(before, after)
    return result


def _percentiles(latencies_ms: Sequence[float]) -> dict[str, float | None]:
    if not latencies_ms:
        return {"mean": None, "max": None, **{f"p{p}": None for p in PERCENTILES}}
    values = np.asarray(latencies_ms)
    return {
        "mean": float(values.mean()),
        "max": float(values.max()),
        **{f"p{p}": float(np.percentile(values, p)) for p in PERCENTILES},
    }


def server_delta(before: dict[str, int], after: dict[str, int]) -> dict[str, float]:
    """What the server did between two `ModelClient.statistics()` readings: requests, executions, the mean
    batch the batcher formed and the mean ms per request of each phase."""
    delta = {key: after[key] - before[key] for key in after}
    requests = max(delta["success_count"] + delta["fail_count"], 1)
    executions = max(delta["execution_count"], 1)
    return {
        "requests": delta["success_count"],
        "failed": delta["fail_count"],
        "executions": delta["execution_count"],
        "avg_batch": delta["inference_count"] / executions,
        **{f"{phase}_ms": delta[f"{phase}_ns"] / requests / 1e6 for phase in STAT_PHASES},
    }


def sweep(
    endpoints: Sequence[Endpoint],
    stats_endpoint: Endpoint,
    io: ModelIO,
    inputs: np.ndarray,
    concurrencies: Sequence[int],
    base: LoadSettings,
    progress: Callable[[str], None] = lambda _: None,
) -> list[dict[str, Any]]:
    """`run_load` for every protocol and concurrency, in that order."""
    runs = []
    for endpoint in endpoints:
        for concurrency in concurrencies:
            progress(f"{endpoint.protocol} concurrency {concurrency}")
            settings = LoadSettings(concurrency, base.duration_s, base.batch_size, base.warmup_s, base.timeout_s)
            runs.append({"protocol": endpoint.protocol, **run_load(endpoint, stats_endpoint, io, inputs, settings)})
    return runs


def interleaved(
    servers: Mapping[str, Any],
    protocols: Sequence[str],
    concurrencies: Sequence[int],
    rounds: int,
    measure: Callable[[Any, str, int], dict[str, Any]],
) -> list[dict[str, Any]]:
    """`measure(server, protocol, concurrency)` for every setting in `rounds` rounds, the servers interleaved
    (A B A B ...) so that they share the machine's noise; each result with its round, label, protocol and
    concurrency. Says each setting on stderr."""
    runs = []
    for round_index in range(rounds):
        for concurrency in concurrencies:
            for protocol in protocols:
                for label, server in servers.items():
                    print(f"round {round_index + 1}: {label}, {protocol}, concurrency {concurrency}", file=sys.stderr)
                    result = measure(server, protocol, concurrency)
                    runs.append(
                        {
                            "round": round_index + 1,
                            "label": label,
                            "protocol": protocol,
                            "concurrency": concurrency,
                            **result,
                        }
                    )
    return runs


def server_predictions(endpoint: Endpoint, io: ModelIO, inputs: np.ndarray, batch_size: int) -> np.ndarray:
    """Class ids for every input, sent in order in batches of `batch_size` by one client."""
    predictions = []
    with ModelClient(endpoint, io.model) as client:
        for start in range(0, len(inputs), batch_size):
            predictions.append(client.infer(io, inputs[start : start + batch_size])["class_id"].reshape(-1))
    return np.concatenate(predictions)


def local_images_per_s(
    onnx: str | Path, batch_sizes: Sequence[int], images_uint8: np.ndarray, threads: int, duration_s: float
) -> dict[int, float]:
    """The local ONNX Runtime runner's images/s at each batch size (the server's threads per instance): what a
    served model is set against at the batch sizes its batcher formed."""
    from resnet_deploy.bench import measure
    from resnet_deploy.data import normalize
    from resnet_deploy.runners import load_runner

    with load_runner(onnx, "onnxruntime", threads=threads) as runner:
        return {
            batch: measure(runner, normalize(images_uint8[:batch]), batch, min_duration_s=duration_s)["throughput_ips"]
            for batch in sorted(set(batch_sizes))
        }
