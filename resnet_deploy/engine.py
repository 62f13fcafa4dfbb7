"""TensorRT engine builds for TensorRT 10.x and 11.x: the only module that knows TensorRT versions.

One path for both: the precision is in the ONNX graph (FP32, FP16 graph, Q/DQ graph) and the
network is strongly typed. Capabilities are detected by feature (does `BuilderFlag` have `INT8`?
does `NetworkDefinitionCreationFlag` have `STRONGLY_TYPED`?), not by version string. TensorRT 10
(Jetson) also offers the legacy path: FP32 ONNX + FP16/INT8 builder flags + a calibrator serving
our calibration cache; TensorRT 11 removed it and says so here.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.fileio import atomic_write_bytes, sha256_file
from resnet_deploy.sidecar import engine_file_name, write_sidecar

HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")


def tensorrt_available() -> bool:
    """True when the `tensorrt` module can be imported (without importing it)."""
    return importlib.util.find_spec("tensorrt") is not None


def import_tensorrt():
    try:
        import tensorrt
    except ImportError as exc:
        raise ResnetDeployError("TensorRT is not installed: `pip install tensorrt` on a GPU host, or use "
                                "JetPack's TensorRT on Jetson") from exc
    return tensorrt


@dataclass(frozen=True)
class Capabilities:
    """What the imported TensorRT offers, detected by feature."""

    version: str
    strongly_typed: bool
    explicit_batch_flag: bool
    precision_flags: bool
    legacy_calibrator: bool
    hardware_levels: tuple[str, ...]


def capabilities(trt) -> Capabilities:
    creation = trt.NetworkDefinitionCreationFlag
    levels = getattr(trt, "HardwareCompatibilityLevel", None)
    return Capabilities(
        version=trt.__version__,
        strongly_typed=hasattr(creation, "STRONGLY_TYPED"),
        explicit_batch_flag=hasattr(creation, "EXPLICIT_BATCH"),
        precision_flags=hasattr(trt.BuilderFlag, "INT8") and hasattr(trt.BuilderFlag, "FP16"),
        legacy_calibrator=hasattr(trt, "IInt8EntropyCalibrator2") and hasattr(trt.BuilderFlag, "INT8"),
        hardware_levels=tuple(n.lower() for n in HARDWARE_LEVELS if levels is not None and hasattr(levels, n.upper())),
    )


@dataclass
class EngineInfo:
    engine_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any] = field(default_factory=dict)


def make_cache_calibrator(trt, cache_bytes: bytes):
    """An IInt8EntropyCalibrator2 that serves a calibration cache and never asks for batches."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self) -> bytes:
            return cache_bytes

        def write_calibration_cache(self, cache) -> None:
            return None

    return CacheCalibrator()


def _network_flags(trt, caps: Capabilities, strongly_typed: bool) -> int:
    if strongly_typed:
        if not caps.strongly_typed:
            raise ResnetDeployError(f"TensorRT {caps.version} has no strongly typed networks; use --legacy-calibrator")
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _parse(trt, builder, flags: int, onnx_path: Path, logger):
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ArtifactError(f"{onnx_path}: TensorRT's ONNX parser failed: " + "; ".join(errors or ["no details"]))
    return network, parser


def _precision_setup(trt, caps: Capabilities, config, precision: str, legacy_cache: bytes | None,
                     strongly_typed: bool) -> Any:
    """Builder flags for the weakly typed branches (TensorRT <= 10 only); returns the calibrator to keep alive."""
    if legacy_cache is None and strongly_typed:
        return None
    if not caps.precision_flags:
        raise ResnetDeployError(f"TensorRT {caps.version} removed weak typing (BuilderFlag.FP16/INT8 and "
                                "calibrators): build the FP16 or Q/DQ graph strongly typed instead")
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if legacy_cache is not None:
        calibrator = make_cache_calibrator(trt, legacy_cache)
        config.int8_calibrator = calibrator
        return calibrator
    return None


def _device_info(device: int):
    from resnet_deploy.cuda import CudaContext

    context = CudaContext(device)
    try:
        return context.info
    finally:
        context.release()


