"""A recording fake of the `tensorrt` module, generated from the real API surface of one version.

Every class, enum (with the real member values) and module function of that version's surface
exists in the fake and nothing else, so `hasattr` answers as the real module does. On fake objects
every attribute our code reads, sets or calls must exist in the surface (a property must be
settable to be set), so code that uses an API removed in TensorRT 11 fails here as it would for
real. Behaviour is recorded in `trt.calls` and refuses what TensorRT refuses where our code depends
on it:
- parser: unsupported quantized operators, non-int8 or non-zero zero points (onnx_rules.py); it makes
  one layer per ONNX node (but Constant), named after the node as onnx-tensorrt's `registerLayer` does;
- layers (10.x: TensorRT 11 has no layer precisions): setting `precision` or calling `set_output_type` on a
  strongly typed network is rejected as NvInfer.h says ("Strongly-typed networks reject calls to method
  setPrecision/setOutputType"): an API usage error is recorded, the value ignored and missing from the plan;
- builder: precision flags on strongly typed networks; a layer or layer output set to FP16 without the
  FP16 flag ("fp16 precision has been set for at least one layer or layer output, but fp16 is not
  configured in the builder"); a weakly typed Q/DQ graph without INT8; a
  calibrator on a dynamic network without a calibration profile; a calibration cache with a
  foreign header is ignored (then calibration has no batches and the build fails); DLA without a
  core, a fixed shape or FP16/INT8, or on a release without DLA; hardware compatibility on Jetson;
  TF32 is on until cleared; the build runs on the current context's device (device 0 without one);
- timing cache: `create_timing_cache` returns None on data that is not a cache and raises on one of
  another release; `set_timing_cache` refuses a cache timed on another compute capability;
- runtime: a plan of another TensorRT release (unless version-compatible across an allowed step,
  with `engine_host_code_allowed`), platform or compute capability is refused; a DLA engine needs
  `runtime.DLA_core` set before deserializing or it runs on the GPU;
- engine: real I/O dtypes; an execution context is in use from `set_input_shape` until the work it enqueued has
  run (its stream synchronized), and a second thread using it then raises; `execute_async_v3` on
  a capturing stream (fake_pycuda) is recorded, and fails the capture when it is the first enqueue after
  an input shape change, or when the plan says a plugin synchronizes its stream (`plugin_synchronizes`).
The fake "engine" runs its ONNX graph with ONNX Runtime on the fake pycuda memory, so runner tests
see real logits.
"""

from __future__ import annotations

import json
import platform
import sys
import threading
import types
from pathlib import Path

import numpy as np

from tests.fakes.dla_layers import DLA_UNSUPPORTED_OPS, activation_bytes, layer_devices
from tests.fakes.onnx_rules import network_precision, parser_issues
from tests.fakes.precision import apply_build_precision, cache_scales

SURFACES = Path(__file__).resolve().parents[2].parent / "shared" / "tensorrt-api"
VERSIONS = {"10.3": "10.3.0", "10.16": "10.16.1.11", "11.4": "11.4.0.106"}
SEVERITY = {"INTERNAL_ERROR": 0, "ERROR": 1, "WARNING": 2, "INFO": 3, "VERBOSE": 4}
ALGORITHMS = {"IInt8EntropyCalibrator2": "EntropyCalibration2", "IInt8EntropyCalibrator": "EntropyCalibration",
              "IInt8MinMaxCalibrator": "MinMaxCalibration", "IInt8LegacyCalibrator": "LegacyCalibration"}


def load_surface(version: str) -> dict:
    path = SURFACES / f"tensorrt-{VERSIONS.get(version, version)}.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: TensorRT API surface not found (../shared/tensorrt-api beside the repo)")
    return json.loads(path.read_text())


class EnumMember:
    def __init__(self, owner: str, name: str, value: int):
        self.owner, self.name, self.value = owner, name, value

    def __int__(self) -> int:
        return self.value

    def __eq__(self, other) -> bool:
        return isinstance(other, EnumMember) and (other.owner, other.value) == (self.owner, self.value)

    def __hash__(self) -> int:
        return hash((self.owner, self.value))

    def __repr__(self) -> str:
        return f"<{self.owner}.{self.name}: {self.value}>"


def make_enum(name: str, members: dict[str, int]) -> type:
    namespace = {member: EnumMember(name, member, value) for member, value in members.items()}
    namespace["__members__"] = dict(namespace)
    return type(name, (), namespace)


