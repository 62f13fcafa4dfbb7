"""`resnet-deploy serve`, `triton-repo` and `loadtest`: Triton Inference Server (extra `serve`)."""

from __future__ import annotations

import math
from pathlib import Path

import click
from rich.table import Table

from resnet_deploy.cli.console import console
from resnet_deploy.cli.options import (
    IMAGE,
    NON_NEGATIVE_FLOAT,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    OutputPath,
    data_dir_option,
    json_option,
    threads_option_for,
)

PORT = click.IntRange(1, 65535)


def _int_list(ctx, param, value: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if any(n < 1 for n in numbers):
        raise click.BadParameter("values must be positive")
    return numbers


def _describe(artifacts: tuple[Path, ...], name: str | None, version: int | None):
    from resnet_deploy.errors import ResnetDeployError
    from resnet_deploy.serve.artifact import describe_artifact

    if name and len(artifacts) > 1:
        raise ResnetDeployError("--name applies to one artifact; with several, names come from the file names")
    return [describe_artifact(path, name, version) for path in artifacts]


artifacts_argument = click.argument(
    "artifacts", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path)
)
name_option = click.option(
    "--name", default=None, help="Model name (one artifact only; default: the file name without its suffix)."
)
version_option = click.option(
    "--model-version",
    "version",
    type=int,
    default=None,
    help="Model version (default: the ONNX model_version field, else 1).",
)
max_batch_option = click.option(
    "--max-batch-size",
    type=POSITIVE_INT,
    default=None,
    help="Largest batch Triton forms or accepts (default: an engine's profile max; 64 for ONNX).",
)
dynamic_option = click.option(
    "--dynamic-batching/--no-dynamic-batching",
    default=True,
    show_default=True,
    help="Merge concurrent requests into batches on the server.",
)
preferred_option = click.option(
    "--preferred-batch-sizes",
    default="",
    callback=_int_list,
    help="Batch sizes the dynamic batcher aims for, e.g. 8,16 (default: as large as possible).",
)
delay_option = click.option(
    "--max-queue-delay-us",
    type=NON_NEGATIVE_INT,
    default=100,
    show_default=True,
    help="How long a request may wait for others to batch with.",
)
instances_option = click.option(
    "--instances", type=click.IntRange(1, 64), default=1, show_default=True, help="Model instances (copies) per model."
)


def model_options(command):
    """The options `serve` and `triton-repo` share: name, version, batch limit, batching and instances."""
    for option in reversed(
        (
            name_option,
            version_option,
            max_batch_option,
            dynamic_option,
            preferred_option,
            delay_option,
            instances_option,
        )
    ):
        command = option(command)
    return command


