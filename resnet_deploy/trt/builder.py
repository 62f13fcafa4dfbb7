"""TensorRT engine builds for TensorRT 10.x and 11.x, from an ONNX graph and an `EngineSettings`.

One path for both: the precision is in the ONNX graph (FP32, FP16 graph, Q/DQ graph) and the
network is strongly typed. TensorRT 10 also builds weakly typed (a Q/DQ graph then needs the INT8
flag) and offers the legacy path: FP32 ONNX + FP16/INT8 builder flags + a calibrator serving our
calibration cache (obeying the INT8 fallback's layer precisions). TensorRT 11 removed both and the
builder says so instead of failing on a missing attribute. The configuration follows trtexec
(`setupNetworkAndConfig` in samples/common/sampleEngines.cpp) and Polygraphy's `CreateConfig`
(tools/Polygraphy/polygraphy/backend/trt/config.py).
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.fileio import atomic_write_bytes, sha256_file
from resnet_deploy.quantize.cache import version_code as calibration_version_code
from resnet_deploy.quantize.fallback import TRT_DATA_TYPES, LayerPrecisions, read_layer_precisions
from resnet_deploy.trt.compat import (
    CALIBRATOR_CLASSES,
    DLA_RELEASES,
    Capabilities,
    capabilities,
    dla_supported,
    import_tensorrt,
    trt_logger,
    version_numbers,
)
from resnet_deploy.trt.cuda import DeviceInfo, device_info, pushed
from resnet_deploy.trt.settings import EngineSettings
from resnet_deploy.trt.sidecar import engine_file_name, write_sidecar
from resnet_deploy.trt.trtexec import trtexec_args

Log = Callable[[str], None]


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
        raise ArtifactError(
            f"{path}: calibration algorithm {header.algorithm!r} has no calibrator in TensorRT "
            f"{caps.version} (it has {', '.join(caps.calibrators) or 'none'})"
        )
    if not scales:
        raise ArtifactError(f"{path}: calibration cache has no tensor scales")
    body = path.read_text().split("\n", 1)[1]
    data = f"TRT-{calibration_version_code(trt.__version__)}-{header.algorithm}\n{body}".encode()
    return LegacyCache(path, data, header.algorithm, class_name, len(scales))


def make_cache_calibrator(trt, cache: LegacyCache):
    """A calibrator that serves `cache` and has no batches: TensorRT reads the scales and never calibrates."""
    base: Any = getattr(trt, cache.calibrator_class)

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
    from resnet_deploy.onnx_io import graph_precision as precision_of_graph
    from resnet_deploy.onnx_io import load_onnx, precision_of

    model = load_onnx(onnx_path)
    if precision_of(model) == "int8-cpu":
        raise ArtifactError(
            f"{onnx_path}: is the ONNX Runtime CPU INT8 graph (uint8 activations); TensorRT builds "
            "the Q/DQ graph (*.qdq.onnx)"
        )
    return precision_of_graph(model)


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
            "with the FP32 graph on TensorRT 10"
        )


def _weak_flag_names(precision: str, layer_precisions: LayerPrecisions | None) -> list[str]:
    """BuilderFlag names of a weakly typed build, as trtexec's --fp16/--int8; with layer precisions, FP16 only
    when a layer is FP16 and OBEY_PRECISION_CONSTRAINTS (the file's `builder_flags`, its `trtexec_args`)."""
    if precision == "fp16":
        return ["FP16"]
    if precision != "int8":
        return []
    if layer_precisions is None:
        return ["FP16", "INT8"]
    return [*(["FP16"] if layer_precisions.needs_fp16 else []), "INT8", "OBEY_PRECISION_CONSTRAINTS"]


def strongly_typed_network(caps: Capabilities, settings: EngineSettings) -> bool:
    """Whether the network is built strongly typed: as asked, except DLA on TensorRT 10, which NVIDIA's DLA flow
    builds weakly typed with the FP16/INT8 builder flags (trtexec --useDLACore --fp16/--int8 --allowGPUFallback;
    strongly typed DLA networks came with 11.4.1, which has no such flags)."""
    return settings.network_strongly_typed and not (settings.dla_core is not None and caps.precision_flags)


def _check_dla_flow(caps: Capabilities, settings: EngineSettings) -> None:
    """DLA INT8 on TensorRT 10 is calibrated INT8 (IInt8EntropyCalibrator2 is "the required calibrator for DLA")."""
    if caps.precision_flags and settings.precision == "int8" and not settings.legacy_calibrator:
        raise ResnetDeployError(
            f"--dla-core with int8 on TensorRT {caps.version}: NVIDIA's DLA flow is the FP32 "
            "graph with the INT8 flag and a calibration cache; add --legacy-calibrator (the Q/DQ "
            "graph is not built for DLA here)"
        )


def _precision_flags(
    trt,
    caps: Capabilities,
    config,
    settings: EngineSettings,
    legacy_cache: LegacyCache | None,
    layer_precisions: LayerPrecisions | None,
    profile,
    strongly_typed: bool,
) -> Any:
    """Builder flags for the weakly typed branches (TensorRT <= 10 only); returns the calibrator to keep alive."""
    if strongly_typed:
        return None
    if not caps.precision_flags:
        raise ResnetDeployError(
            f"TensorRT {caps.version} removed weak typing (BuilderFlag.FP16/INT8 and "
            "calibrators): build the FP16 or Q/DQ graph strongly typed instead"
        )
    for name in _weak_flag_names(settings.precision, layer_precisions):
        config.set_flag(getattr(trt.BuilderFlag, name))
    if legacy_cache is None:
        return None
    calibrator = make_cache_calibrator(trt, legacy_cache)
    config.int8_calibrator = calibrator
    # NvInfer.h (10.x), setCalibrationProfile: "Calibration optimization profile must be set if int8
    # calibration is used to set scales for a network with runtime dimensions" (our batch axis is one).
    if not config.set_calibration_profile(profile):
        raise ArtifactError("TensorRT refused the calibration profile (see its log above)")
    return calibrator


def _checked_layer_precisions(path: Path, onnx_path: Path) -> LayerPrecisions:
    """The layer-precisions file, refused (naming it) when malformed or made for another ONNX than `onnx_path`."""
    spec = read_layer_precisions(path)
    if spec.source_onnx_sha256 != sha256_file(onnx_path):
        raise ArtifactError(
            f"{path}: made for another ONNX (its source_onnx_sha256 is not {onnx_path}'s); "
            "run the INT8 fallback again on this graph"
        )
    return spec


def _apply_layer_precisions(trt, network, spec: LayerPrecisions, onnx_path: Path) -> None:
    """Set each listed layer's precision and output types, as trtexec's --layerPrecisions and --layerOutputTypes
    (`setLayerPrecisions`, `setLayerOutputTypes` in samples/common/sampleEngines.cpp); the parser names a layer
    after its ONNX node, the name the file lists."""
    layers = {layer.name: layer for layer in (network.get_layer(i) for i in range(network.num_layers))}
    missing = [name for name in spec.layers if name not in layers]
    if missing:
        raise ArtifactError(
            f"{spec.path}: layers {', '.join(missing)} are not in the network TensorRT parsed from {onnx_path}"
        )
    for name, precision in spec.layers.items():
        data_type = getattr(trt.DataType, TRT_DATA_TYPES[precision])
        layer = layers[name]
        layer.precision = data_type
        for index in range(layer.num_outputs):
            layer.set_output_type(index, data_type)


def _tf32(trt, caps: Capabilities, config, tf32: bool) -> None:
    """BuilderFlag.TF32 is on by default: clear it unless asked, so an "fp32" engine computes in FP32.

    Polygraphy's CreateConfig does the same (tf32=False clears the flag); trtexec clears it on --noTF32.
    """
    if not caps.tf32_flag:
        if tf32:
            raise ResnetDeployError(f"TensorRT {caps.version} has no BuilderFlag.TF32; drop --tf32")
        return
    if tf32:
        config.set_flag(trt.BuilderFlag.TF32)
    else:
        config.clear_flag(trt.BuilderFlag.TF32)


def _create_timing_cache(config, data: bytes):
    """`create_timing_cache`, or None where TensorRT returns null or raises on data it cannot use."""
    try:
        return config.create_timing_cache(data)
    except Exception:  # noqa: BLE001 - pybind11 maps TensorRT's failure to whatever it likes; we start afresh
        return None


def _load_timing_cache(config, path: Path | None, log: Log):
    """The timing cache of `path`, or an empty one (with a one-line notice) when it cannot be used.

    NVIDIA's `buildTimingCacheFromFile` (shared/utils/cacheUtils.cpp) checks `createTimingCache` for
    null and `setTimingCache` for false; the Python binding passes the null on as None.
    """
    data = path.read_bytes() if path is not None and path.is_file() else b""
    cache = _create_timing_cache(config, data) if data else None
    if data and cache is None:
        log(f"note: timing cache {path} is unreadable (corrupt, or from another TensorRT); starting an empty one")
    elif cache is not None and not config.set_timing_cache(cache, False):
        log(f"note: timing cache {path} was made on another GPU or TensorRT; starting an empty one")
        cache = None
    if cache is None:
        cache = _create_timing_cache(config, b"")
        if cache is None:
            raise ArtifactError("TensorRT could not create an empty timing cache (see its log above)")
        config.set_timing_cache(cache, False)
    return cache


def _dla(trt, caps: Capabilities, builder, config, settings: EngineSettings) -> None:
    """DLA as trtexec sets it up: a release with DLA and a core that exists, NVIDIA's precision flow for that
    release, default device DLA, GPU fallback."""
    core = settings.dla_core
    if core is None:
        return
    if not dla_supported(trt.__version__):
        raise ResnetDeployError(f"--dla-core: TensorRT {trt.__version__} has no DLA support ({DLA_RELEASES})")
    cores = builder.num_DLA_cores
    if core >= cores:
        have = "no DLA (builder.num_DLA_cores is 0)" if cores == 0 else f"{cores} DLA cores (0..{cores - 1})"
        raise ResnetDeployError(f"--dla-core {core}: this device has {have}")
    _check_dla_flow(caps, settings)
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = core
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def _compatibility(trt, caps: Capabilities, config, settings: EngineSettings, info: DeviceInfo) -> None:
    """Hardware compatibility (Ampere and later, not on JetPack) and version compatibility."""
    level = settings.hardware_compatibility
    if level != "none":
        if level not in caps.hardware_levels:
            raise ResnetDeployError(
                f"TensorRT {caps.version} has no hardware-compatibility level {level!r}; "
                f"it offers {', '.join(caps.hardware_levels)}"
            )
        if info.integrated:
            raise ResnetDeployError(
                f"hardware compatibility is not supported on Jetson ({info.name} is an "
                "integrated GPU); build with --hardware-compatibility none"
            )
        if level == "ampere_plus" and version_numbers(info.compute_capability, 2) < (8, 0):
            raise ResnetDeployError(
                f"--hardware-compatibility ampere_plus is built on Ampere or later; {info.name} "
                f"has compute capability {info.compute_capability}"
            )
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, level.upper())
    if settings.version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)


