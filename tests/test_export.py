"""ONNX export: parity with PyTorch on real images, dynamic batch, checker, BN folding, bad files refused."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
from onnx import helper

pytest.importorskip("torch")  # exports or loads PyTorch checkpoints throughout

from resnet_deploy import data
from resnet_deploy.checkpoint import load_checkpoint
from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError, GateFailed
from resnet_deploy.export import batchnorm_summary, export_onnx, manifest_path
from resnet_deploy.onnx_io import load_onnx
from resnet_deploy.fileio import sha256_file
from resnet_deploy.models import create_model
from resnet_deploy.onnx_info import describe_onnx
from resnet_deploy.runners.onnxrt import OnnxRuntimeRunner


@pytest.fixture(scope="module")
def test_images(data_dir) -> np.ndarray:
    return data.normalize(data.load_fashion_mnist(data_dir).test_images[:500])


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_checkpoint, test_images):
    model, _ = load_checkpoint(trained_checkpoint)
    path = tmp_path_factory.mktemp("export") / "model.onnx"
    return path, export_onnx(model, path, check_images=test_images, source_checkpoint=trained_checkpoint)


def tiny_model(name: str = "resnet18"):
    return create_model(name, width=0.0625).eval()


@pytest.mark.slow
def test_export_matches_pytorch_on_real_test_images(exported, trained_checkpoint):
    path, manifest = exported
    parity = manifest["parity"]
    assert parity["passed"] and parity["argmax_agreement"] == 1.0
    assert parity["images"] == 500 and parity["max_abs_diff"] < 1e-4
    assert manifest["opset"] == 18 and manifest["exporter"].startswith("torch.onnx.export(dynamo=True)")
    assert manifest["sha256"] == sha256_file(path)
    assert manifest["source_checkpoint_sha256"] == sha256_file(trained_checkpoint)
    assert json.loads(manifest_path(path).read_text()) == json.loads(json.dumps(manifest))


@pytest.mark.slow
def test_exported_model_passes_the_full_checker(exported):
    onnx.checker.check_model(load_onnx(exported[0]), full_check=True)


@pytest.mark.slow
def test_batch_axis_is_dynamic_and_bn_is_folded(exported):
    path, manifest = exported
    info = describe_onnx(path)
    assert info["inputs"][0]["name"] == "input" and info["inputs"][0]["shape"][0] == "batch"
    assert info["outputs"][0]["name"] == "logits"
    assert "BatchNormalization" not in info["op_counts"] and manifest["batchnorm_nodes"] == 0
    assert manifest["bn_folded"]
    with OnnxRuntimeRunner(path) as runner:
        for batch in (1, 7):
            assert runner.infer({"input": np.zeros((batch, 1, 28, 28), np.float32)})["logits"].shape == (batch, 10)


def test_opset_17_uses_the_torchscript_exporter(tmp_path, test_images):
    manifest = export_onnx(tiny_model(), tmp_path / "m17.onnx", opset=17, check_images=test_images[:64])
    assert manifest["opset"] == 17 and "dynamo=False" in manifest["exporter"]
    assert manifest["parity"]["passed"] and manifest["batchnorm_nodes"] == 0
    assert describe_onnx(tmp_path / "m17.onnx")["inputs"][0]["shape"][0] == "batch"


def test_opset_below_17_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="opset 16"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", opset=16)


def test_parity_gate_fails_on_an_impossible_tolerance(tmp_path, test_images):
    with pytest.raises(GateFailed, match="max abs logit diff"):
        export_onnx(tiny_model(), tmp_path / "m.onnx", check_images=test_images[:32], atol=-1.0)
    assert not json.loads(manifest_path(tmp_path / "m.onnx").read_text())["parity"]["passed"]


def test_preact_model_keeps_only_the_batchnorms_no_conv_can_absorb(tmp_path):
    manifest = export_onnx(tiny_model("preact_resnet18"), tmp_path / "p.onnx")
    assert manifest["batchnorm_nodes"] > 0 and manifest["batchnorm_foldable_left"] == []
    assert manifest["bn_folded"] and "pre-activation" in manifest["batchnorm_note"]


def test_batchnorm_summary_flags_a_foldable_batchnorm():
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["c"], name="conv"),
         helper.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["y"], name="bn")],
        "g", [helper.make_tensor_value_info("x", 1, [1, 1, 4, 4])], [helper.make_tensor_value_info("y", 1, None)])
    summary = batchnorm_summary(graph)
    assert summary["batchnorm_foldable_left"] == ["bn"] and not summary["bn_folded"]


@pytest.mark.parametrize("content", [b"", b"garbage that is not protobuf"])
def test_corrupt_onnx_is_refused_with_the_file_name(tmp_path, content):
    path = tmp_path / "broken.onnx"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="broken.onnx"):
        load_onnx(path)


def test_missing_onnx_is_refused_with_the_file_name(tmp_path):
    with pytest.raises(ArtifactError, match="absent.onnx"):
        load_onnx(tmp_path / "absent.onnx")


@pytest.mark.slow
def test_cli_on_corrupt_onnx_exits_2_without_traceback(tmp_path, capsys, trained_checkpoint, data_dir):
    path = tmp_path / "broken.onnx"
    path.write_bytes(b"\x08\x07garbage")
    with pytest.raises(SystemExit) as exit_info:
        main(["parity", "--checkpoint", str(trained_checkpoint), str(path), "--data-dir", str(data_dir),
              "--json", str(tmp_path / "parity.json")])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "broken.onnx" in err and "Traceback" not in err


@pytest.mark.slow
def test_export_command(tmp_path, trained_checkpoint, data_dir, capsys):
    out = tmp_path / "cli.onnx"
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--checkpoint", str(trained_checkpoint), "--out", str(out), "--check-images", "200",
              "--data-dir", str(data_dir)])
    assert exit_info.value.code == 0 and out.is_file() and manifest_path(out).is_file()
    assert "argmax agreement 100.00%" in capsys.readouterr().out
