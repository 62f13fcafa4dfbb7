"""`serve` (issue 18): readiness is each model's own probe, not Triton's server-wide one, and a request
with NaN pixels never costs the requests batched with it their answers (real Triton on 127.0.0.1)."""

from __future__ import annotations

import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.serve.client import Endpoint, ModelClient, model_ready_url, wait_until_models_ready
from resnet_deploy.serve.process import ServeProcess
from tests.serving import require_serving

CLIENTS, REQUESTS_EACH, BAD_EVERY = 16, 25, 100  # 400 requests, 1% of them with a NaN pixel


class _LoadingTriton(BaseHTTPRequestHandler):
    """Triton while PyTriton loads its models: the server says ready, model `m` answers 404 `not_ready` times."""

    not_ready = 0
    probes = 0

    def do_GET(self):  # http.server's name for it
        if self.path == "/v2/models/m/ready":
            type(self).probes += 1
        ready = self.path == "/v2/health/ready" or (self.path == "/v2/models/m/ready"
                                                    and type(self).probes > type(self).not_ready)
        self.send_response(200 if ready else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


@pytest.fixture
def loading_triton():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _LoadingTriton)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_server_ready_but_model_not_ready_is_not_ready(loading_triton):
    _LoadingTriton.not_ready, _LoadingTriton.probes = 5, 0
    assert urllib.request.urlopen(f"http://{loading_triton}/v2/health/ready", timeout=5).status == 200
    wait_until_models_ready(loading_triton, ["m"], timeout_s=10, poll_s=0.01)
    assert _LoadingTriton.probes == 6  # waited through the five 404s
    _LoadingTriton.not_ready, _LoadingTriton.probes = 10**9, 0
    with pytest.raises(ResnetDeployError, match=r"model 'm' is not ready 0.2 s after the server started "
                                                rf"\({model_ready_url(loading_triton, 'm')} does not answer 200\)"):
        wait_until_models_ready(loading_triton, ["m"], timeout_s=0.2, poll_s=0.01)


@pytest.fixture(scope="module")
def server(untrained_onnx, tmp_path_factory):
    require_serving()
    process = ServeProcess([untrained_onnx], "--max-batch-size", "32", "--max-queue-delay-us", "20000",
                           "--no-raw-model", "--threads", "1", "--drain-timeout", "2",
                           workspace=tmp_path_factory.mktemp("pytriton"))
    yield process.start()
    process.stop()


def test_ready_line_names_the_per_model_probe_and_the_model_is_ready(server):
    ready = next(line for line in server.lines if line.startswith("ready:"))
    assert ready.startswith("ready: tiny loaded and warmed up (probe each: ")
    assert "/v2/models/NAME/ready" in ready
    assert urllib.request.urlopen(model_ready_url(server.http_url, "tiny"), timeout=5).status == 200


def test_one_percent_nan_requests_fail_no_valid_request(server, untrained_onnx, data_dir):
    from tritonclient.utils import InferenceServerException

    from resnet_deploy.runners import load_runner

    images = data.normalize(data.load_fashion_mnist(data_dir).test_images[:CLIENTS])
    with load_runner(untrained_onnx) as runner:
        expected = runner.infer({"input": images})["logits"]
    results: dict[int, object] = {}

    def client(number: int) -> None:
        with ModelClient(Endpoint("http", server.http_url), "tiny") as c:
            io = c.io()
            for k in range(number * REQUESTS_EACH, (number + 1) * REQUESTS_EACH):
                batch = images[k % CLIENTS][None].copy()
                if k % BAD_EVERY == BAD_EVERY - 1:
                    batch[0, 0, 3, 3] = np.nan
                try:
                    results[k] = c.infer(io, batch)["logits"][0]
                except (InferenceServerException, ResnetDeployError) as exc:
                    results[k] = exc

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    bad = {k for k in results if k % BAD_EVERY == BAD_EVERY - 1}
    assert len(results) == CLIENTS * REQUESTS_EACH and len(bad) == CLIENTS * REQUESTS_EACH // BAD_EVERY
    failed_good = {k: r for k, r in results.items() if k not in bad and isinstance(r, Exception)}
    assert failed_good == {}
    for k in set(results) - bad:
        np.testing.assert_allclose(results[k], expected[k % CLIENTS], rtol=1e-5, atol=1e-5)
    assert all(isinstance(results[k], Exception) for k in bad)
    batched = [k for k in bad if isinstance(results[k], ResnetDeployError)]
    assert batched, "no NaN request was batched with valid ones; the test did not exercise the batch"
    assert all("answered without outputs" in str(results[k]) for k in batched)
    alone = [results[k] for k in bad if isinstance(results[k], InferenceServerException)]
    assert all("NaN/Inf values" in exc.message() for exc in alone)