class Surfaced:
    """Base of fake classes: attribute access is limited to the version's real surface."""

    _surface: dict = {}
    _trt_version = "?"

    def __init__(self, *args, **kwargs):
        object.__setattr__(self, "_values", {})

    def __getattribute__(self, name):
        if not name.startswith("_") and name not in type(self)._surface:
            raise AttributeError(f"{type(self).__name__}.{name} does not exist in TensorRT {type(self)._trt_version}")
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_"):
            member = type(self)._surface.get(name)
            if member is None or member.get("kind") != "property" or not member.get("settable"):
                raise AttributeError(f"{type(self).__name__}.{name} is not a settable property in "
                                     f"TensorRT {type(self)._trt_version}")
            self._record("set", name, value)
            self._values[name] = value
            return
        object.__setattr__(self, name, value)

    def _record(self, *call):
        self._trt.calls.append((type(self).__name__, *call))


def _all_members(classes: dict, name: str) -> dict:
    """A class's members including those of its bases in the surface."""
    members = {}
    for base in classes[name].get("bases", []):
        if base in classes:
            members.update(_all_members(classes, base))
    members.update(classes[name]["members"])
    return members


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:3])


def _has_dla(version: str) -> bool:
    """NVIDIA's "Working with DLA" (11.4.1): DLA up to 10.7, none in 11.0 to 11.4.0, back in 11.4.1."""
    numbers = _numbers(version)
    return numbers[:2] <= (10, 7) or numbers >= (11, 4, 1)


def _loads_version_compatible(built: str, runtime: str) -> bool:
    """NVIDIA's "Version Compatibility": from 8.6 on, later releases of the same major, 8 -> 9/10, 10 -> 11."""
    b, r = _numbers(built), _numbers(runtime)
    steps = {8: (8, 9, 10), 9: (9, 10), 10: (10, 11), 11: (11,)}
    return b[:2] >= (8, 6) and r >= b and r[0] in steps.get(b[0], ())


