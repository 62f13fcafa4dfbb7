"""FP16 and INT8 artifacts from a trained model on real data; calibration methods; caches."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.onnx_info import describe_onnx
from resnet_deploy.quantize.cache import read_calibration_cache
from resnet_deploy.quantize.calibrate import (activation_tensors, entropy_amax, percentile_amax, HISTOGRAM_BINS)
from resnet_deploy.quantize.fp16 import convert_to_fp16
from resnet_deploy.quantize.int8 import make_int8_artifacts, validation_top1
from resnet_deploy.quantize.qdq import quantized_activations


@pytest.fixture(scope="module")
def int8(trained_onnx, data_dir):
    return make_int8_artifacts(trained_onnx, trained_onnx.parent / "calibration", count=256, cpu_int8=True,
                               data_dir=data_dir)


@pytest.fixture(scope="module")
def validation(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    return data.normalize(dataset.val_images[:2000]), dataset.val_labels[:2000]


@pytest.mark.slow
def test_fp16_graph_keeps_fp32_io_and_accuracy(trained_onnx, validation, tmp_path):
    summary = convert_to_fp16(trained_onnx, tmp_path / "tiny.fp16.onnx")
    info = describe_onnx(tmp_path / "tiny.fp16.onnx")
    assert info["precision"] == "fp16" and summary["source_onnx_sha256"]
    assert info["inputs"][0]["dtype"] == "float32" and info["outputs"][0]["dtype"] == "float32"
    fp32, fp16 = (validation_top1(p, *validation) for p in (trained_onnx, tmp_path / "tiny.fp16.onnx"))
    assert abs(fp32 - fp16) <= 0.002


@pytest.mark.slow
def test_int8_methods_produce_accurate_qdq_graphs(int8, trained_onnx):
    fp32 = int8["methods"]["fp32"]["val_top1"]
    assert fp32 > 0.6
    for method in ("entropy", "max", "percentile", "cpu"):
        assert int8["methods"][method]["val_top1"] >= fp32 - 0.01, method
    assert int8["best_method"] in ("entropy", "max", "percentile")
    assert int8["calibration"] == {"split": "train", "count": 256, "seed": 0}


@pytest.mark.slow
def test_qdq_graph_is_symmetric_int8_with_per_channel_weights(int8, trained_onnx):
    model = onnx.load(int8["methods"]["entropy"]["onnx"])
    onnx.checker.check_model(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    dq_weights = [n for n in model.graph.node
                  if n.op_type == "DequantizeLinear" and n.input[0] in initializers and initializers[n.input[0]].ndim >= 2]
    assert len(dq_weights) == describe_onnx(trained_onnx)["op_counts"]["Conv"] + 1
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            zero_point = initializers[node.input[2]]
            assert zero_point.dtype == np.int8 and not zero_point.any()
    conv_weight_scale = initializers[dq_weights[0].input[1]]
    assert conv_weight_scale.ndim == 1 and conv_weight_scale.size == initializers[dq_weights[0].input[0]].shape[0]
    fp32 = onnx.load(str(trained_onnx))
    activations = quantized_activations(fp32)
    assert activations[0] == "input" and len(activations) == sum(n.op_type == "QuantizeLinear" for n in model.graph.node)


@pytest.mark.slow
def test_cache_covers_every_activation_with_exact_scales(int8, trained_onnx):
    header, scales = read_calibration_cache(int8["methods"]["max"]["cache"])
    amax = json.loads(open(int8["methods"]["max"]["amax"]).read())
    assert header.algorithm == "EntropyCalibration2" and header.version_code == 100300
    assert set(scales) == set(activation_tensors(onnx.load(str(trained_onnx))))
    for name, value in amax.items():
        assert scales[name] == float(np.float32(value / 127.0))


def heavy_tailed_histogram() -> tuple[np.ndarray, float]:
    values = np.abs(np.random.default_rng(0).standard_cauchy(200_000))
    values = values[values < 200]
    counts, _ = np.histogram(values, bins=HISTOGRAM_BINS, range=(0, values.max()))
    return counts, float(values.max())


def test_entropy_clips_a_heavy_tail_below_percentile_below_max():
    counts, top = heavy_tailed_histogram()
    entropy, percentile = entropy_amax(counts, top), percentile_amax(counts, top, 99.99)
    assert entropy < percentile <= top
    assert entropy < 0.6 * top


@pytest.mark.slow
def test_calibrate_command_writes_all_methods(trained_onnx, data_dir, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["calibrate", "--onnx", str(trained_onnx), "--count", "128", "--out-dir", str(tmp_path),
              "--data-dir", str(data_dir)])
    assert exit_info.value.code == 0
    summary = json.loads((tmp_path / "tiny.calibration.json").read_text())
    assert set(summary["methods"]) == {"fp32", "entropy", "max", "percentile"}
    assert "validation split" in capsys.readouterr().out


def test_malformed_cache_via_cli_exits_2(tmp_path, capsys):
    (tmp_path / "bad.cache").write_text("nonsense\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", str(tmp_path / "bad.cache")])
    assert exit_info.value.code == 2 and "bad.cache: line 1" in capsys.readouterr().err
