"""TensorRT calibration cache: header version codes, exact float32 scales, malformed files refused."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError
from resnet_deploy.quantize.cache import read_calibration_cache, version_code, write_calibration_cache
from resnet_deploy.quantize.calibrate import calibrate_onnx

pytestmark = pytest.mark.runtime

HEADER = "TRT-100300-EntropyCalibration2"


@pytest.mark.parametrize("version, code", [("8.6.1", 8601), ("8.5.10", 8510), ("10.3.0", 100300),
                                           ("10.16.1", 101601), ("11.4", 110400)])
def test_version_code_follows_tensorrt(version, code):
    assert version_code(version) == code


def test_header_and_known_big_endian_bits(tmp_path):
    write_calibration_cache(tmp_path / "a.cache", {"input": 1.0, "relu": 127.0, "add_1": 2.5})
    assert (tmp_path / "a.cache").read_text().splitlines() == [HEADER, "input: 3c010204", "relu: 3f800000",
                                                               "add_1: 3ca14285"]
    write_calibration_cache(tmp_path / "b.cache", {"x": 1.0}, trt_version="8.6.1", algorithm="MinMaxCalibration")
    assert (tmp_path / "b.cache").read_text().splitlines()[0] == "TRT-8601-MinMaxCalibration"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.cache", "b.cache"]


def test_round_trip_of_real_ranges_is_exact_and_named_after_onnx_values(tmp_path, data_dir, untrained_onnx):
    amax = calibrate_onnx(untrained_onnx, data.calibration_images(32, data_dir=data_dir), "percentile")
    write_calibration_cache(tmp_path / "tiny.cache", amax, trt_version="10.3.0")
    header, scales = read_calibration_cache(tmp_path / "tiny.cache")
    assert (header.version_code, header.algorithm) == (100300, "EntropyCalibration2")
    assert list(scales) == list(amax) and "input" in scales and "logits" in scales
    assert all(scales[name] == float(np.float32(value / 127.0)) for name, value in amax.items())


def test_names_with_colons_and_blank_trailing_lines_survive(tmp_path):
    amax = {"/layer1/0/Add_output_0": 3.0, "odd: name": 0.5}
    write_calibration_cache(tmp_path / "c.cache", amax)
    (tmp_path / "c.cache").write_text((tmp_path / "c.cache").read_text() + "\n\n")
    assert read_calibration_cache(tmp_path / "c.cache")[1] == {k: float(np.float32(v / 127)) for k, v in amax.items()}


@pytest.mark.parametrize("text, where", [
    ("", "empty calibration cache"),
    ("TRT10300-EntropyCalibration2\ninput: 3c010204\n", "line 1"),
    ("input: 3c010204\n", "line 1"),
    (f"{HEADER}\ninput 3c010204\n", "line 2"),
    (f"{HEADER}\ninput: 3c01020g\n", "line 2"),
    (f"{HEADER}\ninput: 3c0102041\n", "line 2"),
    (f"{HEADER}\ninput: 3c01020\n", "line 2"),
    (f"{HEADER}\ninput: 3c010204\nrelu:3c010204\n", "line 3"),
    (f"{HEADER}\ninput: 3c010204\nrelu: bf800000\n", "line 3"),
    (f"{HEADER}\ninput: 7f800000\n", "line 2"),
    (f"{HEADER}\ninput: 7fc00000\n", "line 2"),
])
def test_malformed_cache_names_the_file_and_line(tmp_path, text, where):
    path = tmp_path / "broken.cache"
    path.write_text(text)
    with pytest.raises(ArtifactError, match=f"broken.cache: {where}"):
        read_calibration_cache(path)


def test_unreadable_cache_and_bad_version_are_artifact_errors(tmp_path):
    (tmp_path / "binary.cache").write_bytes(b"\xff\xfe\x00TRT")
    with pytest.raises(ArtifactError, match="binary.cache"):
        read_calibration_cache(tmp_path / "binary.cache")
    with pytest.raises(ArtifactError, match="missing.cache"):
        read_calibration_cache(tmp_path / "missing.cache")
    with pytest.raises(ArtifactError, match="10.x"):
        write_calibration_cache(tmp_path / "v.cache", {"x": 1.0}, trt_version="10.x")
    assert not (tmp_path / "v.cache").exists()