def make_fake_tensorrt(version: str, gpu=None):
    """Return the fake module for TensorRT `version` ('10.3', '10.16' or '11.4') on the fake pycuda `gpu`.

    `gpu` (a fake_pycuda.Recorder) is the machine: its devices, memory and context stacks. Without it
    only the module's names and enums can be used (no Builder or Runtime).
    """
    surface = load_surface(version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = surface["version"]
    trt.calls = gpu.calls if gpu is not None else []
    for name, members in surface["enums"].items():
        setattr(trt, name, make_enum(name, members))
    classes = surface["classes"]
    for name in classes:
        setattr(trt, name, type(name, (Surfaced,), {"_surface": _all_members(classes, name),
                                                    "_trt_version": surface["version"], "_trt": trt}))

    def fake(cls):
        """Give the surface class `cls.__name__` the behaviour defined in `cls`."""
        name = cls.__name__
        built = type(name, (cls, Surfaced), {"_surface": _all_members(classes, name),
                                              "_trt_version": surface["version"], "_trt": trt})
        setattr(trt, name, built)
        return built

    def machine():
        if gpu is None:
            raise RuntimeError("fake tensorrt: pass the fake pycuda (tests.fakes.install) to build or run engines")
        return gpu

    def current_device() -> int:
        """The device TensorRT works on: the current context's, else device 0's primary context (CUDA runtime)."""
        device = machine().current_device()
        return 0 if device is None else device

    def dla_cores() -> int:
        return machine().devices[current_device()].dla_cores if _has_dla(trt.__version__) else 0

    @fake
    class Logger:
        def __init__(self, min_severity=None):
            Surfaced.__init__(self)
            self._values["min_severity"] = min_severity
            self._record("init", getattr(min_severity, "name", None))

        @property
        def min_severity(self):
            return self._values["min_severity"]

    for name, value in SEVERITY.items():
        setattr(trt.Logger, name, EnumMember("Severity", name, value))

    @fake
    class ParserError:
        def __init__(self, node, message, code="MODEL_DESERIALIZE_FAILED", name="", operator=""):
            Surfaced.__init__(self)
            self._node, self._message, self._code, self._name, self._operator = node, message, code, name, operator

        def node(self):
            return self._node

        def node_name(self):
            return self._name

        def node_operator(self):
            return self._operator

        def code(self):
            return getattr(trt.ErrorCode, self._code)

        def desc(self):
            return self._message

    @fake
    class ITensor:
        def __init__(self, name, shape, dtype):
            Surfaced.__init__(self)
            self._name, self._shape, self._dtype = name, tuple(shape), dtype

        @property
        def name(self):
            return self._name

        @property
        def shape(self):
            return self._shape

        @property
        def dtype(self):
            return self._dtype

    def is_strongly_typed(network) -> bool:
        return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and bool(
            network._flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    @fake
    class INetworkDefinition:
        def __init__(self, flags):
            Surfaced.__init__(self)
            self._flags = flags
            self._inputs, self._outputs, self._layers, self._onnx, self._precision = [], [], [], None, "fp32"

        def get_input(self, index):
            return self._inputs[index]

        def get_layer(self, index):
            return self._layers[index]

        @property
        def num_layers(self):
            return len(self._layers)

        def get_output(self, index):
            return self._outputs[index]

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

    layer_precisions = "precision" in classes["ILayer"]["members"]  # TensorRT 10; gone in 11

    @fake
    class ILayer:
        """A parsed layer: its name, its output count and, on 10.x, the precision and output types set on it."""

        def __init__(self, network, name, num_outputs, op=""):
            Surfaced.__init__(self)
            self._network, self._name, self._num_outputs, self._output_types = network, name, num_outputs, {}
            self._op = op

        @property
        def name(self):
            return self._values.get("name", self._name)

        @property
        def num_outputs(self):
            return self._num_outputs

        if layer_precisions:
            def _rejected(self, method):
                """NvInfer.h (10.x): "Strongly-typed networks reject calls to method <method>" (logged, ignored)."""
                if not is_strongly_typed(self._network):
                    return False
                self._record("error", f"{self._name}: ILayer::{method}: Error Code 3: API Usage Error (strongly "
                                      f"typed networks reject calls to {method})")
                return True

            def __setattr__(self, name, value):
                if name == "precision" and self._rejected("setPrecision"):
                    return
                Surfaced.__setattr__(self, name, value)

            @property
            def precision(self):
                return self._values.get("precision", trt.DataType.FLOAT)

            @property
            def precision_is_set(self):
                return "precision" in self._values

            def set_output_type(self, index, dtype):
                self._record("set_output_type", self._name, index, dtype.name)
                if not self._rejected("setOutputType") and 0 <= index < self._num_outputs:
                    self._output_types[index] = dtype

            def get_output_type(self, index):
                return self._output_types.get(index, trt.DataType.FLOAT)

            def output_type_is_set(self, index):
                return index in self._output_types

    def parsed_layers(network, graph):
        """One layer per node but Constant, named `node.name` (else node_of_<first output>), made unique with
        _<counter> as onnx-tensorrt's `generateUniqueName`. (The real parser adds helper layers too, e.g. Gemm's
        bias add; the node's own layer carries the node's name.)"""
        names, counter, layers = set(), 0, []
        for node in graph.graph.node:
            if node.op_type == "Constant":
                continue
            base = node.name or f"node_of_{node.output[0]}"
            name = base
            while name in names:
                name, counter = f"{base}_{counter}", counter + 1
            names.add(name)
            layers.append(ILayer(network, name, len(node.output), node.op_type))
        return layers

    def layer_constraints(network):
        """({layer: precision}, {layer: [output types by index]}) of the layers where they were set."""
        precisions = {layer.name: layer._values["precision"].name for layer in network._layers
                      if "precision" in layer._values}
        output_types = {layer.name: [layer._output_types[i].name for i in sorted(layer._output_types)]
                        for layer in network._layers if layer._output_types}
        return precisions, output_types

    onnx_dtypes = {1: "FLOAT", 10: "HALF", 3: "INT8", 6: "INT32", 7: "INT64"}

    @fake
    class OnnxParser:
        def __init__(self, network, logger):
            Surfaced.__init__(self)
            self._network, self._errors = network, []

        def parse_from_file(self, model):
            """Load and check the model, then refuse what TensorRT's parser refuses (onnx_rules)."""
            import onnx

            self._record("parse_from_file", model)
            try:
                graph = onnx.load(model)
                onnx.checker.check_model(graph)
            except Exception as exc:
                self._errors.append(ParserError(-1, f"{type(exc).__name__}: {exc}"))
                return False
            issues = parser_issues(graph)
            if issues:
                self._errors += [ParserError(i.node, i.message, i.code, i.name, i.operator) for i in issues]
                return False

            def tensor(value):
                shape = tuple(d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim)
                return ITensor(value.name, shape, getattr(trt.DataType, onnx_dtypes[value.type.tensor_type.elem_type]))

            network = self._network
            network._inputs = [tensor(v) for v in graph.graph.input]
            network._outputs = [tensor(v) for v in graph.graph.output]
            network._layers = parsed_layers(network, graph)
            network._onnx = model
            network._precision = network_precision(graph)
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    @fake
    class IOptimizationProfile:
        def __init__(self):
            Surfaced.__init__(self)
            self._shapes = {}

        def set_shape(self, input, min, opt, max):
            self._record("set_shape", input, tuple(min), tuple(opt), tuple(max))
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    @fake
    class IHostMemory:
        def __init__(self, data: bytes):
            Surfaced.__init__(self)
            self._data = data

        def __bytes__(self):
            return self._data

        @property
        def nbytes(self):
            return len(self._data)

    cache_magic = b"FAKE-TIMING-CACHE"

    @fake
    class ITimingCache:
        """Serialized as `FAKE-TIMING-CACHE <trt version> <compute capability>` and one line per timed build."""

        def __init__(self, capability, builds):
            Surfaced.__init__(self)
            self._capability, self._builds = capability, builds

        def serialize(self):
            header = f"{trt.__version__} {self._capability}".encode()
            return IHostMemory(b"\n".join([cache_magic + b" " + header, *[b"timed"] * self._builds]))

    def device_capability(index):
        return "{}.{}".format(*machine().devices[index].compute_capability)

    @fake
    class IBuilderConfig:
        def __init__(self):
            Surfaced.__init__(self)
            self._flags = {"TF32"} if hasattr(trt.BuilderFlag, "TF32") else set()  # TF32 is on by default
            self._profiles, self._timing_cache, self._calibration_profile = [], None, None

        def set_flag(self, flag):
            self._record("set_flag", flag.name)
            self._flags.add(flag.name)

        def clear_flag(self, flag):
            self._record("clear_flag", flag.name)
            self._flags.discard(flag.name)

        def get_flag(self, flag):
            return flag.name in self._flags

        def can_run_on_DLA(self, layer):
            """The fake's model of DLA's layer support (dla_layers.DLA_UNSUPPORTED_OPS)."""
            return layer._op not in DLA_UNSUPPORTED_OPS

        def set_memory_pool_limit(self, pool, pool_size):
            self._record("set_memory_pool_limit", pool.name, pool_size)

        def add_optimization_profile(self, profile):
            self._record("add_optimization_profile")
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            """None for data that is not a timing cache (as the binding passes on TensorRT's null); raises on
            a cache of another TensorRT release."""
            data = bytes(serialized_timing_cache)
            self._record("create_timing_cache", data)
            if not data:
                return ITimingCache(None, 0)
            lines = data.split(b"\n")
            header = lines[0].split(b" ")
            if header[0] != cache_magic or len(header) != 3:
                return None
            if header[1].decode() != trt.__version__:
                raise RuntimeError(f"fake tensorrt: timing cache of TensorRT {header[1].decode()} cannot be read")
            return ITimingCache(header[2].decode(), len(lines) - 1)

        def set_timing_cache(self, cache, ignore_mismatch):
            """A cache timed on a GPU of another compute capability is refused unless ignore_mismatch."""
            self._record("set_timing_cache", ignore_mismatch)
            here = device_capability(current_device())
            if cache._capability not in (None, here) and not ignore_mismatch:
                return False
            self._timing_cache = cache
            return True

        if "set_calibration_profile" in classes["IBuilderConfig"]["members"]:
            def set_calibration_profile(self, profile):
                self._record("set_calibration_profile")
                self._calibration_profile = profile
                return True

    def version_code():
        major, minor, patch = _numbers(trt.__version__)
        return major * (10000 if major >= 10 else 1000) + minor * 100 + patch

    def calibrated_scales(calibrator, network):
        """Scales from the calibrator's cache, or None when TensorRT would ignore it and find no batches."""
        cache = calibrator.read_calibration_cache()
        algorithm = next(ALGORITHMS[c.__name__] for c in type(calibrator).__mro__ if c.__name__ in ALGORITHMS)
        lines = bytes(cache).decode().splitlines() if cache else []
        if lines and lines[0] == f"TRT-{version_code()}-{algorithm}":
            return dict(line.split(": ") for line in lines[1:] if line)
        trt.calls.append(("Builder", "calibration cache ignored", lines[0] if lines else None))
        if calibrator.get_batch([t.name for t in network._inputs]) is None:
            return None
        raise NotImplementedError("the fake cannot calibrate from batches")

    @fake
    class Builder:
        def __init__(self, logger):
            Surfaced.__init__(self)
            machine()
            self._record("init", id(logger))

        @property
        def num_DLA_cores(self):
            return dla_cores()

        def create_network(self, flags=0):
            self._record("create_network", flags)
            return INetworkDefinition(flags)

        def create_builder_config(self):
            self._record("create_builder_config")
            return IBuilderConfig()

        def create_optimization_profile(self):
            return IOptimizationProfile()

        def build_serialized_network(self, network, config):
            """None (as TensorRT after logging an error) for the configurations TensorRT rejects."""
            device = current_device()
            self._record("build_serialized_network", device)
            strongly_typed = is_strongly_typed(network)
            precision_flags = config._flags & {"FP16", "INT8", "BF16", "FP8", "INT4"}
            calibrator = config._values.get("int8_calibrator")
            qdq = network._precision == "int8"
            if strongly_typed and (precision_flags or calibrator):
                return self._fail("precision flags and calibrators are not allowed on a strongly typed network")
            if qdq and not strongly_typed and "INT8" not in precision_flags:
                return self._fail("Q/DQ layers in a weakly typed network need BuilderFlag.INT8")
            precisions, output_types = layer_constraints(network)
            if "FP16" not in precision_flags and "HALF" in {*precisions.values(), *sum(output_types.values(), [])}:
                return self._fail("IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error (fp16 precision has "
                                  "been set for at least one layer or layer output, but fp16 is not configured in "
                                  "the builder.)")
            if len(config._profiles) != 1:
                return self._fail(f"expected one optimization profile, got {len(config._profiles)}")
            (profile,) = config._profiles
            scales = None
            if "INT8" in precision_flags and not qdq:
                if calibrator is None:
                    return self._fail("INT8 without Q/DQ layers needs a calibrator")
                dynamic = any(-1 in t.shape for t in network._inputs)
                if dynamic and config._calibration_profile is None:
                    return self._fail("Calibration optimization profile must be set if int8 calibration is used to "
                                      "set scales for a network with runtime dimensions")
                scales = calibrated_scales(calibrator, network)
                if scales is None:
                    return self._fail("calibration failed: get_batch returned no data")
            problem = self._device_problem(config, profile, device, strongly_typed, network, precision_flags)
            if problem:
                return self._fail(problem)
            info = machine().devices[device]
            if config._timing_cache is not None:
                config._timing_cache._capability = device_capability(device)
                config._timing_cache._builds += 1
            plan = {"trt_version": trt.__version__, "onnx": network._onnx, "flags": network._flags,
                    "builder_flags": sorted(config._flags), "profiles": {k: [list(s) for s in v] for k, v in
                                                                        profile._shapes.items()},
                    "inputs": [[t.name, list(t.shape), t.dtype.name] for t in network._inputs],
                    "outputs": [[t.name, list(t.shape), t.dtype.name] for t in network._outputs], "scales": scales,
                    "layer_precisions": precisions, "layer_output_types": output_types,
                    "device": {"name": info.name, "capability": device_capability(device),
                               "integrated": info.integrated, "platform": platform.machine()},
                    "dla_core": config._values.get("DLA_core") if self._on_dla(config) else None,
                    "layer_devices": layer_devices(network, config, self._on_dla(config)),
                    "device_memory": activation_bytes(network._onnx, profile),
                    "config": {k: str(v) for k, v in config._values.items() if k != "int8_calibrator"}}
            return IHostMemory(json.dumps(plan).encode())

        def _on_dla(self, config):
            return config._values.get("default_device_type") == trt.DeviceType.DLA

        def _device_problem(self, config, profile, device, strongly_typed, network, precision_flags):
            """DLA and hardware-compatibility rules ("Working with DLA", "Hardware Compatibility")."""
            level = config._values.get("hardware_compatibility_level")
            if level is not None and level.name != "NONE":
                if machine().devices[device].integrated:
                    return "hardware compatibility is not supported on this platform (JetPack)"
                if level.name == "AMPERE_PLUS" and machine().devices[device].compute_capability < (8, 0):
                    return "hardware compatibility AMPERE_PLUS needs an Ampere or later GPU"
            if not self._on_dla(config):
                return None
            core = config._values.get("DLA_core", -1)
            if not 0 <= core < dla_cores():
                return f"Cannot create DLA engine, {core} not available"
            if any(lo != hi for lo, _, hi in profile._shapes.values()):
                return "DLA needs static shapes (profile min = opt = max)"
            if strongly_typed and _numbers(trt.__version__)[0] == 10:
                return ("DLA (fake's rule): TensorRT 10 documents DLA builds weakly typed with BuilderFlag.FP16/INT8 "
                        "(strongly typed DLA networks are documented from 11.4.1 on)")
            dla_precision = network._precision in ("fp16", "int8") if strongly_typed else bool(
                precision_flags & {"FP16", "INT8"})
            if not dla_precision:
                return "DLA supports FP16 and INT8 only"
            fallback = [layer.name for layer in network._layers if not config.can_run_on_DLA(layer)]
            if fallback and "GPU_FALLBACK" not in config._flags:
                return f"DLA: layer {fallback[0]} cannot run on DLA and GPU fallback is not enabled"
            return None

        def _fail(self, message):
            self._record("error", message)
            return None

    @fake
    class Runtime:
        def __init__(self, logger):
            Surfaced.__init__(self)
            machine()
            self._record("init", id(logger))

        @property
        def num_DLA_cores(self):
            return dla_cores()

        def deserialize_cuda_engine(self, serialized_engine):
            """None, as TensorRT after logging an error, for a plan it cannot run here."""
            device = current_device()
            self._record("deserialize_cuda_engine", device)
            try:
                plan = json.loads(bytes(serialized_engine))
            except ValueError:
                return self._fail("Serialization assertion failed: magic tag does not match")
            version_compatible = "VERSION_COMPATIBLE" in plan["builder_flags"]
            if plan["trt_version"] != trt.__version__ and not (
                    version_compatible and _loads_version_compatible(plan["trt_version"], trt.__version__)):
                return self._fail(f"the engine plan file is not compatible with this version of TensorRT, "
                                  f"expecting library version {trt.__version__} got {plan['trt_version']}")
            if version_compatible and not self._values.get("engine_host_code_allowed"):
                return self._fail("version-compatible engine needs engine_host_code_allowed")
            problem = self._device_problem(plan, device)
            if problem:
                return self._fail(problem)
            dla_core = None
            if plan["dla_core"] is not None:
                dla_core = self._values.get("DLA_core", -1)
                if dla_core >= dla_cores():
                    return self._fail(f"DLA core {dla_core} is not available")
                if dla_core < 0:
                    self._record("engine built for DLA deserialized without runtime.DLA_core: runs on the GPU")
                    dla_core = None
            return ICudaEngine(plan, device, dla_core)

        def _device_problem(self, plan, device):
            built, info = plan["device"], machine().devices[device]
            if built["platform"] != platform.machine() or built["integrated"] != info.integrated:
                return "the engine was built for another platform"
            here = device_capability(device)
            level = plan["config"].get("hardware_compatibility_level", "")
            if built["capability"] != here and not ("AMPERE_PLUS" in level and info.compute_capability >= (8, 0)):
                return f"the engine was built for compute capability {built['capability']}, the device has {here}"
            return None

        def _fail(self, message):
            self._record("error", message)
            return None

    @fake
    class ICudaEngine:
        def __init__(self, plan, device, dla_core):
            Surfaced.__init__(self)
            self._plan, self._device, self._dla_core = plan, device, dla_core
            self._model = None
            self._io = {name: (shape, dtype) for name, shape, dtype in plan["inputs"] + plan["outputs"]}
            self._names = [name for name, _, _ in plan["inputs"] + plan["outputs"]]

        @property
        def num_io_tensors(self):
            return len(self._names)

        def get_tensor_name(self, index):
            return self._names[index]

        def _session(self):
            """An ONNX Runtime session of the graph in the precision the engine was built with (precision.py)."""
            import onnxruntime as ort

            if self._model is None:
                self._model = emulated_graph(self._plan)
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep the roundings
            options.log_severity_level = 3
            return ort.InferenceSession(self._model, options, providers=["CPUExecutionProvider"])

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self._plan["profiles"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return getattr(trt.DataType, self._io[name][1])

        def get_tensor_shape(self, name):
            return tuple(self._io[name][0])

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self._plan["profiles"][name]]

        @property
        def device_memory_size_v2(self):
            return self._plan["device_memory"]

        if "device_memory_size" in classes["ICudaEngine"]["members"]:  # 10.x; gone in 11
            @property
            def device_memory_size(self):
                return self._plan["device_memory"]

            def create_execution_context_without_device_memory(self):
                self._record("create_execution_context_without_device_memory")
                return IExecutionContext(self, user_managed=True)

        @property
        def num_layers(self):
            return len(engine_layers(self._plan))

        def create_execution_context(self, strategy=None):
            """STATIC (the default) allocates the activation memory now (None when that fails, as TensorRT);
            USER_MANAGED allocates none: `set_device_memory` must give it before an enqueue."""
            strategy = trt.ExecutionContextAllocationStrategy.STATIC if strategy is None else strategy
            self._record("create_execution_context", strategy.name)
            user_managed = strategy == trt.ExecutionContextAllocationStrategy.USER_MANAGED
            try:
                return IExecutionContext(self, user_managed=user_managed)
            except RuntimeError as exc:
                self._record("error", f"createExecutionContext: {exc}")
                return None

        def create_engine_inspector(self):
            return EngineInspector(self)

    def engine_layers(plan):
        """The engine's layers as the inspector names them: on DLA, each run of DLA layers is one
        `{ForeignNode[first...last]}` layer between `<input> to nvm` / `<output> from nvm` reformats."""
        devices = plan.get("layer_devices") or {}
        names, run = [], []
        for name, device in devices.items():
            if device == "DLA":
                run.append(name)
                continue
            if run:
                names += [f"{{ForeignNode[{run[0]}...{run[-1]}]}}", f"{run[-1]} from nvm"]
                run = []
            names.append(name)
        if run:
            names += [f"{{ForeignNode[{run[0]}...{run[-1]}]}}", f"{run[-1]} from nvm"]
        if plan.get("dla_core") is not None and names:
            names.insert(0, f"{plan['inputs'][0][0]} to nvm")
        return names

    @fake
    class EngineInspector:
        def __init__(self, engine):
            Surfaced.__init__(self)
            self._engine = engine

        def get_engine_information(self, format):
            names = engine_layers(self._engine._plan)
            if format == trt.LayerInformationFormat.JSON:
                return json.dumps({"Layers": names, "Bindings": list(self._engine._names)})
            return "\n".join(names)

        def get_layer_information(self, layer_index, format):
            name = engine_layers(self._engine._plan)[layer_index]
            return json.dumps(name) if format == trt.LayerInformationFormat.JSON else name

    @fake
    class IExecutionContext:
        """Not thread-safe, as TensorRT says: a second thread using it mid-inference is an error here."""

        def __init__(self, engine, user_managed=False):
            Surfaced.__init__(self)
            self._engine, self._shapes, self._addresses, self._session, self._user = engine, {}, {}, None, None
            self._enqueued_shapes = None  # the input shapes of the last enqueue that ran (not captured)
            self._owned = None  # the activation memory TensorRT allocated for a STATIC context
            self._memory = None  # (pointer, size) of the activation memory in use
            if not user_managed:
                self._owned = machine().allocate(engine._plan["device_memory"], engine._device)
                self._memory = (self._owned, engine._plan["device_memory"])

        def __del__(self):
            if getattr(self, "_owned", None) is not None and self._owned not in machine().freed:
                machine().release(self._owned)

        def set_device_memory(self, memory, size):
            """User-managed activation memory: at least `device_memory_size_v2` bytes, 256-byte aligned."""
            self._record("set_device_memory", int(memory), int(size))
            needed = self._engine._plan["device_memory"]
            if int(memory) % 256 or int(size) < needed:
                self._record("error", f"setDeviceMemory: Error Code 3: API Usage Error (memory {int(memory):#x} "
                                      f"of {int(size)} bytes: needs {needed} bytes, 256-byte aligned)")
                return
            self._memory = (int(memory), int(size))

        def _claim(self, what):
            thread = threading.get_ident()
            if self._user not in (None, thread):
                raise RuntimeError(f"fake tensorrt: IExecutionContext.{what} from a second thread while another "
                                   "thread is mid-inference (an execution context is not thread-safe)")
            self._user = thread

        def set_input_shape(self, name, shape):
            self._claim("set_input_shape")
            self._record("set_input_shape", name, tuple(shape))
            low, _, high = self._engine._plan["profiles"][name]
            if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)) or len(shape) != len(low):
                return False
            self._shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, memory):
            """False (with an API usage error logged), as TensorRT, for an unknown tensor, a null pointer or one
            that is not 256-byte aligned (NvInferRuntime.h: "The pointer must have at least 256-byte alignment")."""
            self._claim("set_tensor_address")
            self._record("set_tensor_address", name, memory)
            if name not in self._engine._io or not memory or int(memory) % 256:
                self._record("error", f"IExecutionContext::setTensorAddress: Error Code 3: API Usage Error "
                                      f"(tensor {name!r}, address {int(memory or 0):#x}: null, unknown or not "
                                      "256-byte aligned)")
                return False
            self._addresses[name] = int(memory)
            return True

        def get_tensor_shape(self, name):
            if name in self._shapes:
                return self._shapes[name]
            batch = next(iter(self._shapes.values()))[0]
            return (batch, *self._engine._io[name][0][1:])

        def execute_async_v3(self, stream_handle):
            """Run the engine's ONNX graph with ONNX Runtime on the fake device memory, or record it into the
            graph being captured on the stream (with the shapes and addresses set now, as a real capture
            bakes them in). A capture of the first enqueue after an input shape change fails, as TensorRT's
            does (it allocates and synchronizes then: TensorRT issue 2603)."""
            self._claim("execute_async_v3")
            self._record("execute_async_v3", stream_handle)
            try:
                if machine().current_device() != self._engine._device:
                    return self._fail("enqueue without the engine's CUDA context current")
                if set(self._addresses) != set(self._engine._names) or set(self._shapes) != set(
                        self._engine._plan["profiles"]):
                    return self._fail("enqueue with unset shapes or addresses")
                stream = machine().streams.get(stream_handle)
                capture = machine().capture_of(stream_handle)
                problem = self._memory_problem()
                if problem:
                    return self._fail(problem)
                if capture is not None and self._engine._dla_core is not None:
                    capture.invalidated = "a DLA engine's enqueue"
                    return self._fail("Cuda Runtime (operation not permitted when stream is capturing): a DLA engine "
                                      "cannot be captured into a CUDA graph (trtexec: CUDA graphs and DLA offloading "
                                      "are not simultaneously supported)")
                if capture is not None and self._shapes != self._enqueued_shapes:
                    capture.invalidated = "first enqueue after an input shape change"
                    return self._fail("Cuda Runtime (operation not permitted when stream is capturing): the first "
                                      "enqueue after setting input shapes was captured (enqueue once first)")
                if self._engine._plan.get("plugin_synchronizes") and stream is not None:
                    try:
                        stream.synchronize()  # a plugin that synchronizes its stream inside enqueue
                    except RuntimeError as exc:
                        return self._fail(f"Cuda Runtime ({exc})")
                shapes, addresses = dict(self._shapes), dict(self._addresses)
                if capture is not None:
                    machine().run_or_record(stream, lambda _: self._execute(shapes, addresses), "execute_async_v3")
                    return True
                self._enqueued_shapes, thread = shapes, threading.get_ident()

                def work(_):
                    self._run_and_release(shapes, addresses, thread)

                work.context = self
                machine().run_or_record(stream, work, "execute_async_v3")
                return True
            finally:
                if self._user == threading.get_ident() and not self._pending(stream_handle):
                    self._user = None

        def _pending(self, stream_handle):
            """Whether this thread's enqueue is still queued: the context stays in use until its work ran."""
            stream = machine().streams.get(stream_handle)
            return stream is not None and any(getattr(op, "context", None) is self for op in stream.queue)

        def _run_and_release(self, shapes, addresses, thread):
            try:
                self._execute(shapes, addresses)
            finally:
                if self._user == thread:
                    self._user = None

        def _memory_problem(self):
            """Activation memory must be set (user-managed contexts) and still allocated."""
            if self._memory is None:
                return "enqueue without device memory: a USER_MANAGED context needs set_device_memory first"
            pointer, size = self._memory
            live = [p for p in machine().memory if p <= pointer and p not in machine().freed
                    and pointer + size <= p + machine().memory[p].size]
            return None if live else f"enqueue with activation memory {pointer:#x} that is not allocated"

        def _execute(self, shapes, addresses):
            if self._session is None:
                self._session = self._engine._session()
            feeds = {name: self._read(name, shape, addresses) for name, shape in shapes.items()}
            names = [o.name for o in self._session.get_outputs()]
            for name, value in zip(names, self._session.run(None, feeds)):
                raw = value.astype(self._dtype(name)).reshape(-1).view(np.uint8)
                machine().memory[addresses[name]][: raw.size] = raw

        def _dtype(self, name):
            return nptype(getattr(trt.DataType, self._engine._io[name][1]))

        def _read(self, name, shape, addresses):
            dtype = np.dtype(self._dtype(name))
            raw = machine().memory[addresses[name]]
            return raw[: int(np.prod(shape)) * dtype.itemsize].view(dtype).reshape(shape)

        def _fail(self, message):
            self._record("error", message)
            return False

    def emulated_graph(plan) -> bytes:
        """The plan's ONNX graph rewritten to compute in the build's precisions (tests/fakes/precision.py)."""
        import onnx

        model = onnx.load(plan["onnx"])
        flags = set(plan["builder_flags"])
        fp32_graph = network_precision(model) == "fp32"
        fp16 = not is_strongly_typed_flags(plan["flags"]) and "FP16" in flags and fp32_graph
        tf32 = "TF32" in flags and fp32_graph
        if fp16 or tf32 or plan["scales"] or plan["layer_precisions"]:
            model = apply_build_precision(model, fp16=fp16, tf32=tf32, scales=cache_scales(plan["scales"] or {}),
                                          constraints=plan["layer_precisions"])
        return model.SerializeToString()

    def is_strongly_typed_flags(flags) -> bool:
        return hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and bool(
            flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    for name in ALGORITHMS:
        if name in classes:
            fake(type(name, (), {"__init__": lambda self: Surfaced.__init__(self)}))

    def nptype(dtype):
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32,
                "INT64": np.int64}[dtype.name]

    functions = {"nptype": nptype}
    for name in surface.get("functions", {}):
        setattr(trt, name, functions.get(name, _unimplemented(name)))
    return trt


def _unimplemented(name: str):
    def function(*args, **kwargs):
        raise NotImplementedError(f"the fake tensorrt does not implement {name}()")

    return function


def install(monkeypatch, version: str, gpu=None):
    module = make_fake_tensorrt(version, gpu)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