def _tensor_meta(trt, tensor, shape: list[int]) -> dict[str, Any]:
    import numpy as np

    return {"name": tensor.name, "dtype": np.dtype(trt.nptype(tensor.dtype)).name, "shape": shape}


def _legacy_cache(
    trt, caps: Capabilities, settings: EngineSettings, calibration_cache: str | Path | None
) -> LegacyCache | None:
    if not settings.legacy_calibrator:
        return None
    if not caps.legacy_calibrator:
        raise ResnetDeployError(
            f"--legacy-calibrator needs TensorRT <= 10; TensorRT {caps.version} removed "
            "IInt8Calibrator and the INT8 builder flag. Build the Q/DQ graph instead."
        )
    if settings.precision != "int8":
        return None
    if calibration_cache is None:
        raise ResnetDeployError("--legacy-calibrator with int8 needs a calibration cache")
    return load_legacy_cache(trt, caps, calibration_cache)


@dataclass
class _Built:
    plan: bytes
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    strongly_typed: bool
    dla_placement: dict[str, Any] | None = None


FOREIGN_NODE = "{ForeignNode["  # a DLA subgraph as TensorRT names it in the engine's layers
DLA_IO = (" to nvm", " from nvm", " copy finish")  # the reformats around a DLA subgraph


def _layer_name(layer: Any) -> str:
    """An inspector layer: a name (LAYER_NAMES_ONLY, the default verbosity) or a dict with "Name" (DETAILED)."""
    return layer.get("Name", "") if isinstance(layer, dict) else str(layer)