@click.command()
@artifacts_argument
@model_options
@threads_option_for("ONNX Runtime intra-op threads per instance (0: its default).")
@click.option(
    "--raw-model/--no-raw-model",
    default=True,
    show_default=True,
    help="Also serve NAME-raw: uint8 pixels [-1,28,28] in, normalized on the server.",
)
@click.option("--host", default="0.0.0.0", show_default=True, help="Address to bind HTTP, gRPC and metrics to.")
@click.option("--http-port", type=PORT, default=8000, show_default=True)
@click.option("--grpc-port", type=PORT, default=8001, show_default=True)
@click.option("--metrics-port", type=PORT, default=8002, show_default=True)
@click.option(
    "--drain-timeout",
    type=click.IntRange(0, 25),
    default=20,
    show_default=True,
    help="Seconds to let in-flight requests finish after SIGTERM/SIGINT (at most 25).",
)
@click.option(
    "--log-verbose", type=NON_NEGATIVE_INT, default=0, show_default=True, help="Triton's own verbose log level."
)
@click.option(
    "--workspace",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for PyTriton's workspace (server copy, sockets); default ~/.cache/pytriton.",
)
def serve(
    artifacts,
    name,
    version,
    max_batch_size,
    dynamic_batching,
    preferred_batch_sizes,
    max_queue_delay_us,
    instances,
    threads,
    raw_model,
    host,
    http_port,
    grpc_port,
    metrics_port,
    drain_timeout,
    log_verbose,
    workspace,
) -> None:
    """Serve ONNX artifacts (or TensorRT engines, where TensorRT imports) on a real Triton server.

    Each artifact becomes model NAME (input `images` FP32 [-1,1,28,28], normalized) and NAME-raw
    (input `pixels` UINT8 [-1,28,28]); both answer `logits` FP32 [-1,10] and `class_id` INT64
    [-1,1], and Triton's classification extension works on `logits`. Every instance runs a warm-up
    inference before the models are loaded, and `ready:` is printed once every model's own probe
    (/v2/models/NAME/ready; /v2/health/ready turns true before the models load) says ready.
    SIGTERM or Ctrl-C drains in-flight requests, then exits 0.

    \b
    Examples:
      resnet-deploy serve artifacts/resnet18-w0.25.onnx
      resnet-deploy serve artifacts/resnet18-w0.25.onnx calibration/resnet18-w0.25.int8-cpu.onnx --instances 2
      resnet-deploy serve model.onnx --max-batch-size 128 --preferred-batch-sizes 16,32 --max-queue-delay-us 500
      curl -sf localhost:8000/v2/models/resnet18-w0.25/ready && curl -s localhost:8002/metrics | grep request_success
    """
    import signal
    import sys
    import threading

    from resnet_deploy.serve.batching import BatchingSettings
    from resnet_deploy.serve.binding import ServerSettings, TritonService

    served = _describe(artifacts, name, version)
    batching = BatchingSettings(max_batch_size, dynamic_batching, preferred_batch_sizes, max_queue_delay_us, instances)
    _check_memory(served, max_batch_size, instances * (2 if raw_model else 1))
    server = ServerSettings(
        host=host,
        http_port=http_port,
        grpc_port=grpc_port,
        metrics_port=metrics_port,
        drain_timeout_s=drain_timeout,
        log_verbose=log_verbose,
        workspace=workspace,
    )
    stop = threading.Event()
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: stop.set())
    with TritonService(
        served,
        batching,
        server,
        threads=threads,
        raw_model=raw_model,
        progress=lambda m: console.print(m, highlight=False),
    ) as service:
        _print_models(service)
        console.print(
            f"ready: {', '.join(service.model_names)} loaded and warmed up (probe each: "
            f"{service.readiness_probe}); HTTP {service.http_url}, gRPC {service.grpc_url}, metrics "
            f"http://{server.client_host}:{metrics_port}/metrics (SIGTERM or Ctrl-C drains and stops)",
            highlight=False,
            soft_wrap=True,
        )
        sys.stdout.flush()
        service.wait(stop)
        console.print(f"draining in-flight requests (up to {drain_timeout} s)", highlight=False)
        service.stop()
        served_counts = {model.name: model.served() for model in service.models}
    summary = ", ".join(
        f"{model} {requests} requests / {images} images" for model, (requests, images) in served_counts.items()
    )
    console.print(f"stopped after a {service.drain_seconds:.1f} s drain; served {summary}", highlight=False)


def _check_memory(served, max_batch_size: int | None, copies: int) -> None:
    """Refuse a --max-batch-size whose batches would not fit in memory (as `bench --batch-sizes`): each copy of
    an ONNX model holds one batch of inputs and its three largest activations; an engine's batch is on the GPU."""
    from resnet_deploy.bench import available_memory_bytes
    from resnet_deploy.errors import ResnetDeployError
    from resnet_deploy.onnx_io import live_activation_bytes

    available = available_memory_bytes()
    if max_batch_size is None or available is None:
        return
    per_image = sum(
        4 * math.prod(artifact.input_dims) + live_activation_bytes(artifact.path)
        for artifact in served
        if artifact.backend != "tensorrt"
    )
    needed = max_batch_size * per_image * copies
    if needed > available:
        raise ResnetDeployError(
            f"--max-batch-size {max_batch_size}: batches need about {needed / 2**30:.1f} GiB of "
            f"memory ({per_image / 1024:.0f} KiB per image, {copies} model copies); "
            f"{available / 2**30:.1f} GiB is available; use a smaller --max-batch-size"
        )


def _print_models(service) -> None:
    table = Table(title="Triton models")
    for column in ("model", "version", "input", "outputs", "max batch", "batching", "instances", "warm-up ms"):
        table.add_column(column)
    b = service.batching
    batching = (
        (
            f"dynamic, delay {b.max_queue_delay_us} us"
            + (f", preferred {list(b.preferred_batch_sizes)}" if b.preferred_batch_sizes else "")
        )
        if b.dynamic
        else "off"
    )
    for model in service.models:
        dtype = "UINT8" if model.raw_pixels else "FP32"
        warm = ", ".join(f"b{size} {s * 1000:.1f}" for size, s in model.warm_up_s.items())
        table.add_row(
            model.name,
            str(model.artifact.version),
            f"{model.input_name} {dtype} {[-1, *model.input_dims]}",
            f"logits [-1,{model.artifact.num_classes}], class_id",
            str(model.max_batch_size),
            batching,
            str(len(model.instances)),
            warm,
        )
    console.print(table)


