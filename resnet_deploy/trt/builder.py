"""TensorRT engine builds for TensorRT 10.x and 11.x: the only module that knows TensorRT versions.

One path for both: the precision is in the ONNX graph (FP32, FP16 graph, Q/DQ graph) and the
network is strongly typed. Capabilities are detected by feature (does `BuilderFlag` have `INT8`?
does `NetworkDefinitionCreationFlag` have `STRONGLY_TYPED`?), not by version string. TensorRT 10
also builds weakly typed (a Q/DQ graph then needs the INT8 flag) and offers the legacy path: FP32
ONNX + FP16/INT8 builder flags + a calibrator serving our calibration cache. TensorRT 11 removed
both and the builder says so instead of failing on a missing attribute.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.fileio import atomic_write_bytes, sha256_file
from resnet_deploy.quantize.cache import version_code as calibration_version_code
from resnet_deploy.trt.sidecar import engine_file_name, variant_tags, write_sidecar

PRECISIONS = ("fp32", "fp16", "int8")
HARDWARE_LEVELS = ("none", "ampere_plus", "same_compute_capability")
# Calibration-cache algorithm (header) -> the calibrator class TensorRT accepts that cache from.
CALIBRATOR_CLASSES = {"EntropyCalibration2": "IInt8EntropyCalibrator2", "EntropyCalibration": "IInt8EntropyCalibrator",
                      "MinMaxCalibration": "IInt8MinMaxCalibrator"}
GRAPH_PRECISION = {"fp32": "fp32", "fp16": "fp16", "int8-qdq": "int8"}


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
    calibrators: tuple[str, ...]
    hardware_levels: tuple[str, ...]

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
        hardware_levels=tuple(n for n in HARDWARE_LEVELS if levels is not None and hasattr(levels, n.upper())),
    )


@dataclass
class EngineInfo:
    engine_path: Path
    sidecar_path: Path
    sidecar: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LegacyCache:
    """Our calibration cache, re-headed for the running TensorRT, and the calibrator class it needs."""

    path: Path
    data: bytes
    algorithm: str
    calibrator_class: str
    tensors: int


def load_legacy_cache(trt, caps: Capabilities, path: str | Path) -> LegacyCache:
    """Read and check the cache; stamp the running version in its header (TensorRT ignores a foreign one)."""
    from resnet_deploy.quantize.cache import read_calibration_cache

    path = Path(path)
    header, scales = read_calibration_cache(path)
    class_name = CALIBRATOR_CLASSES.get(header.algorithm)
    if class_name is None or class_name not in caps.calibrators:
        raise ArtifactError(f"{path}: calibration algorithm {header.algorithm!r} has no calibrator in TensorRT "
                            f"{caps.version} (it has {', '.join(caps.calibrators) or 'none'})")
    if not scales:
        raise ArtifactError(f"{path}: calibration cache has no tensor scales")
    body = path.read_text().split("\n", 1)[1]
    data = f"TRT-{calibration_version_code(trt.__version__)}-{header.algorithm}\n{body}".encode()
    return LegacyCache(path, data, header.algorithm, class_name, len(scales))


def make_cache_calibrator(trt, cache: LegacyCache):
    """A calibrator that serves `cache` and has no batches: TensorRT reads the scales and never calibrates."""
    base = getattr(trt, cache.calibrator_class)

    class CacheCalibrator(base):
        def __init__(self):
            base.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):
            return None

        def read_calibration_cache(self) -> bytes:
            return cache.data

        def write_calibration_cache(self, data) -> None:
            return None

    return CacheCalibrator()


def _network_flags(trt, caps: Capabilities, strongly_typed: bool) -> int:
    """STRONGLY_TYPED by name (its bit is 1 on 10.x, 0 on 11.x); explicit batch is the default since 10."""
    if strongly_typed:
        if not caps.strongly_typed:
            raise ResnetDeployError(f"TensorRT {caps.version} has no strongly typed networks; use --legacy-calibrator")
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _parser_error(error) -> str:
    """ParserError has no __str__: spell out node, operator, code and description."""
    where = f"node {error.node()}"
    if error.node_name():
        where += f" {error.node_name()!r}"
    if error.node_operator():
        where += f" ({error.node_operator()})"
    return f"{where}: {error.code().name}: {error.desc()}"


def _parse(trt, builder, flags: int, onnx_path: Path, logger):
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [_parser_error(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ArtifactError(f"{onnx_path}: TensorRT's ONNX parser failed: " + "; ".join(errors or ["no details"]))
    return network, parser


def graph_precision(onnx_path: Path) -> str:
    """fp32, fp16 or int8 (Q/DQ): what a strongly typed build of this graph produces."""
    import onnx

    from resnet_deploy.onnx_info import precision_of

    return GRAPH_PRECISION[precision_of(onnx.load(str(onnx_path), load_external_data=False))]


def _check_graph(onnx_path: Path, precision: str, strongly_typed: bool, legacy: bool) -> None:
    """The graph must carry the precision asked for, or TensorRT silently builds another one."""
    given = graph_precision(onnx_path)
    if legacy:
        if given != "fp32":
            raise ResnetDeployError(f"{onnx_path}: is an {given} graph; --legacy-calibrator needs the FP32 ONNX")
        return
    weak_fp16 = not strongly_typed and precision == "fp16" and given == "fp32"
    if given != precision and not weak_fp16:
        raise ResnetDeployError(
            f"{onnx_path}: is an {given} graph; a {'strongly' if strongly_typed else 'weakly'} typed "
            f"--precision {precision} build needs the {precision} graph (Q/DQ for int8), or --legacy-calibrator "
            "with the FP32 graph on TensorRT 10")


def _precision_flags(trt, caps: Capabilities, config, precision: str, strongly_typed: bool,
                     legacy_cache: LegacyCache | None) -> Any:
    """Builder flags for the weakly typed branches (TensorRT <= 10 only); returns the calibrator to keep alive."""
    if strongly_typed:
        return None
    if not caps.precision_flags:
        raise ResnetDeployError(f"TensorRT {caps.version} removed weak typing (BuilderFlag.FP16/INT8 and "
                                "calibrators): build the FP16 or Q/DQ graph strongly typed instead")
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
    if legacy_cache is None:
        return None
    calibrator = make_cache_calibrator(trt, legacy_cache)
    config.int8_calibrator = calibrator
    return calibrator


def _load_timing_cache(config, path: str | Path | None, log: Callable[[str], None]):
    """The timing cache from `path` (empty when absent); one from another GPU or version starts afresh."""
    data = Path(path).read_bytes() if path is not None and Path(path).is_file() else b""
    cache = config.create_timing_cache(data)
    if config.set_timing_cache(cache, False):
        return cache
    log(f"timing cache {path} does not match this GPU or TensorRT; starting an empty one")
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache


def _device_options(trt, caps: Capabilities, config, dla_core: int | None, hardware_compatibility: str | None,
                    version_compatible: bool) -> None:
    if hardware_compatibility and hardware_compatibility != "none":
        if hardware_compatibility not in caps.hardware_levels:
            raise ResnetDeployError(f"TensorRT {caps.version} has no hardware-compatibility level "
                                    f"{hardware_compatibility!r}; it offers {', '.join(caps.hardware_levels)}")
        if dla_core is not None:
            raise ResnetDeployError("hardware-compatible engines run on the GPU only; drop --dla-core")
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, hardware_compatibility.upper())
    if dla_core is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = dla_core
        config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)


def _tensor_meta(trt, tensor, shape: list[int]) -> dict[str, Any]:
    import numpy as np

    return {"name": tensor.name, "dtype": np.dtype(trt.nptype(tensor.dtype)).name, "shape": shape}


def _check_settings(onnx_path: Path, precision: str, min_batch: int, opt_batch: int, max_batch: int) -> None:
    if precision not in PRECISIONS:
        raise ResnetDeployError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if not 1 <= min_batch <= opt_batch <= max_batch:
        raise ResnetDeployError(f"batch profile must satisfy 1 <= min <= opt <= max, got {min_batch}/{opt_batch}/{max_batch}")
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: ONNX file not found")


def build_engine(onnx_path: str | Path, engines_dir: str | Path = "engines", *, precision: str,
                 min_batch: int = 1, opt_batch: int = 32, max_batch: int = 256, workspace_mib: int = 1024,
                 timing_cache_path: str | Path | None = None, dla_core: int | None = None,
                 hardware_compatibility: str | None = None, version_compatible: bool = False,
                 legacy_calibrator: bool = False, calibration_cache: str | Path | None = None,
                 strongly_typed: bool = True, model_name: str | None = None, device: int = 0,
                 extra_metadata: dict[str, Any] | None = None, log: Callable[[str], None] = print,
                 trt=None, device_info=None) -> EngineInfo:
    """Build and save an engine from an ONNX graph (FP32, FP16 or Q/DQ) with its sidecar.

    `legacy_calibrator` (TensorRT <= 10): weakly typed FP32 graph + FP16/INT8 flags, INT8 scales from
    `calibration_cache`. `trt` and `device_info` default to the real `tensorrt` module and GPU.
    """
    onnx_path = Path(onnx_path)
    _check_settings(onnx_path, precision, min_batch, opt_batch, max_batch)
    trt = trt or import_tensorrt()
    caps = capabilities(trt)
    legacy_cache = None
    if legacy_calibrator:
        if not caps.legacy_calibrator:
            raise ResnetDeployError(f"--legacy-calibrator needs TensorRT <= 10; TensorRT {caps.version} removed "
                                    "IInt8Calibrator and the INT8 builder flag. Build the Q/DQ graph instead.")
        if precision == "int8":
            if calibration_cache is None:
                raise ResnetDeployError("--legacy-calibrator with int8 needs a calibration cache")
            legacy_cache = load_legacy_cache(trt, caps, calibration_cache)
        strongly_typed = False
    started = time.perf_counter()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network, _parser = _parse(trt, builder, _network_flags(trt, caps, strongly_typed), onnx_path, logger)
    _check_graph(onnx_path, precision, strongly_typed, legacy_calibrator)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    calibrator = _precision_flags(trt, caps, config, precision, strongly_typed, legacy_cache)
    if network.num_inputs != 1:
        raise ArtifactError(f"{onnx_path}: expected one input, the graph has {network.num_inputs}")
    input_tensor = network.get_input(0)
    sample_shape = tuple(input_tensor.shape)[1:]
    profile = builder.create_optimization_profile()
    shapes = {k: (b, *sample_shape) for k, b in (("min", min_batch), ("opt", opt_batch), ("max", max_batch))}
    profile.set_shape(input_tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    timing_cache = _load_timing_cache(config, timing_cache_path, log)
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
    tags = variant_tags(legacy_calibrator=legacy_calibrator, strongly_typed=strongly_typed, dla_core=dla_core,
                        hardware_compatibility=hardware_compatibility, version_compatible=version_compatible)
    engine_path = engine_path_for(onnx_path, engines_dir, precision, max_batch, caps.version, info, model_name, tags)
    atomic_write_bytes(engine_path, bytes(serialized))
    sidecar = _sidecar(trt, network, onnx_path, engine_path, info, precision, shapes, strongly_typed,
                       legacy_calibrator, legacy_cache)
    sidecar.update({
        "hardware_compatibility": hardware_compatibility or "none", "version_compatible": version_compatible,
        "build_settings": {"min_batch": min_batch, "opt_batch": opt_batch, "max_batch": max_batch,
                           "workspace_mib": workspace_mib, "dla_core": dla_core,
                           "timing_cache": str(timing_cache_path) if timing_cache_path else None},
        "build_seconds": round(time.perf_counter() - started, 2),
        **(extra_metadata or {}),
    })
    return EngineInfo(engine_path, write_sidecar(engine_path, sidecar), sidecar)


def _sidecar(trt, network, onnx_path: Path, engine_path: Path, info, precision: str, shapes: dict,
             strongly_typed: bool, legacy_calibrator: bool, legacy_cache: LegacyCache | None) -> dict[str, Any]:
    """What a runner must know before deserializing, and what the engine was made from."""
    from resnet_deploy.data import CLASS_NAMES, MEAN, STD

    input_tensor = network.get_input(0)
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    if legacy_cache is not None:
        calibration = {"method": "legacy-calibrator", "cache": str(legacy_cache.path),
                       "cache_sha256": sha256_file(legacy_cache.path), "algorithm": legacy_cache.algorithm,
                       "calibrator": legacy_cache.calibrator_class, "tensors": legacy_cache.tensors}
    else:
        calibration = {"method": "qdq-graph" if precision == "int8" else None}
    return {
        "engine": engine_path.name, "tensorrt_version": trt.__version__, "gpu_name": info.name,
        "compute_capability": info.compute_capability, "precision": precision,
        "profile": {k: list(v) for k, v in shapes.items()},
        "inputs": [_tensor_meta(trt, input_tensor, [-1, *shapes["max"][1:]])],
        "outputs": [_tensor_meta(trt, t, list(t.shape)) for t in outputs],
        "source_onnx": str(onnx_path), "source_onnx_sha256": sha256_file(onnx_path),
        "strongly_typed": strongly_typed, "legacy_calibrator": legacy_calibrator,
        "calibration": calibration,
        "normalization": {"mean": MEAN, "std": STD}, "class_names": list(CLASS_NAMES),
    }


def _device_info(device: int):
    from resnet_deploy.trt.cuda import device_info

    return device_info(device)


def engine_path_for(onnx_path: Path, engines_dir: str | Path, precision: str, max_batch: int, trt_version: str,
                    device_info, model_name: str | None = None, tags: list[str] | tuple[str, ...] = ()) -> Path:
    """Where the engine for these settings, this TensorRT and this GPU goes."""
    name = model_name or Path(onnx_path).name.split(".")[0]
    return Path(engines_dir) / engine_file_name(name, precision, max_batch, device_info.name,
                                                device_info.compute_capability, trt_version, tags)


def planned_engine_path(onnx_path: Path, engines_dir: str | Path, precision: str, max_batch: int = 256,
                        model_name: str | None = None, device: int = 0, **settings: Any) -> Path:
    """The engine path `build_engine` with these settings would write here (imports TensorRT and pycuda).

    Other `build_engine` keyword arguments are accepted, so a caller can pass the same settings to both.
    """
    tags = variant_tags(legacy_calibrator=bool(settings.get("legacy_calibrator")),
                        strongly_typed=settings.get("strongly_typed", True),
                        dla_core=settings.get("dla_core"), hardware_compatibility=settings.get("hardware_compatibility"),
                        version_compatible=bool(settings.get("version_compatible")))
    return engine_path_for(onnx_path, engines_dir, precision, max_batch, import_tensorrt().__version__,
                           _device_info(device), model_name, tags)