def dla_placement(trt, plan: bytes, settings: EngineSettings, network_devices: dict[str, bool]) -> dict[str, Any]:
    """Where a DLA build's layers landed: the network layers DLA can run (`can_run_on_DLA`, the rest fall back
    to the GPU) and the engine's layers read back with the engine inspector (DLA subgraphs vs GPU layers)."""
    import json

    runtime = trt.Runtime(trt_logger(trt))
    runtime.DLA_core = settings.dla_core
    if settings.version_compatible:
        runtime.engine_host_code_allowed = True
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise ArtifactError("TensorRT could not deserialize the DLA engine it built (see its log above)")
    info = json.loads(engine.create_engine_inspector().get_engine_information(trt.LayerInformationFormat.JSON))
    names = [_layer_name(layer) for layer in info.get("Layers", [])]
    compute = [n for n in names if not n.endswith(DLA_IO)]
    fallback = [name for name, on_dla in network_devices.items() if not on_dla]
    return {
        "network_layers": len(network_devices),
        "network_layers_on_dla": len(network_devices) - len(fallback),
        "gpu_fallback_layers": fallback,
        "engine_dla_layers": [n for n in compute if n.startswith(FOREIGN_NODE)],
        "engine_gpu_layers": [n for n in compute if not n.startswith(FOREIGN_NODE)],
    }