@click.command()
@click.argument("url")
@click.option("--model", required=True, help="Model name on the server (e.g. resnet18-w0.25 or resnet18-w0.25-raw).")
@click.option("--grpc-url", default=None, help="gRPC endpoint (default: URL's host, HTTP port + 1).")
@click.option("--protocols", type=click.Choice(["http", "grpc", "both"]), default="both", show_default=True)
@click.option(
    "--concurrency",
    "concurrencies",
    default="1,4,16",
    show_default=True,
    callback=_int_list,
    help="Concurrent closed-loop clients, one run each.",
)
@click.option(
    "--duration-s",
    type=POSITIVE_FLOAT,
    default=5.0,
    show_default=True,
    help="Measured seconds per run.",
)
@click.option(
    "--warmup-s",
    type=NON_NEGATIVE_FLOAT,
    default=1.0,
    show_default=True,
    help="Unmeasured seconds before each run.",
)
@click.option("--batch-size", type=POSITIVE_INT, default=1, show_default=True, help="Images per request.")
@click.option(
    "--timeout-s",
    type=POSITIVE_FLOAT,
    default=30.0,
    show_default=True,
    help="Per-request timeout (a timeout counts as failed).",
)
@click.option(
    "--accuracy/--no-accuracy",
    default=True,
    show_default=True,
    help="Also send the 10k test split and score the server's class ids.",
)
@click.option(
    "--reference",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Artifact to run locally on the same images: the server's predictions must equal its own (exit 1 if not).",
)
@click.option("--fail-on-errors", is_flag=True, help="Exit 1 if any request of the load failed.")
@json_option(Path("reports/loadtest.json"))
@click.option(
    "--plot",
    "plot_path",
    type=OutputPath(IMAGE),
    default=Path("reports/loadtest.png"),
    show_default=True,
    help="Throughput vs p99 latency (needs matplotlib).",
)
@data_dir_option
def loadtest(
    url,
    model,
    grpc_url,
    protocols,
    concurrencies,
    duration_s,
    warmup_s,
    batch_size,
    timeout_s,
    accuracy,
    reference,
    fail_on_errors,
    json_path,
    plot_path,
    data_dir,
) -> None:
    """Closed-loop load test of a Triton model over HTTP and gRPC (after perf_analyzer).

    For each protocol and concurrency: requests sent, answered and failed (with the errors), requests
    and images per second, latency p50/p90/p95/p99, and the server's own queue and compute time per
    request and mean batch size (Triton's statistics extension). With --accuracy, the 10k test split
    goes through the server; with --reference, its predictions must equal the local runner's exactly.

    \b
    Examples:
      resnet-deploy loadtest localhost:8000 --model resnet18-w0.25
      resnet-deploy loadtest http://10.0.0.5:8000 --model resnet18-w0.25-raw --concurrency 1,8,32 --duration-s 30
      resnet-deploy loadtest localhost:8000 --model resnet18-w0.25 --reference artifacts/resnet18-w0.25.onnx
    """
    from resnet_deploy import data
    from resnet_deploy.bench import fingerprint
    from resnet_deploy.errors import GateFailed
    from resnet_deploy.fileio import atomic_write_json
    from resnet_deploy.serve.client import Endpoint, ModelClient
    from resnet_deploy.serve.environment import require_serve_extra
    from resnet_deploy.serve.loadtest import LoadSettings, model_inputs, sweep

    require_serve_extra(server=False)
    http_endpoint = Endpoint.parse(url, "http")
    grpc_endpoint = Endpoint.parse(grpc_url, "grpc") if grpc_url else http_endpoint.sibling("grpc")
    endpoints = {"http": [http_endpoint], "grpc": [grpc_endpoint], "both": [http_endpoint, grpc_endpoint]}[protocols]
    with ModelClient(http_endpoint, model) as client:
        io = client.io()
    if io.max_batch_size and batch_size > io.max_batch_size:
        raise click.BadParameter(
            f"{batch_size} exceeds the model's max_batch_size {io.max_batch_size}", param_hint="--batch-size"
        )
    dataset = data.load_fashion_mnist(data_dir)
    inputs = model_inputs(io, dataset.test_images)
    base = LoadSettings(1, duration_s, batch_size, warmup_s, timeout_s)
    with console.status("load test") as status:
        runs = sweep(
            endpoints,
            http_endpoint,
            io,
            inputs,
            concurrencies,
            base,
            progress=lambda message: status.update(f"load test: {message}"),
        )
    report = {
        "url": str(http_endpoint),
        "grpc_url": str(grpc_endpoint),
        "model": model,
        "input": io.input_name,
        "datatype": io.datatype,
        "max_batch_size": io.max_batch_size,
        "settings": {
            "duration_s": duration_s,
            "warmup_s": warmup_s,
            "batch_size": batch_size,
            "timeout_s": timeout_s,
            "concurrency": list(concurrencies),
        },
        "runs": runs,
        "fingerprint": fingerprint(),
    }
    gate_error = None
    if accuracy:
        report["accuracy"] = _accuracy(http_endpoint, io, inputs, dataset.test_labels, reference)
        if reference and report["accuracy"]["mismatches"]:
            gate_error = GateFailed(
                f"{report['accuracy']['mismatches']} of {len(inputs)} server predictions differ "
                f"from {reference} run locally"
            )
    atomic_write_json(json_path, report)
    _print_loadtest(report)
    if plot_path:
        from resnet_deploy.plots import plot_loadtest

        written = plot_loadtest(runs, plot_path, f"{model} at {http_endpoint.address}")
        console.print(f"plot {written}" if written else "plot skipped: install matplotlib")
    console.print(f"report {json_path}")
    failed = sum(run["failed"] for run in runs)
    if gate_error:
        raise gate_error
    if fail_on_errors and failed:
        raise GateFailed(f"{failed} requests failed during the load (see the errors above)")


