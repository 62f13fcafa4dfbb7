"""Fashion-MNIST decoding, validation, checksums, splits and the search order, on the real files."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import numpy as np
import pytest

from resnet_deploy import data
from resnet_deploy.cli import main
from resnet_deploy.errors import DataError

pytestmark = pytest.mark.runtime


@pytest.fixture
def data_copy(tmp_path, data_dir) -> Path:
    for path in Path(data_dir).glob("*.gz"):
        shutil.copy(path, tmp_path / path.name)
    data.load_split.cache_clear()
    return tmp_path


def rewrite(path: Path, transform) -> None:
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(transform(raw), compresslevel=1))


def test_real_files_decode_with_expected_shapes_counts_and_mean(data_dir):
    images, labels = data.load_split("train", str(data_dir))
    test_images, test_labels = data.load_split("test", str(data_dir))
    assert images.shape == (60000, 28, 28) and images.dtype == np.uint8
    assert test_images.shape == (10000, 28, 28)
    assert np.bincount(labels).tolist() == [6000] * 10
    assert np.bincount(test_labels).tolist() == [1000] * 10
    assert round(float(images.mean()), 2) == 72.94


def test_split_is_fixed_disjoint_and_sized():
    train_a, val_a = data.train_val_indices()
    train_b, val_b = data.train_val_indices()
    assert len(train_a) == 55000 and len(val_a) == 5000
    assert not set(train_a) & set(val_a)
    assert np.array_equal(train_a, train_b) and np.array_equal(val_a, val_b)


def test_calibration_images_come_from_the_train_part_only(data_dir):
    dataset = data.load_fashion_mnist(data_dir)
    calibration = data.calibration_images(64, data_dir=data_dir)
    train_set = {img.tobytes() for img in data.normalize(dataset.train_images)}
    assert all(img.tobytes() in train_set for img in calibration)
    with pytest.raises(DataError, match="1..55000"):
        data.calibration_images(55001, data_dir=data_dir)


def test_normalize_uses_train_statistics():
    out = data.normalize(np.full((1, 28, 28), 255, np.uint8))
    assert out.shape == (1, 1, 28, 28) and out.dtype == np.float32
    assert out[0, 0, 0, 0] == pytest.approx((1 - data.MEAN) / data.STD)


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[: len(raw) // 2], "truncated"),
    (lambda raw: raw + b"\0\0", "trailing bytes"),
    (lambda raw: b"\x00\x00\x09\x03" + raw[4:], "bad IDX magic"),
    (lambda raw: raw[:4] + (9999).to_bytes(4, "big") + raw[8:-784], "items, expected 10000"),
    (lambda raw: raw[:-1] + bytes([raw[-1] ^ 1]), "checksum mismatch"),
])
def test_damaged_image_files_are_refused_naming_the_file(data_copy, damage, message):
    rewrite(data_copy / "t10k-images-idx3-ubyte.gz", damage)
    with pytest.raises(DataError, match=message) as error:
        data.load_split("test", str(data_copy))
    assert "t10k-images-idx3-ubyte.gz" in str(error.value)


def test_truncated_gzip_is_refused(data_copy):
    path = data_copy / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        data.load_split("test", str(data_copy))


def test_corrupt_gzip_stream_is_refused(data_copy):
    path = data_copy / "t10k-labels-idx1-ubyte.gz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: corrupt or truncated gzip"):
        data.load_split("test", str(data_copy))


def test_cli_on_a_corrupt_file_exits_2_naming_it_without_traceback(data_copy, tmp_path, capsys):
    pytest.importorskip("torch")  # through `train`, which needs torch
    rewrite(data_copy / "t10k-images-idx3-ubyte.gz", lambda raw: raw + b"\0")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--data-dir", str(data_copy), "--out-dir", str(tmp_path / "run"), "--epochs", "1"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert "t10k-images-idx3-ubyte.gz" in err and "trailing bytes" in err and "Traceback" not in err


def test_regzipped_copy_with_same_content_is_accepted(data_copy):
    path = data_copy / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes()), compresslevel=1))
    _, labels = data.load_split("test", str(data_copy))
    assert len(labels) == 10000


def test_raw_idx_files_are_read_too(data_copy):
    for path in data_copy.glob("t10k-*.gz"):
        path.with_suffix("").write_bytes(gzip.decompress(path.read_bytes()))
        path.unlink()
    images, _ = data.load_split("test", str(data_copy))
    assert images.shape == (10000, 28, 28)


def linked_copy(source: Path, target: Path) -> Path:
    target.mkdir(parents=True)
    for path in source.glob("*.gz"):
        (target / path.name).symlink_to(path)
    return target


def test_search_order(tmp_path, data_dir, monkeypatch):
    """Argument, then $RESNET_DEPLOY_DATA, then Debian's folder, then the cache; each shadows the next."""
    explicit, env, debian = (linked_copy(Path(data_dir), tmp_path / n) for n in ("explicit", "env", "debian"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    cache = linked_copy(Path(data_dir), data.cache_dir())
    monkeypatch.setattr(data, "DEBIAN_DIR", debian)
    monkeypatch.setenv("RESNET_DEPLOY_DATA", str(env))
    assert data.find_data_dir(explicit) == explicit
    assert data.find_data_dir() == env
    monkeypatch.delenv("RESNET_DEPLOY_DATA")
    assert data.find_data_dir() == debian
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "absent")
    assert data.find_data_dir(download=False) == cache
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "empty-xdg"))
    with pytest.raises(DataError, match="not found; looked in"):
        data.find_data_dir(download=False)
    with pytest.raises(DataError, match="missing Fashion-MNIST files"):
        data.find_data_dir(tmp_path / "absent")
