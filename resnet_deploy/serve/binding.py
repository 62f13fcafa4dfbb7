"""PyTriton binding: each artifact becomes a Triton model (FP32 `images`) plus a raw-pixel twin (uint8
`pixels`), with dynamic batching, several instances, warm-up before load and a graceful drain.

Order of events: runners are activated and every instance runs a warm-up inference; only then are
the models bound and the server started, so Triton reports a model ready only after it has run.
Triton's server-wide `/v2/health/ready` turns true before PyTriton has loaded the models, so
readiness is each model's own probe, `/v2/models/NAME/ready`: `start()` waits on it for every
model, then sends each one request, before `serve` says `ready:`.

Drain (`stop()`): the models are unloaded first, so readiness turns false at once (a load balancer
stops routing here), requests already in flight finish, and new ones get a clear "no available
versions" error instead of hanging. Then Triton gets SIGINT and waits, up to the drain timeout, for
clients to close their connections (Triton 2.51 alone keeps serving open HTTP and all gRPC
connections while it waits, and stays "ready" on gRPC). The runners are released last.
"""

from __future__ import annotations

import contextlib
import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.serve.artifact import ServedArtifact
from resnet_deploy.serve.batching import BatchingSettings
from resnet_deploy.serve.inference import CLASS_ID, LOGITS, InstanceCallable

if TYPE_CHECKING:
    from pytriton.triton import Triton

# PyTriton waits 30 s for Triton to exit before it kills it; a longer drain could not finish.
MAX_DRAIN_TIMEOUT_S = 25
# Endpoints that need PyTriton's access token: everything that changes the server. Statistics stay open
# for `loadtest` and monitoring; health, metadata, config and inference are always open.
RESTRICTED_ENDPOINTS = ("shared-memory", "model-repository", "trace", "logging")
MAX_SOCKET_PATH = 107  # sun_path holds 108 bytes with the terminating NUL
HANDSHAKE_RACE = "get_config_from_handshake_server"  # PyTriton 0.7's function in the failed stub's traceback
START_ATTEMPTS = 3


@dataclass(frozen=True)
class ServerSettings:
    """Where the server listens (Triton's default ports) and how long it drains on shutdown."""

    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    drain_timeout_s: int = 20
    log_verbose: int = 0
    workspace: str | None = None

    def __post_init__(self):
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
            raise ResnetDeployError(
                f"HTTP, gRPC and metrics ports must be three distinct ports in 1-65535, got {ports}"
            )
        if not 0 <= self.drain_timeout_s <= MAX_DRAIN_TIMEOUT_S:
            raise ResnetDeployError(f"--drain-timeout must be 0-{MAX_DRAIN_TIMEOUT_S} s, got {self.drain_timeout_s}")

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    def check_ports_free(self) -> None:
        """Refuse ports in use before starting: Triton would fail, and PyTriton would then talk to the
        other server on that port."""
        for label, port in (("HTTP", self.http_port), ("gRPC", self.grpc_port), ("metrics", self.metrics_port)):
            with socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    probe.bind((self.host, port))
                except OSError as exc:
                    raise ResnetDeployError(
                        f"{label} port {port} on {self.host} is not free ({exc.strerror}); "
                        "pass --http-port, --grpc-port and --metrics-port"
                    ) from exc


@dataclass
class BoundModel:
    """One Triton model: its artifact, input, batch limit and one callable per instance."""

    name: str
    artifact: ServedArtifact
    raw_pixels: bool
    max_batch_size: int
    instances: list[InstanceCallable]
    warm_up_s: dict[int, float] = field(default_factory=dict)

    @property
    def input_name(self) -> str:
        return self.instances[0].input_name

    @property
    def input_dims(self) -> tuple[int, ...]:
        return self.instances[0].input_dims

    @property
    def input_dtype(self) -> type:
        return self.instances[0].input_dtype

    def served(self) -> tuple[int, int]:
        """(requests, images) answered so far by all instances."""
        return (sum(i.requests_served for i in self.instances), sum(i.images_served for i in self.instances))