def _accuracy(endpoint, io, inputs, labels, reference: Path | None) -> dict:
    """Top-1 of the server's predictions on the test split; with a reference artifact, exact agreement."""
    from resnet_deploy.serve.loadtest import server_predictions

    batch = min(io.max_batch_size or 256, 256)
    predictions = server_predictions(endpoint, io, inputs, batch)
    result = {"images": int(len(inputs)), "batch_size": batch, "top1": float((predictions == labels).mean())}
    if reference:
        from resnet_deploy.data import normalize
        from resnet_deploy.parity import collect_logits
        from resnet_deploy.runners import load_runner

        local_inputs = normalize(inputs) if io.raw_pixels else inputs
        with load_runner(reference) as runner:
            local = collect_logits(runner, local_inputs, batch).argmax(axis=1)
        result.update(
            {
                "reference": str(reference),
                "local_top1": float((local == labels).mean()),
                "mismatches": int((local != predictions).sum()),
            }
        )
    return result


def _print_loadtest(report: dict) -> None:
    table = Table(
        title=f"{report['model']}: closed-loop load, batch {report['settings']['batch_size']}, "
        f"{report['settings']['duration_s']} s per run"
    )
    columns = (
        "protocol",
        "clients",
        "sent",
        "answered",
        "failed",
        "req/s",
        "img/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "srv queue ms",
        "srv compute ms",
        "srv batch",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "protocol" else "right")
    for run in report["runs"]:
        lat, srv = run["latency_ms"], run.get("server")
        ms = [f"{lat[p]:.2f}" if lat[p] is not None else "-" for p in ("p50", "p95", "p99")]
        server = (
            [f"{srv['queue_ms']:.2f}", f"{srv['compute_infer_ms']:.2f}", f"{srv['avg_batch']:.1f}"]
            if srv
            else ["-", "-", "-"]
        )
        table.add_row(
            run["protocol"],
            str(run["concurrency"]),
            str(run["sent"]),
            str(run["answered"]),
            str(run["failed"]),
            f"{run['requests_per_s']:.0f}",
            f"{run['images_per_s']:.0f}",
            *ms,
            *server,
        )
    console.print(table)
    for run in report["runs"]:
        for error, count in run["errors"].items():
            console.print(f"  [red]{run['protocol']} c{run['concurrency']}: {count} x[/] {error}", highlight=False)
    if "accuracy" in report:
        acc = report["accuracy"]
        line = f"accuracy through the server: top-1 {acc['top1'] * 100:.2f}% on {acc['images']} test images"
        if "reference" in acc:
            verdict = "[green]identical[/]" if not acc["mismatches"] else f"[red]{acc['mismatches']} differ[/]"
            line += f"; vs {acc['reference']} run locally (top-1 {acc['local_top1'] * 100:.2f}%): {verdict}"
        console.print(line)


