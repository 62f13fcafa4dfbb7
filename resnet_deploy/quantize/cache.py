"""TensorRT's text calibration cache, the INT8 artifact for TensorRT <= 10 and DeepStream.

First line `TRT-<version code>-<algorithm>` (8.6.1 -> 8601; TensorRT 10 counts major*10000: 10.3.0 -> 100300), then one `tensor_name: XXXXXXXX` line
per tensor: the big-endian bits of the float32 scale amax / 127. Tensor names are the ONNX value
names of the FP32 graph, which TensorRT's ONNX parser gives its tensors. TensorRT silently ignores
a cache it considers incompatible, so the header version should match the target's TensorRT.

Reading refuses what TensorRT would take silently and quantize badly with: a scale that is zero,
denormal, negative or not finite, and a tensor listed twice. A tensor whose calibration range is
zero (it was zero on every calibration image) is written with the floor `MIN_AMAX`, as the Q/DQ
graph quantizes it.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_text, read_text
from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION

INT8_MAX = 127.0
MIN_AMAX = 1e-8
SMALLEST_NORMAL = float(np.finfo(np.float32).tiny)
HEADER = re.compile(r"^TRT-(\d+)-(\w+)$")
ENTRY = re.compile(r"^(.+): ([0-9a-fA-F]{8})$")


@dataclass(frozen=True)
class CacheHeader:
    version_code: int
    algorithm: str


def version_code(trt_version: str) -> int:
    """The number TensorRT writes in a cache header: '8.6.1' -> 8601; from 10.0 on major*10000, '10.3.0' -> 100300."""
    try:
        major, minor, patch = (int(part) for part in (trt_version.split(".") + ["0", "0"])[:3])
    except ValueError as exc:
        raise ArtifactError(f"TensorRT version {trt_version!r} is not of the form MAJOR.MINOR.PATCH") from exc
    return major * (10000 if major >= 10 else 1000) + minor * 100 + patch


def scale_to_hex(scale: float) -> str:
    return struct.pack(">f", np.float32(scale)).hex()


def hex_to_scale(text: str) -> float:
    return float(struct.unpack(">f", bytes.fromhex(text))[0])


def write_calibration_cache(
    path: str | Path,
    amax: dict[str, float],
    trt_version: str = DEFAULT_TRT_VERSION,
    algorithm: str = "EntropyCalibration2",
) -> Path:
    """Write the cache for activation ranges `amax` (scale = max(amax, MIN_AMAX) / 127) atomically."""
    bad = [name for name, value in amax.items() if not np.isfinite(value) or value < 0]
    if bad:
        raise ArtifactError(f"{path}: calibration ranges must be finite and >= 0; {', '.join(bad[:5])} are not")
    lines = [f"TRT-{version_code(trt_version)}-{algorithm}"]
    lines += [f"{name}: {scale_to_hex(max(value, MIN_AMAX) / INT8_MAX)}" for name, value in amax.items()]
    return atomic_write_text(path, "\n".join(lines) + "\n")


def read_calibration_cache(path: str | Path) -> tuple[CacheHeader, dict[str, float]]:
    """Parse a cache into its header and float32 scales; a malformed line raises `ArtifactError`."""
    path = Path(path)
    lines = read_text(path, "calibration cache").splitlines()
    if not lines:
        raise ArtifactError(f"{path}: empty calibration cache")
    header = HEADER.match(lines[0].strip())
    if not header:
        raise ArtifactError(f"{path}: line 1: expected 'TRT-<version>-<algorithm>', got {lines[0][:80]!r}")
    scales: dict[str, float] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        entry = ENTRY.match(line.strip())
        if not entry:
            raise ArtifactError(f"{path}: line {number}: expected 'tensor_name: <8 hex digits>', got {line[:80]!r}")
        name, scale = entry.group(1), hex_to_scale(entry.group(2))
        if not np.isfinite(scale) or scale < SMALLEST_NORMAL:
            raise ArtifactError(
                f"{path}: line {number}: scale {scale:g} of {name!r} is not a positive normal "
                "float32 (zero, denormal, negative, infinite or NaN)"
            )
        if name in scales:
            raise ArtifactError(
                f"{path}: line {number}: tensor {name!r} is listed twice (first on line {first_line[name]})"
            )
        scales[name], first_line[name] = scale, number
    return CacheHeader(int(header.group(1)), header.group(2)), scales
