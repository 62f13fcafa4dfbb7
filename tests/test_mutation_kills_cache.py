"""Exact behaviour of the calibration cache's edges, written to kill the mutants tools/mutation.sh found
surviving in resnet_deploy/quantize/cache.py: short versions, the range checks' boundaries, whole error
messages, blank lines and the parsed header."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_deploy.errors import ArtifactError
from resnet_deploy.quantize.cache import (SMALLEST_NORMAL, CacheHeader, read_calibration_cache, scale_to_hex,
                                          version_code, write_calibration_cache)


def test_short_versions_pad_with_zeros():
    assert version_code("10") == 100000
    assert version_code("8.6") == 8600
    assert version_code("10.3.0.26") == 100300


def test_zero_range_is_written_at_the_floor(tmp_path):
    path = write_calibration_cache(tmp_path / "c.cache", {"a": 0.0, "b": 127.0}, "10.3.0")
    assert path.read_text() == f"TRT-100300-EntropyCalibration2\na: {scale_to_hex(1e-8 / 127)}\nb: 3f800000\n"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -1.0])
def test_each_bad_range_alone_is_refused(tmp_path, value):
    with pytest.raises(ArtifactError, match=r"ranges must be finite and >= 0; x are not$"):
        write_calibration_cache(tmp_path / "c.cache", {"ok": 1.0, "x": value})


def test_bad_range_message_names_the_first_five(tmp_path):
    amax = {f"t{i}": -1.0 for i in range(7)}
    with pytest.raises(ArtifactError) as error:
        write_calibration_cache(tmp_path / "c.cache", amax)
    assert str(error.value) == (f"{tmp_path / 'c.cache'}: calibration ranges must be finite and >= 0; "
                                "t0, t1, t2, t3, t4 are not")
    assert not (tmp_path / "c.cache").exists()


def test_missing_cache_is_named_as_a_calibration_cache(tmp_path):
    with pytest.raises(ArtifactError) as error:
        read_calibration_cache(tmp_path / "absent.cache")
    assert str(error.value) == f"{tmp_path / 'absent.cache'}: calibration cache not found"


def test_header_is_parsed_into_version_and_algorithm(tmp_path):
    path = tmp_path / "c.cache"
    path.write_text("TRT-8601-MinMaxCalibration\n\n\nx: 3c010204\n\ny: 3f800000\n")
    header, scales = read_calibration_cache(path)
    assert header == CacheHeader(8601, "MinMaxCalibration")
    assert isinstance(header.version_code, int)
    assert list(scales) == ["x", "y"] and scales["y"] == 1.0


def test_long_bad_lines_are_cut_at_80_characters(tmp_path):
    path = tmp_path / "c.cache"
    long = "H" * 100
    path.write_text(long + "\n")
    with pytest.raises(ArtifactError) as error:
        read_calibration_cache(path)
    assert str(error.value) == f"{path}: line 1: expected 'TRT-<version>-<algorithm>', got {long[:80]!r}"
    path.write_text("TRT-100300-EntropyCalibration2\n" + long + "\n")
    with pytest.raises(ArtifactError) as error:
        read_calibration_cache(path)
    assert str(error.value) == f"{path}: line 2: expected 'tensor_name: <8 hex digits>', got {long[:80]!r}"


def test_smallest_normal_scale_is_accepted_and_the_message_for_a_denormal(tmp_path):
    path = tmp_path / "c.cache"
    path.write_text("TRT-100300-EntropyCalibration2\nx: 00800000\n")
    assert read_calibration_cache(path)[1]["x"] == SMALLEST_NORMAL == float(np.finfo(np.float32).tiny)
    path.write_text("TRT-100300-EntropyCalibration2\nx: 007fffff\n")
    with pytest.raises(ArtifactError) as error:
        read_calibration_cache(path)
    assert str(error.value).endswith("of 'x' is not a positive normal float32 (zero, denormal, negative, "
                                     "infinite or NaN)")


def test_duplicate_message_names_both_lines(tmp_path):
    path = tmp_path / "c.cache"
    path.write_text("TRT-100300-EntropyCalibration2\nx: 3f800000\ny: 3f800000\nx: 3f800000\n")
    with pytest.raises(ArtifactError) as error:
        read_calibration_cache(path)
    assert str(error.value) == f"{path}: line 4: tensor 'x' is listed twice (first on line 2)"