@click.command("triton-repo")
@click.argument("artifacts", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model repository folder to write (models are added beside those already there).",
)
@click.option(
    "--check",
    "check_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Only validate an existing repository (every config.pbtxt) and exit.",
)
@model_options
@click.option(
    "--onnx-on-gpu",
    is_flag=True,
    help="ONNX instances on the GPU with ONNX Runtime's TensorRT "
    "accelerator (precision from the graph: FP32, FP16 or INT8 Q/DQ); default KIND_CPU.",
)
@click.option("--triton-release", default=None, help="Target NGC release (YY.MM): plans must carry its TensorRT.")
@click.option(
    "--container-tensorrt", default=None, help="Target container's TensorRT version (overrides --triton-release)."
)
@click.option("--target-cc", default=None, help="Target GPU compute capability, e.g. 8.6 (plans must match).")
@click.option("--force", is_flag=True, help="Replace model folders that already exist.")
def triton_repo(
    artifacts,
    out_dir,
    check_dir,
    name,
    version,
    max_batch_size,
    dynamic_batching,
    preferred_batch_sizes,
    max_queue_delay_us,
    instances,
    onnx_on_gpu,
    triton_release,
    container_tensorrt,
    target_cc,
    force,
) -> None:
    """Write a model repository for stock Triton containers: config.pbtxt, 1/model.onnx or 1/model.plan, labels.

    ONNX models run on ONNX Runtime (KIND_CPU, or KIND_GPU with the TensorRT accelerator); engines
    become `tensorrt_plan` models (KIND_GPU, max_batch_size from the profile) with their sidecar
    beside them. Every config is parsed back with Triton's protobuf and checked against its files;
    a plan is checked against the target container's TensorRT and GPU when given, and every config against
    Triton's own rules (preferred batch sizes within the effective max, dims, types, instance kinds).
    DLA plans get a KIND_NVDLA secondary device; the repository's README.md gives the `docker run`, with
    --backend-config=tensorrt,version-compatible=true when a plan is version-compatible. Inputs and outputs
    keep the artifact's own names (`input`, `logits`); the classification extension gives labels.

    \b
    Examples:
      resnet-deploy triton-repo artifacts/resnet18-w0.25.onnx --out model_repository
      resnet-deploy triton-repo engines/*_int8_*.engine --out model_repository --triton-release 24.08
      resnet-deploy triton-repo --check model_repository
      docker run --gpus all -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD/model_repository:/models \\
          nvcr.io/nvidia/tritonserver:24.08-py3 tritonserver --model-repository=/models
    """
    from resnet_deploy.errors import ResnetDeployError
    from resnet_deploy.serve.batching import BatchingSettings
    from resnet_deploy.serve.environment import require_serve_extra
    from resnet_deploy.serve.releases import SOURCE, TENSORRT_BY_RELEASE
    from resnet_deploy.serve.repository import RepositorySettings, validate_repository, write_repository

    require_serve_extra(server=False)
    if triton_release and triton_release not in TENSORRT_BY_RELEASE:
        raise ResnetDeployError(
            f"--triton-release {triton_release}: not in the table of releases "
            f"({min(TENSORRT_BY_RELEASE)}-{max(TENSORRT_BY_RELEASE)}, from {SOURCE}); "
            "pass --container-tensorrt instead"
        )
    batching = BatchingSettings(max_batch_size, dynamic_batching, preferred_batch_sizes, max_queue_delay_us, instances)
    settings = RepositorySettings(
        batching,
        onnx_on_gpu=onnx_on_gpu,
        target_compute_capability=target_cc,
        container_tensorrt=container_tensorrt or TENSORRT_BY_RELEASE.get(triton_release),
    )
    if check_dir is not None:
        if artifacts or out_dir:
            raise click.UsageError("--check takes no artifacts and no --out")
        models = validate_repository(check_dir, settings)
    else:
        if not artifacts or out_dir is None:
            raise click.UsageError("give ARTIFACT... and --out DIR (or --check DIR)")
        models = write_repository(_describe(artifacts, name, version), out_dir, settings, force=force)
    _print_repository(models, check_dir or out_dir)


def _print_repository(models: list[dict], root: Path) -> None:
    table = Table(title=f"Triton model repository {root} (every config.pbtxt parsed and checked)")
    for column in ("model", "platform", "version", "max batch", "runs on"):
        table.add_column(column)
    for model in models:
        provenance = model["provenance"]
        if "tensorrt_version" in provenance:
            releases = ", ".join(provenance["ngc_releases"]) or "no NGC release in the table"
            runs_on = (
                f"TensorRT {provenance['tensorrt_version']}, sm {provenance['compute_capability']} (NGC {releases})"
            )
        else:
            runs_on = "any Triton with the onnxruntime backend"
        table.add_row(model["model"], model["platform"], str(model["version"]), str(model["max_batch_size"]), runs_on)
    console.print(table)
    console.print(f"run it: tritonserver --model-repository={root}")


COMMANDS = [serve, triton_repo, loadtest]