def dla_warning(placement: dict[str, Any], core: int) -> str | None:
    """One line when the DLA engine runs mostly (or wholly) on the GPU."""
    on_dla, total = placement["network_layers_on_dla"], placement["network_layers"]
    if not placement["engine_dla_layers"]:
        return f"warning: the dla{core} engine runs entirely on the GPU: no layer landed on the DLA"
    if on_dla * 2 < total:
        return (
            f"warning: most layers of the dla{core} engine fell back to the GPU ({total - on_dla} of {total} "
            "cannot run on the DLA); the DLA saves little here"
        )
    return None


def _build(
    trt,
    caps: Capabilities,
    onnx_path: Path,
    settings: EngineSettings,
    legacy_cache: LegacyCache | None,
    layer_precisions: LayerPrecisions | None,
    info: DeviceInfo,
    log: Log,
) -> _Built:
    """Parse, configure and build with the device's context current; every TensorRT object dies here."""
    logger = trt_logger(trt)
    builder = trt.Builder(logger)
    strongly_typed = strongly_typed_network(caps, settings)
    network, _parser = _parse(trt, builder, _network_flags(trt, caps, strongly_typed), onnx_path, logger)
    _check_graph(onnx_path, settings.precision, strongly_typed, settings.legacy_calibrator)
    if network.num_inputs != 1:
        raise ArtifactError(f"{onnx_path}: expected one input, the graph has {network.num_inputs}")
    if layer_precisions is not None:
        _apply_layer_precisions(trt, network, layer_precisions, onnx_path)
    input_tensor = network.get_input(0)
    sample_shape = tuple(input_tensor.shape)[1:]
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, settings.workspace_mib << 20)
    profile = builder.create_optimization_profile()
    shapes = {k: (b, *sample_shape) for k, b in settings.batches.items()}
    profile.set_shape(input_tensor.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)
    _tf32(trt, caps, config, settings.tf32)
    calibrator = _precision_flags(trt, caps, config, settings, legacy_cache, layer_precisions, profile, strongly_typed)
    timing_cache = _load_timing_cache(config, settings.timing_cache, log)
    _dla(trt, caps, builder, config, settings)
    _compatibility(trt, caps, config, settings, info)
    log(
        f"building {settings.precision} engine from {onnx_path} with TensorRT {caps.version} on {info.name} "
        f"({'strongly' if strongly_typed else 'weakly'} typed, batch "
        f"{settings.min_batch}/{settings.opt_batch}/{settings.max_batch})"
    )
    network_devices = (
        {
            layer.name: bool(config.can_run_on_DLA(layer))
            for layer in (network.get_layer(i) for i in range(network.num_layers))
        }
        if settings.dla_core is not None
        else {}
    )
    serialized = builder.build_serialized_network(network, config)
    del calibrator
    if serialized is None:
        raise ArtifactError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    if settings.timing_cache is not None:
        atomic_write_bytes(settings.timing_cache, bytes(timing_cache.serialize()))
    outputs = [network.get_output(i) for i in range(network.num_outputs)]
    placement = None
    if settings.dla_core is not None:
        placement = dla_placement(trt, bytes(serialized), settings, network_devices)
        warning = dla_warning(placement, settings.dla_core)
        if warning:
            log(warning)
    return _Built(
        bytes(serialized),
        [_tensor_meta(trt, input_tensor, [-1, *sample_shape])],
        [_tensor_meta(trt, t, list(t.shape)) for t in outputs],
        strongly_typed,
        placement,
    )