class TritonService:
    """A running Triton server with the artifacts bound; a context manager that drains on exit."""

    def __init__(
        self,
        artifacts: list[ServedArtifact],
        batching: BatchingSettings = BatchingSettings(),
        server: ServerSettings = ServerSettings(),
        threads: int = 0,
        raw_model: bool = True,
        progress: Callable[[str], None] = lambda _: None,
    ):
        """`threads`: ONNX Runtime intra-op threads per instance (0: its default); `raw_model`: also
        serve NAME-raw for uint8 pixels."""
        names = [a.name for a in artifacts] + [f"{a.name}-raw" for a in artifacts if raw_model]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ResnetDeployError(f"two artifacts would serve the same model name {duplicates[0]!r}; pass --name")
        self.model_names = names
        self.artifacts = artifacts
        self.batching = batching
        self.server = server
        self.threads = threads
        self.raw_model = raw_model
        self.progress = progress
        self.models: list[BoundModel] = []
        self.drain_seconds: float | None = None
        self._triton: Triton | None = None
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "TritonService":
        try:
            self.start()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def start(self) -> None:
        """Activate and warm up every instance, bind the models, start Triton and check each model once."""
        from resnet_deploy.serve.client import wait_until_models_ready
        from resnet_deploy.serve.environment import pass_tensors_inline, put_python_library_first, require_serve_extra

        require_serve_extra()
        for artifact in self.artifacts:
            if artifact.is_engine:
                _require_tensorrt(artifact)
        max_batches = [artifact.max_batch_size(self.batching.max_batch_size) for artifact in self.artifacts]
        self.server.check_ports_free()
        self._workspace()  # refuses a workspace whose socket paths are too long before any work
        put_python_library_first()
        pass_tensors_inline()
        for artifact, max_batch in zip(self.artifacts, max_batches):
            for raw in (False, True) if self.raw_model else (False,):
                self.models.append(self._bind_model(artifact, raw, max_batch))
        self._triton = self._start_triton()
        self._stack.callback(self._stop_triton)
        wait_until_models_ready(self.http_address, self.model_names)
        for model in self.models:
            self._self_check(model)

    def wait(self, stop: threading.Event, poll_s: float = 0.5) -> None:
        """Block until `stop` is set (a signal) or the server dies (then raise)."""
        assert self._triton is not None, "wait() before start()"
        while not stop.wait(poll_s):
            if not self._triton.is_alive():
                raise ResnetDeployError("the Triton server exited unexpectedly (see its log above)")

    def stop(self) -> None:
        """Drain in-flight requests, stop Triton, release the runners; safe to call twice."""
        started = time.perf_counter()
        self._stack.close()
        if self._triton is not None and self.drain_seconds is None:
            self.drain_seconds = time.perf_counter() - started

    @property
    def http_address(self) -> str:
        return f"{self.server.client_host}:{self.server.http_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.http_address}"

    @property
    def readiness_probe(self) -> str:
        """The URL to probe for readiness: one per model (`/v2/health/ready` is true before they load)."""
        from resnet_deploy.serve.client import model_ready_url

        return model_ready_url(self.http_address, "NAME")

    @property
    def grpc_url(self) -> str:
        return f"grpc://{self.server.client_host}:{self.server.grpc_port}"

    def _bind_model(self, artifact: ServedArtifact, raw: bool, max_batch: int) -> BoundModel:
        name = f"{artifact.name}-raw" if raw else artifact.name
        instances = []
        for index in range(self.batching.instances):
            self.progress(f"{name}: loading instance {index + 1}/{self.batching.instances}")
            runner = self._stack.enter_context(self._runner(artifact))
            instances.append(InstanceCallable(runner, artifact, raw_pixels=raw))
        model = BoundModel(name, artifact, raw, max_batch, instances)
        for instance in instances:
            for size, seconds in instance.warm_up(max_batch).items():
                model.warm_up_s[size] = max(seconds, model.warm_up_s.get(size, 0.0))
        timings = ", ".join(f"batch {size} {s * 1000:.1f} ms" for size, s in model.warm_up_s.items())
        self.progress(f"{name}: warm-up inference done on every instance ({timings})")
        return model

    def _runner(self, artifact: ServedArtifact):
        from resnet_deploy.runners import load_runner

        if artifact.is_engine:
            return load_runner(artifact.path, "tensorrt")
        return load_runner(artifact.path, "onnxruntime", threads=self.threads)

    def _start_triton(self):
        """Start Triton, again in a fresh workspace when PyTriton's instance handshake lost its race: with
        several instances, a later one may ask the first for its config before that one listens."""
        for attempt in range(1, START_ATTEMPTS + 1):
            try:
                return self._start_triton_once(self._workspace())
            except ResnetDeployError as exc:
                if HANDSHAKE_RACE not in str(exc) or attempt == START_ATTEMPTS:
                    raise
                self.progress(
                    f"PyTriton's instance handshake failed (attempt {attempt}/{START_ATTEMPTS}); starting Triton again"
                )

    def _start_triton_once(self, workspace: Path):
        from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

        s = self.server
        config = TritonConfig(
            http_address=s.host,
            grpc_address=s.host,
            metrics_address=s.host,
            http_port=s.http_port,
            grpc_port=s.grpc_port,
            metrics_port=s.metrics_port,
            exit_timeout_secs=s.drain_timeout_s,
            log_verbose=s.log_verbose,
            allow_gpu_metrics=any(a.is_engine for a in self.artifacts),
        )
        triton = Triton(
            config=config,
            workspace=workspace,
            security_config=TritonSecurityConfig(restricted_endpoints=list(RESTRICTED_ENDPOINTS)),
        )
        b = self.batching
        batcher = (
            DynamicBatcher(
                max_queue_delay_microseconds=b.max_queue_delay_us,
                preferred_batch_size=list(b.preferred_batch_sizes) or None,
            )
            if b.dynamic
            else None
        )
        for model in self.models:
            triton.bind(
                model_name=model.name,
                infer_func=model.instances,
                model_version=model.artifact.version,
                inputs=[Tensor(name=model.input_name, dtype=model.input_dtype, shape=model.input_dims)],
                outputs=[
                    Tensor(name=LOGITS, dtype=np.float32, shape=(model.artifact.num_classes,)),
                    Tensor(name=CLASS_ID, dtype=np.int64, shape=(1,)),
                ],
                config=ModelConfig(max_batch_size=model.max_batch_size, batcher=batcher),
                strict=True,
            )
        self.progress("starting Triton")
        try:
            triton.run()
        except Exception as exc:
            with contextlib.suppress(Exception):
                triton.stop()
            raise ResnetDeployError(
                f"Triton did not start ({type(exc).__name__}: {exc}); are ports "
                f"{s.http_port}/{s.grpc_port}/{s.metrics_port} free?"
            ) from exc
        return triton

    def _workspace(self) -> Path:
        """A fresh folder for PyTriton (it refuses an existing one) whose Unix socket paths fit the kernel's
        108-byte limit; PyTriton names them `<model>_0_<instance>-server.sock`, and a path too long makes
        a model fail to load with a bare EOFError."""
        from pytriton.constants import PYTRITON_HOME

        workspace = Path(self.server.workspace or PYTRITON_HOME).resolve() / f"ws-{secrets.token_hex(3)}"
        longest = max(map(len, self.model_names)) + len(f"_0_{self.batching.instances - 1}-server.sock")
        if len(str(workspace)) + 1 + longest > MAX_SOCKET_PATH:
            raise ResnetDeployError(
                f"PyTriton's socket paths in {workspace} would exceed {MAX_SOCKET_PATH} characters "
                "with these model names; pass a shorter --name or --workspace"
            )
        return workspace

    def _stop_triton(self) -> None:
        import tritonclient.http as http
        from pytriton.triton import TRITON_ACCESS_HEADER

        assert self._triton is not None  # registered as a callback only once Triton started
        client = http.InferenceServerClient(f"{self.server.client_host}:{self.server.http_port}")
        headers = {TRITON_ACCESS_HEADER: self._triton.get_access_token()}
        try:
            for model in self.models:
                client.unload_model(model.name, headers=headers)
        except Exception as exc:  # the server may already be gone; stopping it is all that is left
            self.progress(f"unloading before the drain failed ({exc}); stopping Triton")
        finally:
            client.close()
        self._triton.stop()

    def _self_check(self, model: BoundModel) -> None:
        """One request through HTTP must come back with the local answer before we call the model ready."""
        from resnet_deploy.serve.client import Endpoint, ModelClient

        batch: np.ndarray = np.full((1, *model.input_dims), 128 if model.raw_pixels else 0.5, model.input_dtype)
        expected, _ = model.instances[0].infer_batch(batch)
        with ModelClient(Endpoint("http", self.http_address), model.name) as client:
            logits = client.infer(client.io(), batch)[LOGITS]
        if not np.allclose(logits, expected, rtol=1e-5, atol=1e-5):
            raise ResnetDeployError(
                f"{model.name}: the server's answer to the self-check request differs from the local runner's"
            )


def _require_tensorrt(artifact: ServedArtifact) -> None:
    from resnet_deploy.trt.compat import require

    require(
        f"{artifact.path}: serving a TensorRT engine (serve the ONNX artifact here, or use `triton-repo` for a "
        "Triton container with TensorRT)"
    )

    from resnet_deploy.data import MEAN, STD

    constants = artifact.sidecar.get("normalization", {"mean": MEAN, "std": STD})
    if (constants.get("mean"), constants.get("std")) != (MEAN, STD):
        raise ArtifactError(
            f"{artifact.path}: sidecar normalization {constants} differs from the Fashion-MNIST "
            f"constants (mean {MEAN}, std {STD}) the raw-pixel model uses"
        )
