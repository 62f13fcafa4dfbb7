"""What the installed TensorRT can do and the rules between versions; the only place that imports it.

TensorRT and pycuda are imported on first use, so CPU-only and torch-only installs work; a command
that needs them and finds them missing raises `TensorRTMissing` (exit 2, one line saying how to get
them). Capabilities are judged by feature (does `BuilderFlag` have `INT8`? does
`NetworkDefinitionCreationFlag` have `STRONGLY_TYPED`?), not by version string. The version rules
(calibration-cache codes, which runtime may load a version-compatible engine, which releases have
DLA) follow NVIDIA's documentation, cited where each is defined.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from dataclasses import dataclass
from typing import Any

from resnet_deploy.errors import EnvironmentFailure, ResnetDeployError

# The TensorRT a calibration cache is headed for when nobody says otherwise: JetPack 6's (Jetson Orin),
# the main user of the legacy calibrator path.
DEFAULT_TRT_VERSION = "10.3.0"

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")
# Calibration-cache algorithm (header) -> the calibrator class TensorRT accepts that cache from.
CALIBRATOR_CLASSES = {
    "EntropyCalibration2": "IInt8EntropyCalibrator2",
    "EntropyCalibration": "IInt8EntropyCalibrator",
    "MinMaxCalibration": "IInt8MinMaxCalibrator",
}

# Which runtime majors load a version-compatible engine of each build major ("Version Compatibility":
# from 8.6 on; TensorRT 8 engines run on 9 and 10, TensorRT 10 engines on 11, never backwards).
VERSION_COMPATIBLE_RUNTIMES = {8: (8, 9, 10), 9: (9, 10), 10: (10, 11), 11: (11,)}
VERSION_COMPATIBLE_SINCE = (8, 6)

INSTALL = {
    "tensorrt": "`pip install tensorrt` on an x86_64 or SBSA GPU host (or the package's `tensorrt` extra), "
    "JetPack's TensorRT on Jetson (`sudo apt install python3-libnvinfer`)",
    "pycuda": "`pip install pycuda` (it builds against the CUDA toolkit; offline: tools/gpu_smoke/README.md)",
}


class TensorRTMissing(ResnetDeployError):
    """TensorRT or pycuda is needed and not importable here (exit 2)."""


def is_importable(name: str) -> bool:
    """True when `import name` would find the module (a module set to None in sys.modules counts as absent)."""
    if name in sys.modules:
        return sys.modules[name] is not None
    return importlib.util.find_spec(name) is not None


def missing_modules() -> list[str]:
    """Which of tensorrt and pycuda the engine build and runtime need and cannot import here."""
    return [name for name in ("tensorrt", "pycuda") if not is_importable(name)]


def require(what: str, modules: tuple[str, ...] = ("tensorrt", "pycuda")) -> None:
    """Raise one line saying `what` needs `modules` and how to get them, without importing them."""
    missing = [name for name in missing_modules() if name in modules]
    if missing:
        raise TensorRTMissing(
            f"{what} needs {' and '.join(missing)}, not installed here: "
            + "; ".join(f"{name}: {INSTALL[name]}" for name in missing)
        )


MIN_TENSORRT = (10, 3)  # JetPack 6.0's 8.6 skips a TRT-100300 cache and has no strongly typed networks


def require_supported_version(version: str, where: str = "") -> None:
    """Refuse, in one line (exit 3), a TensorRT older than 10.3; `where` names the board when known."""
    if version_numbers(version, 2) >= MIN_TENSORRT:
        return
    raise EnvironmentFailure(
        f"TensorRT {version} is installed{where}; resnet-deploy needs TensorRT 10.3 or later: "
        "JetPack 6.1 (L4T 36.4) or later on a Jetson"
    )


def import_tensorrt(what: str = "this command", where: str = ""):
    """The `tensorrt` module (10.3 or later), or `TensorRTMissing` / `EnvironmentFailure` (`where`: the board)."""
    require(what, ("tensorrt",))
    trt = importlib.import_module("tensorrt")
    require_supported_version(trt.__version__, where)
    return trt


def import_cuda_driver(what: str = "this command"):
    """`pycuda.driver`, or `TensorRTMissing`."""
    require(what, ("pycuda",))
    return importlib.import_module("pycuda.driver")


@dataclass(frozen=True)
class Capabilities:
    """What the imported TensorRT offers, detected by feature."""

    version: str
    strongly_typed: bool
    explicit_batch_flag: bool
    precision_flags: bool
    calibrators: tuple[str, ...]
    calibration_profile: bool
    hardware_levels: tuple[str, ...]
    tf32_flag: bool

    @property
    def legacy_calibrator(self) -> bool:
        return self.precision_flags and bool(self.calibrators)


def capabilities(trt) -> Capabilities:
    creation = trt.NetworkDefinitionCreationFlag
    levels = getattr(trt, "HardwareCompatibilityLevel", None)
    return Capabilities(
        version=trt.__version__,
        strongly_typed=hasattr(creation, "STRONGLY_TYPED"),
        explicit_batch_flag=hasattr(creation, "EXPLICIT_BATCH"),
        precision_flags=hasattr(trt.BuilderFlag, "INT8") and hasattr(trt.BuilderFlag, "FP16"),
        calibrators=tuple(name for name in CALIBRATOR_CLASSES.values() if hasattr(trt, name)),
        calibration_profile=hasattr(trt.IBuilderConfig, "set_calibration_profile"),
        hardware_levels=tuple(n for n in HARDWARE_LEVELS if levels is not None and hasattr(levels, n.upper())),
        tf32_flag=hasattr(trt.BuilderFlag, "TF32"),
    )


# One trt.Logger for the process: TensorRT gives every object made by a builder or runtime the logger
# that made it, and the logger must outlive them all (ILogger docs), as Polygraphy's get_trt_logger does.
_logger_lock = threading.Lock()
_logger: tuple[Any, Any] | None = None  # (tensorrt module, its Logger)
_verbose = bool(os.environ.get("RESNET_DEPLOY_TRT_VERBOSE"))


def _severity(trt):
    return trt.Logger.VERBOSE if _verbose else trt.Logger.WARNING


def trt_logger(trt):
    """The process-wide `trt.Logger` (WARNING, or VERBOSE after `set_verbose(True)`)."""
    global _logger
    with _logger_lock:
        if _logger is None or _logger[0] is not trt:
            _logger = (trt, trt.Logger(_severity(trt)))
        return _logger[1]


def set_verbose(verbose: bool) -> None:
    """TensorRT's own log at VERBOSE (or back to WARNING) for every later and current use of the logger."""
    global _verbose
    with _logger_lock:
        _verbose = verbose
        if _logger is not None:
            trt, logger = _logger
            logger.min_severity = _severity(trt)


