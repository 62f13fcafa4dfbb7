"""Q/DQ graphs are checked as strictly as calibration caches wherever a graph is read (issue 18): a
scale that is zero, denormal, negative or not finite, or a zero point that does not fit its scale or
its data, is exit 2 naming the file, the node and the value, in `infer`, `inspect`, `triton-repo`,
`parity` and `build --onnx`."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError
from resnet_deploy.onnx_io import load_onnx
from tests.classifier_graphs import write_classifier


def _qdq_graph(tmp_path, scale=None, zero_point=None, name="q.qdq.onnx"):
    """The tiny int8 Q/DQ classifier with its activation scale and/or zero point replaced."""
    path = write_classifier(tmp_path / name, zero_point=np.array(0, np.int8))
    model = onnx.load(str(path))
    for index, init in enumerate(model.graph.initializer):
        if init.name == "scale" and scale is not None:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(scale, "scale"))
        if init.name == "zero_point" and zero_point is not None:
            model.graph.initializer[index].CopyFrom(numpy_helper.from_array(zero_point, "zero_point"))
    onnx.save(model, str(path))
    return path


BAD_SCALES = {
    "zero": (np.array(0.0, np.float32), "is 0, not a positive normal float32"),
    "negative": (np.array(-0.02, np.float32), "is -0.02, not a positive normal float32"),
    "nan": (np.array(np.nan, np.float32), "is nan, not a positive normal float32"),
    "inf": (np.array(np.inf, np.float32), "is inf, not a positive normal float32"),
    "denormal": (np.array(1e-40, np.float32), "is 9.99995e-41, not a positive normal float32"),
}


@pytest.mark.parametrize("case", list(BAD_SCALES))
def test_bad_scale_is_refused_naming_file_node_and_value(tmp_path, case):
    scale, message = BAD_SCALES[case]
    path = _qdq_graph(tmp_path, scale=scale)
    with pytest.raises(ArtifactError) as refused:
        load_onnx(path)
    assert str(refused.value).startswith(f"{path}: QuantizeLinear node ")
    assert "scale 'scale' " + message in str(refused.value)


def test_zero_point_of_another_shape_is_refused(tmp_path):
    path = _qdq_graph(tmp_path, zero_point=np.zeros(3, np.int8))
    with pytest.raises(ArtifactError, match=r"zero point 'zero_point' has shape \[3\], its scale \[\]"):
        load_onnx(path)


def test_dequantize_zero_point_must_have_the_data_type(tmp_path):
    path = write_classifier(tmp_path / "w.onnx", zero_point=np.array(0, np.int8))
    model = onnx.load(str(path))
    model.graph.initializer.extend([numpy_helper.from_array(np.ones((2, 2), np.int8), "w_int8"),
                                    numpy_helper.from_array(np.array(1, np.uint8), "w_zero_point")])
    model.graph.node.insert(0, onnx.helper.make_node("DequantizeLinear", ["w_int8", "scale", "w_zero_point"],
                                                     ["w_dq"], name="w_DequantizeLinear"))
    model.graph.output.append(onnx.helper.make_tensor_value_info("w_dq", onnx.TensorProto.FLOAT, [2, 2]))
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match="DequantizeLinear node 'w_DequantizeLinear': zero point 'w_zero_point' "
                                            "is uint8, the data it dequantizes int8"):
        load_onnx(path)


def test_valid_qdq_graph_and_constant_node_scales_pass(tmp_path):
    assert load_onnx(_qdq_graph(tmp_path)) is not None
    path = _qdq_graph(tmp_path, name="c.onnx")
    model = onnx.load(str(path))
    scale = next(i for i in model.graph.initializer if i.name == "scale")
    model.graph.node.insert(0, onnx.helper.make_node(
        "Constant", [], ["scale"], value=numpy_helper.from_array(np.array(0.0, np.float32), "scale")))
    model.graph.initializer.remove(scale)
    onnx.save(model, str(path))
    with pytest.raises(ArtifactError, match="scale 'scale' is 0"):
        load_onnx(path)


@pytest.mark.parametrize("command", ["infer", "inspect", "triton-repo", "parity", "build"])
def test_every_command_exits_2_on_a_zero_scale(tmp_path, capsys, monkeypatch, command):
    monkeypatch.chdir(tmp_path)  # build's output folders
    path = _qdq_graph(tmp_path, scale=np.array(0.0, np.float32))
    before = path.read_bytes()
    args = {
        "infer": ["infer", str(path), "--count", "2", "--json", str(tmp_path / "i.json")],
        "inspect": ["inspect", str(path)],
        "triton-repo": ["triton-repo", str(path), "--out", str(tmp_path / "repo")],
        "parity": ["parity", "--checkpoint", str(write_classifier(tmp_path / "ref.onnx")), str(path), "--limit", "10",
                   "--json", str(tmp_path / "p.json")],
        "build": ["build", "--onnx", str(path), "--precision", "int8"],
    }[command]
    files = sorted(tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err.strip()
    assert exit_info.value.code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert f"{path}: QuantizeLinear node " in err and "scale 'scale' is 0, not a positive normal float32" in err
    assert path.read_bytes() == before
    assert sorted(tmp_path.iterdir()) == files
