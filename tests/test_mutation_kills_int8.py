"""The INT8 stage on a tiny ONNX classifier and real Fashion-MNIST, written to kill the mutants
tools/mutation.sh found surviving in resnet_deploy/quantize/int8.py: every artifact path, the summary's
fields, the best method picked on validation (ties to entropy) and read_amax's refusals."""

from __future__ import annotations

import json
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError, DataError
from resnet_deploy.fileio import sha256_file
from resnet_deploy.quantize import int8
from resnet_deploy.quantize.cache import read_calibration_cache
from resnet_deploy.quantize.fallback import FallbackSettings
from resnet_deploy.quantize.int8 import (
    Int8Paths,
    make_fallback_artifacts,
    make_int8_artifacts,
    read_amax,
    validation_top1,
)
from tests.classifier_graphs import write_classifier


def write_conv_classifier(path: Path) -> Path:
    """input -> Conv (4 channels, 7x7, stride 7) -> Relu -> Flatten -> Gemm (transB) -> logits, with weight
    channels of very different magnitudes, so per-channel and per-tensor weight scales predict differently."""
    rng = np.random.default_rng(1)
    conv = rng.standard_normal((4, 1, 7, 7)).astype(np.float32) * np.float32([1, 0.01, 0.1, 0.001])[:, None, None, None]
    fc = rng.standard_normal((10, 64)).astype(np.float32) * np.logspace(0, -3, 10, dtype=np.float32)[:, None]
    initializers = [onnx.numpy_helper.from_array(conv, "conv.weight"), onnx.numpy_helper.from_array(fc, "fc.weight"),
                    onnx.numpy_helper.from_array(np.zeros(10, np.float32), "fc.bias")]
    nodes = [onnx.helper.make_node("Conv", ["input", "conv.weight"], ["conv_out"], name="conv", strides=[7, 7]),
             onnx.helper.make_node("Relu", ["conv_out"], ["relu_out"], name="relu"),
             onnx.helper.make_node("Flatten", ["relu_out"], ["flat"], name="flatten"),
             onnx.helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1)]
    graph = onnx.helper.make_graph(
        nodes, "conv_classifier", [onnx.helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["N", 1, 28, 28])],
        [onnx.helper.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", 10])], initializers)
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)], producer_name="tests")
    model.ir_version = 9
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def weight_scale_dims(onnx_path: str | Path, weight: str) -> list[int]:
    """The dims of the scale of the DequantizeLinear that reads `weight` (its quantized initializer)."""
    model = onnx.load(str(onnx_path))
    initializers = {i.name: i for i in model.graph.initializer}
    scales = [initializers[n.input[1]] for n in model.graph.node
              if n.op_type == "DequantizeLinear" and n.input[0].startswith(weight)]
    assert len(scales) == 1, [n.input for n in model.graph.node]
    return list(scales[0].dims)


def fake_clock(*readings: float) -> types.SimpleNamespace:
    """A stand-in for int8's `time` module whose perf_counter returns `readings` in turn."""
    return types.SimpleNamespace(perf_counter=iter(readings).__next__)


def test_paths_of_every_artifact(tmp_path):
    paths = Int8Paths(tmp_path, "m")
    assert paths.qdq("max") == tmp_path / "m.int8-max.qdq.onnx"
    assert paths.cache("max") == tmp_path / "m.max.cache"
    assert paths.amax("max") == tmp_path / "m.max.amax.json"
    assert paths.fallback_qdq("max") == tmp_path / "m.int8-max.fallback.qdq.onnx"
    assert paths.layer_precisions("max") == tmp_path / "m.int8-max.layer-precisions.json"
    assert paths.fallback_report("max") == tmp_path / "m.int8-max.fallback.json"
    assert paths.qat_fp32 == tmp_path / "m.qat.onnx"
    assert paths.qat_report == tmp_path / "m.qat.json"
    assert paths.cpu_int8 == tmp_path / "m.int8-cpu.onnx"
    assert paths.summary == tmp_path / "m.calibration.json"
    paths.summary.write_text('{"best_method": "percentile"}')
    assert paths.best_method() == "percentile"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_classifier(tmp_path_factory.mktemp("int8") / "tiny.onnx")


