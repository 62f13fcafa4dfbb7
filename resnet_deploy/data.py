"""Fashion-MNIST: find, download, verify and decode the IDX files; normalization; fixed splits.

The 60k training images are split once, with a fixed seed, into train (55k) and validation (5k).
Calibration samples come from the train part only; the 10k test split is kept for final
evaluation and parity.
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
import zlib
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from resnet_deploy.download import DownloadFailed, download_fashion_mnist, mirror_url
from resnet_deploy.errors import DataError, EnvironmentFailure

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Pixel statistics of the 60k training images, divided by 255.
MEAN = 0.2860
STD = 0.3530
VAL_SIZE = 5000
TRAIN_SIZE = 60000 - VAL_SIZE
SPLIT_SEED = 0

# name -> (MD5 of the decoded IDX content, item count). Content, not .gz bytes: Debian re-gzips.
FILES = {
    "train-images-idx3-ubyte": ("f4a8712d7a061bf5bd6d2ca38dc4d50a", 60000),
    "train-labels-idx1-ubyte": ("9018921c3c673c538a1fc5bad174d6f9", 60000),
    "t10k-images-idx3-ubyte": ("8181f5470baa50b63fa0f6fddb340f0a", 10000),
    "t10k-labels-idx1-ubyte": ("15d484375f8d13e6eb1aabb0c3f46965", 10000),
}
SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
IDX_DTYPES = {0x08: np.uint8}


def read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Decode one IDX file (gzip or raw) with full validation; errors name the file."""
    raw = _read_bytes(path)
    if len(raw) < 4:
        raise DataError(f"{path}: truncated: {len(raw)} bytes, no IDX header")
    zero, dtype_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or dtype_code not in IDX_DTYPES:
        raise DataError(f"{path}: bad IDX magic {raw[:4].hex()} (expected 0000080{expected_ndim})")
    if ndim != expected_ndim:
        raise DataError(f"{path}: IDX has {ndim} dimensions, expected {expected_ndim}")
    header_len = 4 + 4 * ndim
    if len(raw) < header_len:
        raise DataError(f"{path}: truncated IDX header")
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header_len + math.prod(dims)
    if len(raw) != expected:
        problem = "truncated" if len(raw) < expected else "has trailing bytes"
        raise DataError(f"{path}: {problem}: {len(raw)} bytes, header {dims} needs {expected}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "read", path) from exc
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: corrupt or truncated gzip: {exc}") from exc


def idx_path(directory: Path, name: str) -> Path | None:
    """The .gz or raw IDX file for `name` in `directory`, if present."""
    for candidate in (directory / f"{name}.gz", directory / name):
        if candidate.is_file():
            return candidate
    return None


def has_all_files(directory: Path) -> bool:
    return all(idx_path(directory, name) is not None for name in FILES)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "resnet-deploy" / "fashion-mnist"


def search_places() -> list[tuple[str, Path | None]]:
    """Where the dataset is looked for when no folder is given, in order: (what, folder or None)."""
    env = os.environ.get("RESNET_DEPLOY_DATA")
    return [
        ("$RESNET_DEPLOY_DATA", Path(env) if env else None),
        ("Debian's dataset-fashion-mnist", DEBIAN_DIR),
        ("the user cache", cache_dir()),
    ]


def find_data_dir(data_dir: str | os.PathLike | None = None, *, download: bool = True) -> Path:
    """Locate the dataset: `data_dir`, $RESNET_DEPLOY_DATA, Debian's folder, the user cache.

    If none has the four files, download them into the cache (unless `download` is False). When
    that fails too, the error lists where it looked and the three ways to supply the data.
    """
    if data_dir is not None:
        directory = Path(data_dir)
        if not has_all_files(directory):
            missing = [n for n in FILES if idx_path(directory, n) is None]
            raise DataError(f"{directory}: missing Fashion-MNIST files: {', '.join(missing)}")
        return directory
    places = search_places()
    for _, place in places:
        if place is not None and has_all_files(place):
            return place
    looked = ", ".join(f"{what} ({place or 'unset'})" for what, place in places)
    ways = (
        "supply it one of three ways: --data-dir DIR (a folder with the four .gz files), "
        "RESNET_DEPLOY_DATA=DIR, or Debian's package (apt-get install dataset-fashion-mnist)"
    )
    if not download:
        raise DataError(f"Fashion-MNIST not found; looked in {looked}; {ways}")
    try:
        return download_fashion_mnist(cache_dir())
    except DownloadFailed as exc:
        raise DataError(
            f"Fashion-MNIST not found and the download from {mirror_url()} failed ({exc}); looked in {looked}; {ways}"
        ) from exc


def verify_content(path: Path, name: str, data: np.ndarray, header: bytes = b"") -> None:
    """Check decoded content against the official MD5 of the uncompressed IDX file."""
    digest = hashlib.md5(header + data.tobytes()).hexdigest()
    expected = FILES[name][0]
    if digest != expected:
        raise DataError(f"{path}: content checksum mismatch: md5 {digest}, expected {expected}")


def _idx_header(data: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, data.ndim])
    return header + b"".join(int(d).to_bytes(4, "big") for d in data.shape)


