"""Layer-by-layer comparison: tensor matching across FP32/FP16/Q-DQ graphs, metrics, bounded memory, CLI."""

from __future__ import annotations

import json

import onnx
import pytest

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.quantize.calibrate import activation_tensors
from resnet_deploy.quantize.fp16 import convert_to_fp16
from resnet_deploy.quantize.layers import compare_layers, compared_tensors, match_tensors, plan_chunks
from resnet_deploy.quantize.qdq import insert_qdq, quantizable_layers


@pytest.fixture(scope="module")
def graphs(untrained_onnx, untrained_amax, tmp_path_factory):
    """The FP32 graph and its FP16, Q/DQ and fallback (first layer FP16, last FP32) graphs."""
    folder = tmp_path_factory.mktemp("layers")
    layers = quantizable_layers(onnx.load(str(untrained_onnx)))
    convert_to_fp16(untrained_onnx, folder / "tiny.fp16.onnx")
    insert_qdq(untrained_onnx, untrained_amax, folder / "tiny.qdq.onnx")
    insert_qdq(untrained_onnx, untrained_amax, folder / "tiny.fallback.qdq.onnx",
               fallback={layers[0].node: "fp16", layers[-1].node: "fp32"})
    return {"fp32": untrained_onnx, "fp16": folder / "tiny.fp16.onnx", "qdq": folder / "tiny.qdq.onnx",
            "fallback": folder / "tiny.fallback.qdq.onnx"}


@pytest.fixture(scope="module")
def images(data_dir):
    return data.normalize(data.load_fashion_mnist(data_dir).val_images[:48])


@pytest.mark.parametrize("kind", ["fp32", "fp16", "qdq", "fallback"])
def test_every_activation_is_matched_by_name_in_every_graph(graphs, kind):
    reference = onnx.load(str(graphs["fp32"]))
    matches, unmatched = match_tensors(reference, onnx.load(str(graphs[kind])))
    expected = [name for name in activation_tensors(reference) if name != "input"]
    assert unmatched == [] and [m.reference for m in matches] == expected
    assert all(m.candidate == m.reference for m in matches)
    assert [m.layer for m in matches if m.op_type == "Conv"][:2] == ["conv1", "layer1.0.conv1"]
    assert matches[-1].reference == "logits" and matches[-1].layer == "fc"


def test_a_renamed_tensor_is_matched_through_its_node(graphs):
    reference = onnx.load(str(graphs["fp32"]))
    candidate = onnx.load(str(graphs["fp16"]))
    conv = next(n for n in candidate.graph.node if n.op_type == "Conv" and n.output[0] == "getitem_3")
    conv.output[0] = "renamed_by_a_converter"
    for node in candidate.graph.node:
        node.input[:] = ["renamed_by_a_converter" if name == "getitem_3" else name for name in node.input]
    matches, unmatched = match_tensors(reference, candidate)
    assert unmatched == []
    assert next(m for m in matches if m.reference == "getitem_3").candidate == "renamed_by_a_converter"
    candidate.graph.node.remove(next(n for n in candidate.graph.node if n.output[0] == "relu_1"))
    assert match_tensors(reference, candidate)[1] == ["relu_1"]


def test_identical_graphs_are_exact(graphs, images):
    comparison = compare_layers(graphs["fp32"], graphs["fp32"], images[:16])
    assert all(r["snr_db"] is None and r["cosine"] == pytest.approx(1.0) and r["max_abs_error"] == 0
               for r in comparison.rows)
    assert comparison.first_below is None


def test_fp16_tracks_fp32_far_closer_than_int8(graphs, images):
    fp16 = compare_layers(graphs["fp32"], graphs["fp16"], images)
    qdq = compare_layers(graphs["fp32"], graphs["qdq"], images)
    assert all(r["snr_db"] > 45 for r in fp16.rows)
    assert all(a["snr_db"] > b["snr_db"] + 10 for a, b in zip(fp16.rows, qdq.rows))
    assert all(0.9 < r["cosine"] <= 1.0 + 1e-9 and r["elements"] > 0 for r in qdq.rows)
    first_conv = qdq.rows[0]
    assert first_conv["layer"] == "conv1" and first_conv["max_abs_error"] > 0


