"""One small interface over tritonclient's HTTP and gRPC clients: URLs, a model's I/O, inference and
the statistics extension. Used by `loadtest`, by `serve`'s self-check and by the tests."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.serve.inference import CLASS_ID

PROTOCOLS = ("http", "grpc")
DEFAULT_PORTS = {"http": 8000, "grpc": 8001}
STAT_PHASES = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class Endpoint:
    """`http://host:port` or `grpc://host:port` (a bare `host:port` is HTTP)."""

    protocol: str
    address: str

    @classmethod
    def parse(cls, url: str, protocol: str | None = None) -> "Endpoint":
        scheme, _, rest = url.rpartition("://")
        scheme = protocol or scheme or "http"
        if scheme not in PROTOCOLS:
            raise ResnetDeployError(f"{url}: unknown protocol {scheme!r}; use http:// or grpc://")
        host, _, port = rest.rstrip("/").partition(":")
        if not host or (port and not port.isdigit()):
            raise ResnetDeployError(f"{url}: expected [http|grpc://]host[:port]")
        return cls(scheme, f"{host}:{port or DEFAULT_PORTS[scheme]}")

    def sibling(self, protocol: str) -> "Endpoint":
        """The same server's other protocol on Triton's default offset (HTTP port + 1 = gRPC)."""
        host, port = self.address.rsplit(":", 1)
        offset = PROTOCOLS.index(protocol) - PROTOCOLS.index(self.protocol)
        return Endpoint(protocol, f"{host}:{int(port) + offset}")

    def __str__(self) -> str:
        return f"{self.protocol}://{self.address}"

    def module(self):
        import tritonclient.grpc as grpc
        import tritonclient.http as http

        return http if self.protocol == "http" else grpc


@dataclass(frozen=True)
class ModelIO:
    """What a client must send: input name, Triton datatype, dims without the batch axis, batch limit."""

    model: str
    input_name: str
    datatype: str
    dims: tuple[int, ...]
    max_batch_size: int
    outputs: tuple[str, ...]

    @property
    def raw_pixels(self) -> bool:
        return self.datatype == "UINT8"


class ModelClient:
    """One connection to one model; `infer` returns class ids (and logits) for a batch."""

    def __init__(self, endpoint: Endpoint, model: str, timeout_s: float = 30.0):
        self.endpoint = endpoint
        self.model = model
        self.timeout_s = timeout_s
        self._module = endpoint.module()
        if endpoint.protocol == "http":
            self._client = self._module.InferenceServerClient(
                endpoint.address, connection_timeout=timeout_s, network_timeout=timeout_s
            )
        else:
            self._client = self._module.InferenceServerClient(endpoint.address)

    def __enter__(self) -> "ModelClient":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        self._client.close()

    def io(self) -> ModelIO:
        """Read the model's metadata and config from the server (errors name the server and model)."""
        try:
            grpc_kwargs = {"as_json": True} if self.endpoint.protocol == "grpc" else {}
            metadata = self._client.get_model_metadata(self.model, **grpc_kwargs)
            config = self._client.get_model_config(self.model, **grpc_kwargs)
        except Exception as exc:
            raise ResnetDeployError(f"{self.endpoint}: model {self.model!r}: {error_message(exc)}") from exc
        config = config.get("config", config)
        if len(metadata["inputs"]) != 1:
            raise ResnetDeployError(
                f"{self.endpoint}: model {self.model!r} has {len(metadata['inputs'])} inputs; expected one image input"
            )
        tensor = metadata["inputs"][0]
        max_batch = int(config.get("max_batch_size", 0))
        dims = tuple(int(d) for d in tensor["shape"])[1 if max_batch else 0 :]
        return ModelIO(
            self.model,
            tensor["name"],
            tensor["datatype"],
            dims,
            max_batch,
            tuple(o["name"] for o in metadata["outputs"]),
        )

    def infer(self, io: ModelIO, batch: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name; `class_id` is added from the first output's argmax when the model lacks it
        (a stock-Triton repository serves the artifact's own outputs)."""
        request = self._module.InferInput(io.input_name, list(batch.shape), io.datatype)
        request.set_data_from_numpy(batch)
        timeout = {"client_timeout": self.timeout_s} if self.endpoint.protocol == "grpc" else {}
        result = self._client.infer(self.model, [request], **timeout)
        outputs = {name: result.as_numpy(name) for name in io.outputs}
        if all(value is None for value in outputs.values()):
            raise ResnetDeployError(
                f"{self.endpoint}: model {self.model!r} answered without outputs: it refused "
                "this request's input (NaN or infinite values) and answered the others batched "
                "with it"
            )
        if CLASS_ID not in outputs:
            outputs[CLASS_ID] = outputs[io.outputs[0]].argmax(axis=1)[:, None]
        return outputs

    def statistics(self) -> dict[str, Any]:
        """Cumulative server-side counts and nanoseconds for this model (Triton's statistics extension)."""
        grpc_kwargs = {"as_json": True} if self.endpoint.protocol == "grpc" else {}
        stats = self._client.get_inference_statistics(self.model, **grpc_kwargs)["model_stats"]
        totals = {
            "inference_count": 0,
            "execution_count": 0,
            "success_count": 0,
            "fail_count": 0,
            **{f"{phase}_ns": 0 for phase in STAT_PHASES},
        }
        for version in stats:
            inference = version.get("inference_stats", {})
            totals["inference_count"] += int(version.get("inference_count", 0))
            totals["execution_count"] += int(version.get("execution_count", 0))
            totals["success_count"] += int(inference.get("success", {}).get("count", 0))
            totals["fail_count"] += int(inference.get("fail", {}).get("count", 0))
            for phase in STAT_PHASES:
                totals[f"{phase}_ns"] += int(inference.get(phase, {}).get("ns", 0))
        return totals


def model_ready_url(http_address: str, model: str) -> str:
    """Triton's per-model readiness probe: 200 once the model is loaded (`/v2/health/ready` says ready
    before PyTriton has loaded any model, then 404s the inference for a second or more)."""
    return f"http://{http_address}/v2/models/{model}/ready"


def is_model_ready(http_address: str, model: str, timeout_s: float = 5.0) -> bool:
    """True when the model's readiness probe answers 200."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(model_ready_url(http_address, model), timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def wait_until_models_ready(
    http_address: str, models: Sequence[str], timeout_s: float = 60.0, poll_s: float = 0.1
) -> None:
    """Wait until every model's own readiness probe says ready; raise naming the first that does not."""
    deadline = time.monotonic() + timeout_s
    for model in models:
        while not is_model_ready(http_address, model):
            if time.monotonic() > deadline:
                raise ResnetDeployError(
                    f"model {model!r} is not ready {timeout_s:g} s after the server started "
                    f"({model_ready_url(http_address, model)} does not answer 200)"
                )
            time.sleep(poll_s)


def error_message(exc: Exception) -> str:
    """The status and first line of a tritonclient error (or the first line of any other)."""
    message = getattr(exc, "message", None)
    text = (message() if callable(message) else str(exc)).strip()
    status_fn = getattr(exc, "status", None)
    status = status_fn() if callable(status_fn) else None
    first_line = text.splitlines()[0] if text else type(exc).__name__
    return f"[{status}] {first_line}" if status and str(status) not in first_line else first_line
