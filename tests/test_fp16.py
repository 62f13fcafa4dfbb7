"""FP16 graph: FP32 I/O, float16 weights, runs on ONNX Runtime CPU with top-1 close to FP32 on real data."""

from __future__ import annotations

import numpy as np
import onnx
import pytest

pytest.importorskip("torch")  # exports or loads PyTorch checkpoints throughout

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import sha256_file
from resnet_deploy.onnx_info import describe_onnx
from resnet_deploy.parity import FP16_MAX_DROP_PP, collect_logits, precision_of_artifact
from resnet_deploy.quantize.fp16 import convert_to_fp16
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def converted(tmp_path_factory, trained_onnx):
    fp16 = tmp_path_factory.mktemp("fp16") / "tiny.fp16.onnx"
    return trained_onnx, fp16, convert_to_fp16(trained_onnx, fp16)


@pytest.mark.slow
def test_fp16_graph_keeps_fp32_io_and_holds_fp16_weights(converted):
    fp32, fp16, summary = converted
    info = describe_onnx(fp16)
    assert info["precision"] == "fp16" and precision_of_artifact(fp16) == "fp16"
    assert describe_onnx(fp32)["precision"] == "fp32"
    assert [(t["name"], t["dtype"]) for t in info["inputs"]] == [("input", "float32")]
    assert [(t["name"], t["dtype"]) for t in info["outputs"]] == [("logits", "float32")]
    assert info["inputs"][0]["shape"][0] == "batch"
    weights = [init for init in onnx.load(str(fp16)).graph.initializer if len(init.dims) == 4]
    assert weights and all(w.data_type == onnx.TensorProto.FLOAT16 for w in weights)
    assert summary["sha256"] == sha256_file(fp16) and summary["source_onnx_sha256"] == sha256_file(fp32)


@pytest.mark.slow
def test_fp16_top1_is_close_to_fp32_on_the_test_split(converted, data_dir):
    fp32, fp16, _ = converted
    dataset = data.load_fashion_mnist(data_dir)
    images, labels = data.normalize(dataset.test_images), dataset.test_labels
    with OnnxRuntimeRunner(fp32, providers=["CPUExecutionProvider"]) as runner:
        reference = collect_logits(runner, images, 1000)
    with OnnxRuntimeRunner(fp16, providers=["CPUExecutionProvider"]) as runner:
        (meta,) = runner.input_metadata()
        candidate = collect_logits(runner, images, 1000)
    assert meta.dtype == np.float32 and meta.shape == (-1, 1, 28, 28)
    assert candidate.dtype == np.float32 and candidate.shape == (10000, 10)
    drop_pp = ((reference.argmax(1) == labels).mean() - (candidate.argmax(1) == labels).mean()) * 100
    assert abs(drop_pp) <= FP16_MAX_DROP_PP
    assert (reference.argmax(1) == candidate.argmax(1)).mean() >= 0.998
    assert 0 < np.abs(reference - candidate).max() < 0.1


def test_corrupt_source_raises_and_writes_nothing(tmp_path):
    source = tmp_path / "broken.onnx"
    source.write_bytes(b"\x08\x07 not an onnx model")
    with pytest.raises(ArtifactError, match="broken.onnx"):
        convert_to_fp16(source, tmp_path / "out.fp16.onnx")
    assert not (tmp_path / "out.fp16.onnx").exists()