def version_numbers(version: str, parts: int = 3) -> tuple[int, ...]:
    """'10.16.1.11' -> (10, 16, 1) for parts=3; a non-numeric part ends the tuple."""
    numbers = []
    for part in str(version).split(".")[:parts]:
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def same_release(built: str, runtime: str) -> bool:
    """'10.3.0' (JetPack's spelling) equals '10.3.0.30'; the build number must match where both give it."""
    a, b = str(built).split("."), str(runtime).split(".")
    return a[: len(b)] == b[: len(a)] and len(a) >= 3 and len(b) >= 3


def version_compatible_runs(built: str, runtime: str) -> bool:
    """Whether a version-compatible engine built by TensorRT `built` loads in TensorRT `runtime`."""
    b, r = version_numbers(built), version_numbers(runtime)
    if len(b) < 2 or len(r) < 2 or b[:2] < VERSION_COMPATIBLE_SINCE or r < b:
        return False
    return r[0] in VERSION_COMPATIBLE_RUNTIMES.get(b[0], (b[0],))


def version_compatible_rule(built: str) -> str:
    """Where a version-compatible engine of TensorRT `built` may run, in words."""
    major = version_numbers(built, 1)
    runtimes = VERSION_COMPATIBLE_RUNTIMES.get(major[0], ()) if major else ()
    if not runtimes or version_numbers(built, 2) < VERSION_COMPATIBLE_SINCE:
        return "version compatibility needs TensorRT 8.6 or later at build and run time"
    return "a version-compatible engine runs on the TensorRT that built it or a later release of major " + " or ".join(
        str(m) for m in runtimes
    )


def dla_supported(version: str) -> bool:
    """Whether this TensorRT release runs on DLA ("Working with DLA", 11.4.1): up to 10.7, again from 11.4.1."""
    numbers = version_numbers(version)
    return numbers[:1] < (10,) or (10,) <= numbers[:2] <= (10, 7) or numbers >= (11, 4, 1)


DLA_RELEASES = (
    "10.7 was the last 10.x release with DLA, 11.0 to 11.4.0 have none, 11.4.1 has it on AGX Orin "
    "with JetPack 7.2.2+ (strongly typed); Thor has no DLA"
)
