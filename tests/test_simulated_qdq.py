"""`simulate_qdq` for TensorRT-style Q/DQ graphs on ONNX Runtime: the weights' DequantizeLinear folded into
constants (ONNX Runtime otherwise dequantizes them at every run) and logits that track the default path.
Which graphs `make_int8_artifacts` scores this way: tests/test_mutation_kills_int8.py."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import pytest

from resnet_deploy import data
from resnet_deploy.quantize.qdq import insert_qdq
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def qdq_graph(untrained_onnx, untrained_amax, tmp_path_factory):
    path = tmp_path_factory.mktemp("simulated") / "tiny.qdq.onnx"
    insert_qdq(untrained_onnx, untrained_amax, path)
    return path


def optimized_ops(path, simulate_qdq: bool, tmp_path) -> Counter[str]:
    """Operator types of the graph ONNX Runtime actually runs (its optimized model, saved)."""
    import onnxruntime as ort

    saved = tmp_path / f"optimized-{simulate_qdq}.onnx"
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(saved)
    runner = OnnxRuntimeRunner(path, providers=["CPUExecutionProvider"], simulate_qdq=simulate_qdq)
    original = ort.SessionOptions
    try:
        ort.SessionOptions = lambda: options  # the runner's own options object, with the save path set
        with runner:
            pass
    finally:
        ort.SessionOptions = original
    return Counter(node.op_type for node in onnx.load(str(saved)).graph.node)


def test_simulated_graph_folds_the_weights_dequantization(qdq_graph, tmp_path):
    default, simulated = optimized_ops(qdq_graph, False, tmp_path), optimized_ops(qdq_graph, True, tmp_path)
    convs = sum(node.op_type == "Conv" for node in onnx.load(str(qdq_graph)).graph.node)
    # by default one DequantizeLinear per activation and one per weight; simulated, the weights' are constants
    assert default["DequantizeLinear"] >= default["QuantizeLinear"] + convs
    assert simulated["DequantizeLinear"] == simulated["QuantizeLinear"] == default["QuantizeLinear"]
    assert not [op for op in {**default, **simulated} if op.startswith("QLinear")]


def test_simulated_logits_track_the_int8_kernels(qdq_graph, data_dir):
    images = data.normalize(data.load_fashion_mnist(data_dir).val_images[:500])
    logits = {}
    for simulate in (False, True):
        with OnnxRuntimeRunner(qdq_graph, providers=["CPUExecutionProvider"], simulate_qdq=simulate) as runner:
            logits[simulate] = runner.infer({"input": images})["logits"]
    assert not np.array_equal(logits[False], logits[True])  # really another computation
    assert np.abs(logits[False] - logits[True]).max() < 0.1 * np.abs(logits[False]).max()
    assert (logits[False].argmax(1) == logits[True].argmax(1)).mean() >= 0.97