def test_first_layer_below_is_the_broken_one(untrained_onnx, untrained_amax, images, tmp_path):
    broken = dict(untrained_amax, relu_3=untrained_amax["relu_3"] * 0.02)  # the input of layer1.1.conv2, read by it alone
    insert_qdq(untrained_onnx, broken, tmp_path / "broken.qdq.onnx")
    comparison = compare_layers(untrained_onnx, tmp_path / "broken.qdq.onnx", images, min_snr_db=15)
    assert comparison.first_below["layer"] == "layer1.1.conv2"
    assert all(not r["below"] for r in comparison.rows[:comparison.first_below["index"]])


def test_chunk_plan_keeps_each_run_within_the_budget(graphs):
    matches, _ = match_tensors(onnx.load(str(graphs["fp32"])), onnx.load(str(graphs["qdq"])))
    largest = max(m.bytes_per_image for m in matches)
    for budget in (2 * largest, 5 * largest, 40 * largest, 10**9):
        batch, chunks = plan_chunks(matches, 64, budget)
        assert [m for chunk in chunks for m in chunk] == matches
        assert all(2 * batch * sum(m.bytes_per_image for m in chunk) <= budget for chunk in chunks)
    assert plan_chunks(matches, 64, 2 * largest)[0] == 1 and len(plan_chunks(matches, 64, 10**9)[1]) == 1


def test_bounded_memory_gives_the_same_rows(graphs, images):
    whole = compare_layers(graphs["fp32"], graphs["qdq"], images)
    bounded = compare_layers(graphs["fp32"], graphs["qdq"], images, max_memory_mib=0.25)
    assert whole.chunks == 1 and bounded.chunks > 1
    assert bounded.peak_output_bytes <= 0.25 * 2**20 < whole.peak_output_bytes
    for a, b in zip(whole.rows, bounded.rows):
        assert (a["tensor"], a["below"]) == (b["tensor"], b["below"])
        assert b["snr_db"] == pytest.approx(a["snr_db"], rel=1e-4)  # batch sizes differ, so do float sums
        assert b["max_abs_error"] == pytest.approx(a["max_abs_error"], rel=1e-3)


@pytest.mark.slow
def test_resnet152_stays_within_the_memory_bound(tmp_path, data_dir):
    import torch

    from resnet_deploy.export import export_onnx
    from resnet_deploy.models import create_model

    torch.manual_seed(0)
    fp32 = tmp_path / "resnet152.onnx"
    export_onnx(create_model("resnet152", width=0.0625).eval(), fp32)
    ranges = {name: 4.0 for name in activation_tensors(onnx.load(str(fp32)))}
    insert_qdq(fp32, ranges, tmp_path / "resnet152.qdq.onnx")
    images = data.normalize(data.load_fashion_mnist(data_dir).val_images[:4])
    comparison = compare_layers(fp32, tmp_path / "resnet152.qdq.onnx", images, max_memory_mib=0.25)
    assert len(comparison.rows) == len(compared_tensors(onnx.load(str(fp32)))) == 359
    assert comparison.unmatched == [] and comparison.chunks > 1 and comparison.batch_size == 1
    assert comparison.peak_output_bytes <= 0.25 * 2**20


def test_layers_command_writes_table_json_and_plot(graphs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["layers", str(graphs["fp32"]), str(graphs["fallback"]), "--count", "32", "--json",
              str(tmp_path / "layers.json"), "--plot", str(tmp_path / "layers.png")])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "layer4.1.conv2" in out and "SNR dB" in out
    report = json.loads((tmp_path / "layers.json").read_text())
    assert len(report["rows"]) == 48 and report["settings"]["images"] == 32
    assert report["rows"][0]["snr_db"] > report["rows"][2]["snr_db"]  # conv1 in FP16, layer1.0.conv1 in INT8
    assert (tmp_path / "layers.png").read_bytes()[:4] == b"\x89PNG"


def test_layers_command_refuses_a_missing_graph(graphs, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["layers", str(graphs["fp32"]), str(tmp_path / "missing.onnx")])
    assert exit_info.value.code == 2 and "missing.onnx" in capsys.readouterr().err