@pytest.fixture(scope="module")
def validation(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    return data.normalize(dataset.val_images[:700]), dataset.val_labels[:700]


def test_validation_top1_is_the_graphs_accuracy(tiny, validation):
    images, labels = validation
    logits = ort.InferenceSession(str(tiny), providers=["CPUExecutionProvider"]).run(None, {"input": images})[0]
    assert validation_top1(tiny, images, labels) == pytest.approx(float((logits.argmax(1) == labels).mean()))


@pytest.fixture(scope="module")
def summary(tiny, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("int8-out")
    return out, make_int8_artifacts(tiny, out, methods=("max", "percentile"), count=16, seed=3,
                                    trt_version="8.6.1", data_dir=data_dir)


def test_summary_fields_and_files(tiny, summary, data_dir):
    out, result = summary
    assert result["source_onnx"] == str(tiny) and result["source_onnx_sha256"] == sha256_file(tiny)
    assert result["calibration"] == {"split": "train", "count": 16, "seed": 3}
    assert result["weights"] == "per-channel" and result["trt_cache_version"] == "8.6.1"
    assert list(result["methods"]) == ["fp32", "max", "percentile"]
    assert set(result["timings"]) >= {"statistics_seconds", "total_seconds"} and result["timings"]["total_seconds"] >= 0
    assert json.loads((out / "tiny.calibration.json").read_text()) == result
    dataset = data.load_fashion_mnist(data_dir)
    fp32_top1 = validation_top1(tiny, data.normalize(dataset.val_images), dataset.val_labels)
    assert result["methods"]["fp32"] == {"onnx": str(tiny), "val_top1": fp32_top1}
    for method in ("max", "percentile"):
        entry = result["methods"][method]
        amax = json.loads((out / f"tiny.{method}.amax.json").read_text())
        assert entry["onnx"] == str(out / f"tiny.int8-{method}.qdq.onnx")
        assert entry["cache"] == str(out / f"tiny.{method}.cache")
        assert entry["amax"] == str(out / f"tiny.{method}.amax.json")
        assert entry["quantized_activations"] > 0
        header, scales = read_calibration_cache(entry["cache"])
        assert header.version_code == 8601 and set(scales) == set(amax)
        qdq_top1 = validation_top1(Path(entry["onnx"]), data.normalize(dataset.val_images), dataset.val_labels)
        assert entry["val_top1"] == qdq_top1
    images = data.calibration_images(16, seed=3, data_dir=data_dir)
    ranges = json.loads((out / "tiny.max.amax.json").read_text())
    assert ranges["input"] == pytest.approx(float(np.abs(images).max()))
    # the pooled tensor is each image's mean: its range depends on which images (count, seed) were drawn
    assert ranges["pooled"] == pytest.approx(float(np.abs(images.mean(axis=(2, 3))).max()), rel=1e-5)
    other = data.calibration_images(16, seed=0, data_dir=data_dir)
    assert ranges["pooled"] != pytest.approx(float(np.abs(other.mean(axis=(2, 3))).max()), rel=1e-5)
    best = max(("max", "percentile"), key=lambda m: (result["methods"][m]["val_top1"], m == "entropy"))
    assert result["best_method"] == best


def test_per_tensor_weights(tiny, data_dir, tmp_path):
    result = make_int8_artifacts(tiny, tmp_path, methods=("max",), count=8, per_channel=False, data_dir=data_dir)
    assert result["weights"] == "per-tensor"
    model = onnx.load(str(tmp_path / "tiny.int8-max.qdq.onnx"))
    scales = [i for i in model.graph.initializer if "weight" in i.name and "scale" in i.name]
    assert scales and all(len(s.dims) == 0 for s in scales)


@pytest.mark.parametrize("scores, best", [
    ({"entropy": 0.8, "max": 0.9, "percentile": 0.7}, "max"),
    ({"entropy": 0.8, "max": 0.8, "percentile": 0.8}, "entropy"),
    ({"entropy": 0.7, "max": 0.8, "percentile": 0.8}, "max"),
    ({"entropy": 0.7, "max": 0.6, "percentile": 0.8}, "percentile"),
])
def test_best_method_is_the_best_on_validation_ties_to_entropy(tiny, data_dir, tmp_path, monkeypatch, scores, best):
    seen = []

    def scored(onnx_path, images, labels, simulate_qdq=False):
        seen.append(len(labels))
        return next((v for m, v in scores.items() if f"int8-{m}." in Path(onnx_path).name), 0.5)

    monkeypatch.setattr(int8, "validation_top1", scored)
    result = make_int8_artifacts(tiny, tmp_path, count=8, data_dir=data_dir)
    assert result["best_method"] == best
    assert Int8Paths(tmp_path, "tiny").best_method() == best
    assert seen == [len(data.load_fashion_mnist(data_dir).val_labels)] * 4


def test_cpu_int8_artifact(tiny, data_dir, tmp_path):
    result = make_int8_artifacts(tiny, tmp_path, methods=("max",), count=8, cpu_int8=True, data_dir=data_dir)
    assert result["methods"]["cpu"]["onnx"] == str(tmp_path / "tiny.int8-cpu.onnx")
    dataset = data.load_fashion_mnist(data_dir)
    expected = validation_top1(tmp_path / "tiny.int8-cpu.onnx", data.normalize(dataset.val_images), dataset.val_labels)
    assert result["methods"]["cpu"]["val_top1"] == expected > 0
    assert "cpu" not in make_int8_artifacts(tiny, tmp_path, methods=("max",), count=8, data_dir=data_dir)["methods"]


@pytest.mark.parametrize("content", ["", "[1, 2]", '{"a": "x"}', '{"a": null}'])
def test_read_amax_refuses(tmp_path, content):
    path = tmp_path / "m.max.amax.json"
    path.write_text(content)
    with pytest.raises(ArtifactError, match=r"m\.max\.amax\.json: cannot read activation ranges \(.+\); "
                                            r"run `resnet-deploy calibrate` first$"):
        read_amax(path)


def test_read_amax_missing_and_values(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read activation ranges"):
        read_amax(tmp_path / "absent.json")
    (tmp_path / "a.json").write_text('{"x": 2, "y": 0.5}')
    amax = read_amax(tmp_path / "a.json")
    assert amax == {"x": 2.0, "y": 0.5} and isinstance(amax["x"], float)


@pytest.mark.parametrize("per_channel", [True, False])
def test_fallback_artifacts_of_a_tiny_graph(tiny, data_dir, tmp_path, per_channel):
    from resnet_deploy.quantize.fallback import FallbackSettings
    from resnet_deploy.quantize.int8 import make_fallback_artifacts

    make_int8_artifacts(tiny, tmp_path, methods=("max",), count=8, data_dir=data_dir)
    lines = []
    report = make_fallback_artifacts(tiny, tmp_path, FallbackSettings(accuracy_budget_pp=0.0, fallback="fp32"),
                                     method="max", per_channel=per_channel, data_dir=data_dir, log=lines.append)
    sha = sha256_file(tiny)
    assert report["source_onnx"] == str(tiny) and report["source_onnx_sha256"] == sha and report["method"] == "max"
    assert report["weights"] == ("per-channel" if per_channel else "per-tensor")
    assert report["onnx"] == str(tmp_path / "tiny.int8-max.fallback.qdq.onnx")
    assert report["layer_precisions"] == str(tmp_path / "tiny.int8-max.layer-precisions.json")
    assert report["excluded"][0]["op_type"] == "Gemm" and report["excluded"][0]["precision"] == "fp32"
    assert report["accuracy"]["validation"]["images"] == 5000 and report["accuracy"]["test"]["images"] == 10000
    assert 0 <= report["seconds"] < 600 and lines
    assert json.loads((tmp_path / "tiny.int8-max.fallback.json").read_text()) == json.loads(json.dumps(report))
    precisions = json.loads((tmp_path / "tiny.int8-max.layer-precisions.json").read_text())
    assert precisions["source_onnx"] == str(tiny) and precisions["source_onnx_sha256"] == sha
    assert precisions["calibration_cache"] == str(tmp_path / "tiny.max.cache")
    assert [layer["precision"] for layer in precisions["layers"]] == ["fp32"]
    assert [n.op_type for n in onnx.load(report["onnx"]).graph.node] == ["GlobalAveragePool", "Flatten", "Gemm"]
    model = onnx.load(report["onnx"])
    weight_scales = [i for i in model.graph.initializer if "weight" in i.name and "scale" in i.name]
    assert all(len(s.dims) == (1 if per_channel else 0) for s in weight_scales)


def test_fallback_without_ranges_is_refused(tiny, tmp_path):
    from resnet_deploy.quantize.fallback import FallbackSettings
    from resnet_deploy.quantize.int8 import make_fallback_artifacts

    with pytest.raises(ArtifactError, match=r"tiny\.max\.amax\.json: cannot read activation ranges"):
        make_fallback_artifacts(tiny, tmp_path, FallbackSettings(accuracy_budget_pp=0.0), method="max")


def test_validation_is_scored_on_the_cpu_even_when_cuda_is_listed(tiny, validation, monkeypatch):
    real = ort.InferenceSession
    asked = []

    def session(path, options=None, providers=None, **kwargs):
        asked.append(providers)
        return real(path, options, providers=["CPUExecutionProvider"], **kwargs)

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", session)
    validation_top1(tiny, *validation)
    assert asked == [["CPUExecutionProvider"]]


@pytest.mark.parametrize("simulate", [None, True])
def test_validation_simulates_qdq_only_when_asked(tiny, validation, monkeypatch, simulate):
    real = ort.InferenceSession
    flags = []

    def session(path, options=None, providers=None, **kwargs):
        try:
            flags.append(options.get_session_config_entry("session.disable_quant_qdq"))
        except RuntimeError:  # not set
            flags.append(None)
        return real(path, options, providers=providers, **kwargs)

    monkeypatch.setattr(ort, "InferenceSession", session)
    validation_top1(tiny, *validation, **({"simulate_qdq": simulate} if simulate else {}))  # None: the default
    assert flags == (["1"] if simulate else [None])


def test_methods_are_ranked_with_simulated_qdq_and_the_cpu_graph_without(tiny, data_dir, tmp_path, monkeypatch):
    calls = []

    def scored(onnx_path, images, labels, simulate_qdq=False):
        calls.append((Path(onnx_path).name, simulate_qdq))
        return 0.5

    monkeypatch.setattr(int8, "validation_top1", scored)
    summary = make_int8_artifacts(tiny, tmp_path, methods=("max", "entropy"), count=8, cpu_int8=True,
                                  data_dir=data_dir)
    assert calls == [("tiny.onnx", False), ("tiny.int8-max.qdq.onnx", True), ("tiny.int8-entropy.qdq.onnx", True),
                     ("tiny.int8-cpu.onnx", False)]
    assert summary["validation"] == (
        "ONNX Runtime CPU; TensorRT-style Q/DQ graphs with session.disable_quant_qdq (weights folded)")


def test_defaults_512_train_images_seed_0_into_calibration(tiny, data_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = make_int8_artifacts(tiny, methods=("max",), data_dir=data_dir)
    assert result["calibration"] == {"split": "train", "count": 512, "seed": 0}
    assert sorted(p.name for p in (tmp_path / "calibration").iterdir()) == [
        "tiny.calibration.json", "tiny.int8-max.qdq.onnx", "tiny.max.amax.json", "tiny.max.cache"]


def test_the_data_folder_given_is_the_one_read(tiny, data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("RESNET_DEPLOY_DATA", str(tmp_path / "empty"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataError):  # nothing to find without the folder (and the download goes nowhere)
        data.find_data_dir()
    make_int8_artifacts(tiny, tmp_path, methods=("max",), count=8, data_dir=data_dir)
    report = make_fallback_artifacts(tiny, tmp_path, FallbackSettings(accuracy_budget_pp=100.0), method="max",
                                     data_dir=data_dir)
    assert report["accuracy"]["test"]["images"] == 10000


def test_ties_go_to_entropy_wherever_it_is_in_the_order(tiny, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(int8, "validation_top1", lambda onnx_path, images, labels, simulate_qdq=False: 0.75)
    result = make_int8_artifacts(tiny, tmp_path, methods=("max", "percentile", "entropy"), count=8, data_dir=data_dir)
    assert list(result["methods"]) == ["fp32", "max", "percentile", "entropy"] and result["best_method"] == "entropy"


def test_total_seconds_rounded_to_milliseconds(tiny, data_dir, tmp_path, monkeypatch):
    monkeypatch.setattr(int8, "time", fake_clock(1000.0, 1001.23456))
    result = make_int8_artifacts(tiny, tmp_path, methods=("max",), count=8, data_dir=data_dir)
    assert result["timings"]["total_seconds"] == 1.235
    monkeypatch.setattr(int8, "time", fake_clock(50.0, 52.34567))
    report = make_fallback_artifacts(tiny, tmp_path, FallbackSettings(accuracy_budget_pp=100.0), method="max",
                                     data_dir=data_dir)
    assert report["seconds"] == 2.346
    assert json.loads((tmp_path / "tiny.int8-max.fallback.json").read_text())["seconds"] == 2.346


@pytest.fixture(scope="module")
def conv_int8(data_dir, tmp_path_factory):
    """The conv classifier's INT8 artifacts, per-channel and per-tensor: {per_channel: (folder, summary)}."""
    root = tmp_path_factory.mktemp("conv-int8")
    model = write_conv_classifier(root / "conv.onnx")
    runs = {}
    for per_channel in (True, False):
        out = root / ("per-channel" if per_channel else "per-tensor")
        kwargs = {} if per_channel else {"per_channel": False}
        runs[per_channel] = out, make_int8_artifacts(model, out, methods=("max",), count=16, data_dir=data_dir, **kwargs)
    return model, runs


def test_int8_graph_weights_per_channel_by_default(conv_int8):
    _, runs = conv_int8
    assert weight_scale_dims(runs[True][0] / "conv.int8-max.qdq.onnx", "conv.weight") == [4]
    assert weight_scale_dims(runs[False][0] / "conv.int8-max.qdq.onnx", "conv.weight") == []
    top1 = {per_channel: summary["methods"]["max"]["val_top1"] for per_channel, (_, summary) in runs.items()}
    assert top1[True] != top1[False]  # the granularity shows in the scores, so the tests below can tell


@pytest.mark.parametrize("per_channel", [True, False])
def test_fallback_scores_and_graph_use_the_weight_granularity(conv_int8, data_dir, per_channel):
    model, runs = conv_int8
    out, summary = runs[per_channel]
    kwargs = {} if per_channel else {"per_channel": False}  # per-channel is the default
    report = make_fallback_artifacts(model, out, FallbackSettings(accuracy_budget_pp=100.0), method="max",
                                     data_dir=data_dir, **kwargs)
    assert report["excluded"] == [] and report["weights"] == ("per-channel" if per_channel else "per-tensor")
    accuracy = report["accuracy"]
    assert accuracy["validation"]["ptq_top1"] == summary["methods"]["max"]["val_top1"]
    dataset = data.load_fashion_mnist(data_dir)
    test_top1 = validation_top1(out / "conv.int8-max.qdq.onnx", data.normalize(dataset.test_images),
                                dataset.test_labels)
    assert accuracy["test"]["ptq_top1"] == accuracy["test"]["fallback_top1"] == test_top1
    assert weight_scale_dims(report["onnx"], "conv.weight") == ([4] if per_channel else [])
    assert weight_scale_dims(report["onnx"], "fc.weight") == ([10] if per_channel else [])


def test_fallback_graph_keeps_the_excluded_layer_out_of_int8(conv_int8, data_dir):
    model, runs = conv_int8
    out, _ = runs[True]
    report = make_fallback_artifacts(model, out, FallbackSettings(keep_fp32=("conv",)), method="max",
                                     data_dir=data_dir)
    assert [layer["node"] for layer in report["excluded"]] == ["conv"]
    graph = onnx.load(report["onnx"]).graph
    assert graph.node[0].op_type == "Conv" and list(graph.node[0].input) == ["input", "conv.weight"]
    assert weight_scale_dims(report["onnx"], "fc.weight") == [10]