@lru_cache(maxsize=4)
def load_split(split: str, data_dir: str | None = None, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 28, 28) uint8 and labels (N,) int64 of the 'train' (60k) or 'test' (10k) split."""
    if split not in SPLIT_FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    directory = find_data_dir(data_dir)
    arrays = []
    for name, ndim in zip(SPLIT_FILES[split], (3, 1)):
        path = idx_path(directory, name)
        assert path is not None  # find_data_dir checked that all four files are there
        array = read_idx(path, ndim)
        if array.shape[0] != FILES[name][1]:
            raise DataError(f"{path}: {array.shape[0]} items, expected {FILES[name][1]}")
        if verify:
            verify_content(path, name, array, _idx_header(array))
        arrays.append(array)
    images, labels = arrays
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{idx_path(directory, SPLIT_FILES[split][1])}: label {labels.max()} out of range 0..9")
    images.setflags(write=False)
    return images, labels.astype(np.int64)


def train_val_indices(
    count: int = 60000, val_size: int = VAL_SIZE, seed: int = SPLIT_SEED
) -> tuple[np.ndarray, np.ndarray]:
    """The fixed, seeded split of the training images into train and validation indices."""
    order = np.random.default_rng(seed).permutation(count)
    return np.sort(order[val_size:]), np.sort(order[:val_size])


@dataclass(frozen=True)
class FashionMNIST:
    """The three splits as uint8 images and int64 labels, and where they came from."""

    train_images: np.ndarray
    train_labels: np.ndarray
    val_images: np.ndarray
    val_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    source_dir: Path
    digests: dict = field(default_factory=dict)


def load_fashion_mnist(data_dir: str | os.PathLike | None = None) -> FashionMNIST:
    """Load and verify all of Fashion-MNIST, split train 55k / validation 5k."""
    directory = str(find_data_dir(data_dir))
    images, labels = load_split("train", directory)
    test_images, test_labels = load_split("test", directory)
    train_idx, val_idx = train_val_indices(len(images))
    return FashionMNIST(
        images[train_idx],
        labels[train_idx],
        images[val_idx],
        labels[val_idx],
        test_images,
        test_labels,
        Path(directory),
        digests={name: md5 for name, (md5, _) in FILES.items()},
    )


def normalize(images: np.ndarray) -> np.ndarray:
    """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28), standardized with the train mean and std.

    The one definition of the input normalization: training, export checks, calibration, parity
    and benchmarks all feed images through it."""
    scaled = images.astype(np.float32)[:, None] / 255.0
    return (scaled - np.float32(MEAN)) / np.float32(STD)


def calibration_images(count: int = 512, seed: int = 0, data_dir: str | os.PathLike | None = None) -> np.ndarray:
    """`count` normalized images drawn from the train split (never validation, never test)."""
    train_images = load_fashion_mnist(data_dir).train_images
    if not 0 < count <= len(train_images):
        raise DataError(f"calibration count must be in 1..{len(train_images)} (the train split), got {count}")
    pick = np.random.default_rng(seed).choice(len(train_images), size=count, replace=False)
    return normalize(train_images[np.sort(pick)])