def build_engine(
    onnx_path: str | Path,
    settings: EngineSettings,
    engines_dir: str | Path = "engines",
    *,
    calibration_cache: str | Path | None = None,
    model_name: str | None = None,
    extra_metadata: dict[str, Any] | None = None,
    log: Log = print,
) -> EngineInfo:
    """Build and save an engine from an ONNX graph (FP32, FP16 or Q/DQ) on `settings.device`, with its sidecar.

    `calibration_cache` serves the legacy calibrator (int8 with `settings.legacy_calibrator`), which also
    obeys `settings.layer_precisions` (checked before TensorRT is touched).
    """
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"{onnx_path}: ONNX file not found")
    layer_precisions = (
        _checked_layer_precisions(settings.layer_precisions, onnx_path)
        if settings.layer_precisions is not None
        else None
    )
    trt = import_tensorrt("building an engine")
    caps = capabilities(trt)
    legacy_cache = _legacy_cache(trt, caps, settings, calibration_cache)
    info = device_info(settings.device)
    started = time.perf_counter()
    # TensorRT builds on the device of the current CUDA context (trtexec calls cudaSetDevice first).
    with pushed(settings.device):
        built = _build(trt, caps, onnx_path, settings, legacy_cache, layer_precisions, info, log)
    engine_path = engine_path_for(onnx_path, settings, engines_dir, caps.version, info, model_name)
    atomic_write_bytes(engine_path, built.plan)
    sidecar = _sidecar(trt.__version__, onnx_path, engine_path, info, settings, built, legacy_cache, layer_precisions)
    sidecar.update({"build_seconds": round(time.perf_counter() - started, 2), **(extra_metadata or {})})
    return EngineInfo(engine_path, write_sidecar(engine_path, sidecar), sidecar)


def _sidecar(
    trt_version: str,
    onnx_path: Path,
    engine_path: Path,
    info: DeviceInfo,
    settings: EngineSettings,
    built: _Built,
    legacy_cache: LegacyCache | None,
    layer_precisions: LayerPrecisions | None,
) -> dict[str, Any]:
    """What a runner must know before deserializing, and what the engine was made from."""
    from resnet_deploy.data import CLASS_NAMES, MEAN, STD

    if legacy_cache is not None:
        calibration = {
            "method": "legacy-calibrator",
            "cache": str(legacy_cache.path),
            "cache_sha256": sha256_file(legacy_cache.path),
            "algorithm": legacy_cache.algorithm,
            "calibrator": legacy_cache.calibrator_class,
            "tensors": legacy_cache.tensors,
        }
        if layer_precisions is not None:
            calibration["layer_precisions"] = {
                "file": str(layer_precisions.path),
                "sha256": sha256_file(layer_precisions.path),
                "layers": layer_precisions.layers,
            }
    else:
        calibration = {"method": "qdq-graph" if settings.precision == "int8" else None}
    trtexec = trtexec_args(
        settings,
        onnx_path,
        engine_path,
        input_name=built.inputs[0]["name"],
        input_shape=built.inputs[0]["shape"][1:],
        strongly_typed=built.strongly_typed,
        calibration_cache=legacy_cache.path if legacy_cache is not None else None,
    )
    return {
        "engine": engine_path.name,
        "tensorrt_version": trt_version,
        "gpu_name": info.name,
        "compute_capability": info.compute_capability,
        "integrated_gpu": info.integrated,
        "platform": info.platform,
        "precision": settings.precision,
        "tf32": settings.tf32,
        "dla_core": settings.dla_core,
        "hardware_compatibility": settings.hardware_compatibility,
        "version_compatible": settings.version_compatible,
        "strongly_typed": built.strongly_typed,
        "legacy_calibrator": settings.legacy_calibrator,
        "dla_placement": built.dla_placement,
        "profile": {k: [b, *built.inputs[0]["shape"][1:]] for k, b in settings.batches.items()},
        "inputs": built.inputs,
        "outputs": built.outputs,
        "source_onnx": str(onnx_path),
        "source_onnx_sha256": sha256_file(onnx_path),
        "calibration": calibration,
        "build_settings": settings.as_dict(),
        "trtexec": shlex.join(trtexec),
        "normalization": {"mean": MEAN, "std": STD},
        "class_names": list(CLASS_NAMES),
    }


def engine_path_for(
    onnx_path: str | Path,
    settings: EngineSettings,
    engines_dir: str | Path,
    trt_version: str,
    info: DeviceInfo,
    model_name: str | None = None,
) -> Path:
    """Where the engine for these settings, this TensorRT and this GPU goes."""
    name = model_name or Path(onnx_path).name.split(".")[0]
    return Path(engines_dir) / engine_file_name(
        name, settings.precision, settings.max_batch, info.name, info.compute_capability, trt_version, settings.tags()
    )


def planned_engine_path(
    onnx_path: str | Path, settings: EngineSettings, engines_dir: str | Path = "engines", model_name: str | None = None
) -> Path:
    """The engine path `build_engine` with these settings would write here (imports TensorRT and pycuda)."""
    trt = import_tensorrt("planning an engine")
    return engine_path_for(onnx_path, settings, engines_dir, trt.__version__, device_info(settings.device), model_name)