def build_engine(onnx_path: str | Path, engines_dir: str | Path = "engines", *, precision: str,
                 min_batch: int = 1, opt_batch: int = 32, max_batch: int = 256, workspace_mib: int = 1024,
                 timing_cache_path: str | Path | None = None, dla_core: int | None = None,
                 hardware_compatibility: str | None = None, version_compatible: bool = False,
                 legacy_calibrator: bool = False, calibration_cache: str | Path | None = None,
                 strongly_typed: bool = True, model_name: str | None = None, device: int = 0,
                 extra_metadata: dict[str, Any] | None = None, log: Callable[[str], None] = print,
                 trt=None, device_info=None) -> EngineInfo:
    """Build and save an engine from an ONNX graph (FP32, FP16 or Q/DQ) with its sidecar."""
    trt = trt or import_tensorrt()
    caps = capabilities(trt)
    onnx_path = Path(onnx_path)
    if not min_batch <= opt_batch <= max_batch:
        raise ResnetDeployError(f"batch profile must satisfy min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    legacy_cache = None
    if legacy_calibrator:
        if not caps.legacy_calibrator:
            raise ResnetDeployError(f"--legacy-calibrator needs TensorRT <= 10; TensorRT {caps.version} removed "
                                    "IInt8Calibrator and the INT8 builder flag. Build the Q/DQ graph instead.")
        if precision == "int8":
            if calibration_cache is None:
                raise ResnetDeployError("--legacy-calibrator with int8 needs a calibration cache")
            legacy_cache = Path(calibration_cache).read_bytes()
        strongly_typed = False
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, _network_flags(trt, caps, strongly_typed), onnx_path, logger)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    calibrator = _precision_setup(trt, caps, config, precision, legacy_cache, strongly_typed)
    input_tensor = network.get_input(0)
    sample_shape = tuple(input_tensor.shape)[1:]
    profile = builder.create_optimization_profile()
    shapes = {k: (b, *sample_shape) for k, b in (("min", min_batch), ("opt", opt_batch), ("max", max_batch))}
    profile.set_shape(input_tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    timing_cache = _load_timing_cache(config, timing_cache_path)
    _device_options(trt, caps, config, dla_core, hardware_compatibility, version_compatible)
    log(f"building {precision} engine from {onnx_path} with TensorRT {caps.version} "
        f"({'strongly' if strongly_typed else 'weakly'} typed, batch {min_batch}/{opt_batch}/{max_batch})")
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ArtifactError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    if timing_cache_path is not None:
        atomic_write_bytes(timing_cache_path, bytes(timing_cache.serialize()))
    del calibrator
    info = device_info or _device_info(device)
    engine_path = engine_path_for(onnx_path, engines_dir, precision, max_batch, caps.version, info, model_name)
    atomic_write_bytes(engine_path, bytes(serialized))
    sidecar = {
        "engine": engine_path.name, "tensorrt_version": caps.version, "gpu_name": info.name,
        "compute_capability": info.compute_capability, "precision": precision,
        "profile": {k: list(v) for k, v in shapes.items()},
        "inputs": [{"name": input_tensor.name, "dtype": "float32", "shape": [-1, *sample_shape]}],
        "outputs": [{"name": network.get_output(i).name, "shape": list(network.get_output(i).shape)}
                    for i in range(network.num_outputs)],
        "source_onnx": str(onnx_path), "source_onnx_sha256": sha256_file(onnx_path),
        "strongly_typed": strongly_typed, "legacy_calibrator": legacy_calibrator,
        "calibration_cache": str(calibration_cache) if legacy_calibrator and calibration_cache else None,
        "hardware_compatibility": hardware_compatibility or "none", "version_compatible": version_compatible,
        "build_settings": {"workspace_mib": workspace_mib, "dla_core": dla_core,
                           "timing_cache": str(timing_cache_path) if timing_cache_path else None},
        "build_seconds": round(time.perf_counter() - started, 2),
        **(extra_metadata or {}),
    }
    return EngineInfo(engine_path, write_sidecar(engine_path, sidecar), sidecar)


def engine_path_for(onnx_path: Path, engines_dir: str | Path, precision: str, max_batch: int, trt_version: str,
                    device_info, model_name: str | None = None) -> Path:
    """Where the engine for these settings, this TensorRT and this GPU goes."""
    name = model_name or Path(onnx_path).name.split(".")[0]
    return Path(engines_dir) / engine_file_name(name, precision, max_batch, device_info.name,
                                                device_info.compute_capability, trt_version)


def planned_engine_path(onnx_path: Path, engines_dir: str | Path, precision: str, max_batch: int,
                        model_name: str | None = None, device: int = 0) -> Path:
    """The engine path a build here would write (imports TensorRT and pycuda)."""
    return engine_path_for(onnx_path, engines_dir, precision, max_batch, import_tensorrt().__version__,
                           _device_info(device), model_name)


def _load_timing_cache(config, path: str | Path | None):
    data = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    config.set_timing_cache(cache, False)
    return cache


def _device_options(trt, caps: Capabilities, config, dla_core: int | None, hardware_compatibility: str | None,
                    version_compatible: bool) -> None:
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if hardware_compatibility and hardware_compatibility != "none":
        if hardware_compatibility not in caps.hardware_levels:
            raise ResnetDeployError(f"TensorRT {caps.version} has no hardware-compatibility level "
                                    f"{hardware_compatibility!r}; it offers {', '.join(caps.hardware_levels)}")
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, hardware_compatibility.upper())
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
