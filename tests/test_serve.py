"""`resnet-deploy serve` on a real Triton server (PyTriton, 127.0.0.1, free ports): the model contract,
the raw-pixel model, bad input refused while the server keeps serving, metrics and statistics, and
`loadtest` with accuracy through the server equal to the local runner's."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.serve.process import ServeProcess
from tests.serving import require_serving

pytestmark = pytest.mark.usefixtures("serving_installed")
MAX_BATCH = 32


@pytest.fixture(scope="module")
def serving_installed():
    require_serving()


@pytest.fixture(scope="module")
def server(serving_installed, trained_onnx, tmp_path_factory):
    process = ServeProcess([trained_onnx], "--max-batch-size", str(MAX_BATCH), "--preferred-batch-sizes", "4,8",
                            "--max-queue-delay-us", "1000", "--instances", "2", "--threads", "1",
                            "--drain-timeout", "5", workspace=tmp_path_factory.mktemp("pytriton"))
    yield process.start()
    process.stop()


@pytest.fixture(scope="module")
def test_images(data_dir) -> np.ndarray:
    return data.load_fashion_mnist(data_dir).test_images


@pytest.fixture(scope="module")
def local_logits(trained_onnx, test_images) -> np.ndarray:
    from resnet_deploy.runners import load_runner

    with load_runner(trained_onnx) as runner:
        return runner.infer({"input": data.normalize(test_images[:16])})["logits"]


def client(server, model="tiny", protocol="http"):
    from resnet_deploy.serve.client import Endpoint, ModelClient

    return ModelClient(Endpoint(protocol, server.http_url if protocol == "http" else server.grpc_url), model)


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_served_model_answers_like_the_local_runner(server, test_images, local_logits, protocol):
    with client(server, protocol=protocol) as c:
        io = c.io()
        outputs = c.infer(io, data.normalize(test_images[:16]))
    assert (io.input_name, io.datatype, io.dims, io.max_batch_size) == ("images", "FP32", (1, 28, 28), MAX_BATCH)
    assert io.outputs == ("logits", "class_id")
    np.testing.assert_allclose(outputs["logits"], local_logits, rtol=1e-5, atol=1e-5)
    assert outputs["class_id"].dtype == np.int64 and outputs["class_id"].shape == (16, 1)
    np.testing.assert_array_equal(outputs["class_id"][:, 0], local_logits.argmax(axis=1))


def test_raw_pixel_model_normalizes_on_the_server(server, test_images, local_logits):
    with client(server, "tiny-raw") as c:
        io = c.io()
        outputs = c.infer(io, test_images[:16])
    assert (io.input_name, io.datatype, io.dims) == ("pixels", "UINT8", (28, 28))
    np.testing.assert_allclose(outputs["logits"], local_logits, rtol=1e-5, atol=1e-5)


def test_config_carries_batching_and_instances(server):
    import tritonclient.http as http

    config = http.InferenceServerClient(server.http_url).get_model_config("tiny")
    assert config["max_batch_size"] == MAX_BATCH
    assert config["dynamic_batching"]["preferred_batch_size"] == [4, 8]
    assert config["dynamic_batching"]["max_queue_delay_microseconds"] == 1000
    assert config["instance_group"][0]["count"] == 2


def test_classification_extension_on_logits(server, test_images, local_logits):
    import tritonclient.http as http

    c = http.InferenceServerClient(server.http_url)
    request = http.InferInput("images", [4, 1, 28, 28], "FP32")
    request.set_data_from_numpy(data.normalize(test_images[:4]))
    result = c.infer("tiny", [request], outputs=[http.InferRequestedOutput("logits", class_count=3)])
    top = result.as_numpy("logits")
    assert top.shape == (4, 3)
    assert [int(row[0].decode().split(":")[1]) for row in top] == list(local_logits[:4].argmax(axis=1))


def _send(server, protocol, model="tiny", name="images", array=None, datatype="FP32", shape=None):
    from resnet_deploy.serve.client import Endpoint

    module = Endpoint(protocol, "x:1").module()
    c = module.InferenceServerClient(server.http_url if protocol == "http" else server.grpc_url)
    request = module.InferInput(name, list(shape or array.shape), datatype)
    request.set_data_from_numpy(array)
    return c.infer(model, [request])


def _nan_batch() -> np.ndarray:
    batch = np.zeros((3, 1, 28, 28), np.float32)
    batch[1, 0, 5, 5] = np.nan
    return batch


BAD_REQUESTS = {
    "wrong shape": (dict(array=np.zeros((2, 1, 27, 28), np.float32)), "unexpected shape for input 'images'"),
    "wrong dtype": (dict(array=np.zeros((2, 1, 28, 28), np.float64), datatype="FP64"), "data-type is 'FP64'"),
    "wrong input name": (dict(name="pixels", array=np.zeros((2, 1, 28, 28), np.float32)), "unexpected inference input"),
    "NaN pixels": (dict(array=_nan_batch()), "request 1 of 1: 1 NaN/Inf values"),
    "empty batch": (dict(array=np.zeros((0, 1, 28, 28), np.float32)), "byte size mismatch"),
    "batch above max": (dict(array=np.zeros((MAX_BATCH + 1, 1, 28, 28), np.float32)), f"batch-size must be <= {MAX_BATCH}"),
    "unknown model": (dict(model="resnet999", array=np.zeros((1, 1, 28, 28), np.float32)), "unknown model"),
}


@pytest.mark.parametrize("protocol", ["http", "grpc"])
@pytest.mark.parametrize("case", list(BAD_REQUESTS))
def test_bad_request_is_a_clear_error_and_the_server_keeps_serving(server, test_images, local_logits, protocol, case):
    from tritonclient.utils import InferenceServerException

    kwargs, message = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as error:
        _send(server, protocol, **kwargs)
    assert message in error.value.message()
    if case not in ("NaN pixels",):  # PyTriton reports every callable error as INTERNAL (500)
        assert str(error.value.status()) in ("400", "404", "StatusCode.INVALID_ARGUMENT", "StatusCode.NOT_FOUND")
    logits = _send(server, protocol, array=data.normalize(test_images[:16])).as_numpy("logits")
    np.testing.assert_allclose(logits, local_logits, rtol=1e-5, atol=1e-5)


def test_oversized_body_is_refused_and_the_server_keeps_serving(server, test_images, local_logits):
    header = json.dumps({"inputs": [{"name": "images", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                     "parameters": {"binary_data_size": 100 << 20}}]}).encode()
    request = urllib.request.Request(f"http://{server.http_url}/v2/models/tiny/infer",
                                     data=header + bytes(100 << 20),
                                     headers={"Inference-Header-Content-Length": str(len(header)),
                                              "Content-Type": "application/octet-stream"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert error.value.code == 400 and b"byte size mismatch" in error.value.read()
    logits = _send(server, "http", array=data.normalize(test_images[:16])).as_numpy("logits")
    np.testing.assert_allclose(logits, local_logits, rtol=1e-5, atol=1e-5)


def test_metrics_statistics_open_and_repository_control_closed(server, test_images):
    import tritonclient.http as http
    from tritonclient.utils import InferenceServerException

    with client(server) as c:
        before = c.statistics()["success_count"]
        c.infer(c.io(), data.normalize(test_images[:2]))
        assert c.statistics()["success_count"] == before + 1
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=10).read().decode()
    assert 'nv_inference_request_success{model="tiny",version="1"}' in metrics
    with pytest.raises(InferenceServerException) as error:
        http.InferenceServerClient(server.http_url).unload_model("tiny")
    assert str(error.value.status()) == "403"
    assert http.InferenceServerClient(server.http_url).is_model_ready("tiny")


def test_readiness_comes_after_the_warm_up(server):
    lines = server.lines
    warmed = [i for i, line in enumerate(lines) if "warm-up inference done on every instance" in line]
    loaded: dict[str, list[int]] = {}
    for i, line in enumerate(lines):
        match = re.search(r"successfully loaded '([^']+)'", line)
        if match:
            loaded.setdefault(match.group(1), []).append(i)
    ready = [i for i, line in enumerate(lines) if line.startswith("ready:")]
    log = "\n".join(lines)
    assert len(warmed) == 2 and sorted(loaded) == ["tiny", "tiny-raw"] and len(ready) == 1, log
    first_loads = [indices[0] for indices in loaded.values()]
    assert max(warmed) < min(first_loads) and max(first_loads) < ready[0], log


@pytest.mark.parametrize("model", ["tiny", "tiny-raw"])
def test_loadtest_over_both_protocols_with_accuracy_equal_to_local(server, trained_onnx, tmp_path, capsys, model):
    report_path, plot_path = tmp_path / "load.json", tmp_path / "load.png"
    with pytest.raises(SystemExit) as exit_info:
        main(["loadtest", server.http_url, "--grpc-url", server.grpc_url, "--model", model, "--concurrency", "1,4",
              "--duration-s", "1",
              "--warmup-s", "0.3", "--reference", str(trained_onnx), "--json", str(report_path),
              "--plot", str(plot_path), "--fail-on-errors"])
    assert exit_info.value.code == 0, capsys.readouterr()
    report = json.loads(report_path.read_text())
    assert [(r["protocol"], r["concurrency"]) for r in report["runs"]] == [("http", 1), ("http", 4), ("grpc", 1), ("grpc", 4)]
    for run in report["runs"]:
        assert run["sent"] == run["answered"] > 0 and run["failed"] == 0
        assert run["latency_ms"]["p50"] <= run["latency_ms"]["p99"]
        assert run["server"]["requests"] >= run["answered"] and run["server"]["avg_batch"] >= 1
        assert run["server"]["compute_infer_ms"] > 0
    accuracy = report["accuracy"]
    assert accuracy["images"] == 10000 and accuracy["mismatches"] == 0
    assert accuracy["top1"] == accuracy["local_top1"] > 0.5
    assert plot_path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_loadtest_accuracy_gate_fails_against_another_model(server, untrained_onnx, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["loadtest", server.http_url, "--model", "tiny", "--protocols", "http", "--concurrency", "1",
              "--duration-s", "0.3", "--warmup-s", "0", "--reference", str(untrained_onnx),
              "--json", str(tmp_path / "load.json"), "--plot", str(tmp_path / "load.png")])
    assert exit_info.value.code == 1
    assert "server predictions differ" in capsys.readouterr().err


def test_loadtest_unknown_model_exits_2(server, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["loadtest", server.http_url, "--model", "nope", "--json", str(tmp_path / "x.json")])
    assert exit_info.value.code == 2 and "nope" in capsys.readouterr().err
