"""A recording fake of the `tensorrt` module, generated from the real API surface of one version.

Every class, enum (with the real member values) and module function of that version's surface
exists in the fake and nothing else, so `hasattr` answers as the real module does. On fake objects
every attribute our code reads, sets or calls must exist in the surface (a property must be
settable to be set), so code that uses an API removed in TensorRT 11 fails here as it would for
real. Behaviour is recorded in `trt.calls` and follows TensorRT where our code depends on it:
precision flags are refused on strongly typed networks, a weakly typed Q/DQ graph needs the INT8
flag, a calibration cache with a foreign header is ignored (then calibration has no batches and
the build fails), a version-compatible engine needs `engine_host_code_allowed`. The fake "engine"
runs its ONNX graph with ONNX Runtime on the fake pycuda memory, so runner tests see real logits.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

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


def make_fake_tensorrt(version: str, device_memory: dict | None = None):
    """Return the fake module for TensorRT `version` ('10.3', '10.16' or '11.4')."""
    surface = load_surface(version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = surface["version"]
    trt.calls = []
    trt.device_memory = device_memory if device_memory is not None else {}
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

    for name, value in SEVERITY.items():
        setattr(trt.Logger, name, EnumMember("Severity", name, value))
    trt.calls.clear()

    @fake
    class ParserError:
        def __init__(self, node, message):
            Surfaced.__init__(self)
            self._node, self._message = node, message

        def node(self):
            return self._node

        def node_name(self):
            return ""

        def node_operator(self):
            return ""

        def code(self):
            return trt.ErrorCode.MODEL_DESERIALIZE_FAILED

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

    @fake
    class INetworkDefinition:
        def __init__(self, flags):
            Surfaced.__init__(self)
            self._flags = flags
            self._inputs, self._outputs, self._onnx, self._qdq = [], [], None, False

        def get_input(self, index):
            return self._inputs[index]

        def get_output(self, index):
            return self._outputs[index]

        @property
        def num_inputs(self):
            return len(self._inputs)

        @property
        def num_outputs(self):
            return len(self._outputs)

    onnx_dtypes = {1: trt.DataType.FLOAT, 10: trt.DataType.HALF, 3: trt.DataType.INT8, 6: trt.DataType.INT32}

    @fake
    class OnnxParser:
        def __init__(self, network, logger):
            Surfaced.__init__(self)
            self._network, self._errors = network, []

        def parse_from_file(self, model):
            import onnx

            self._record("parse_from_file", model)
            try:
                graph = onnx.load(model)
                onnx.checker.check_model(graph)
            except Exception as exc:
                self._errors.append(ParserError(-1, f"{type(exc).__name__}: {exc}"))
                return False

            def tensor(value):
                shape = tuple(d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim)
                return ITensor(value.name, shape, onnx_dtypes[value.type.tensor_type.elem_type])

            network = self._network
            network._inputs = [tensor(v) for v in graph.graph.input]
            network._outputs = [tensor(v) for v in graph.graph.output]
            network._onnx = model
            network._qdq = any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
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

    @fake
    class ITimingCache:
        def __init__(self, data: bytes):
            Surfaced.__init__(self)
            self._data = data

        def serialize(self):
            return IHostMemory(self._data + b"|timed")

    @fake
    class IBuilderConfig:
        def __init__(self):
            Surfaced.__init__(self)
            self._flags, self._profiles, self._timing_cache = set(), [], None

        def set_flag(self, flag):
            self._record("set_flag", flag.name)
            self._flags.add(flag.name)

        def set_memory_pool_limit(self, pool, pool_size):
            self._record("set_memory_pool_limit", pool.name, pool_size)

        def add_optimization_profile(self, profile):
            self._record("add_optimization_profile")
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            self._record("create_timing_cache", bytes(serialized_timing_cache))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache, ignore_mismatch):
            """A cache written by a build on another GPU is refused (marked b'|other-gpu' here)."""
            self._record("set_timing_cache", ignore_mismatch)
            if cache._data.endswith(b"|other-gpu") and not ignore_mismatch:
                return False
            self._timing_cache = cache
            return True

    def version_code():
        major, minor, patch = (int(p) for p in trt.__version__.split(".")[:3])
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
            self._record("init")

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
            self._record("build_serialized_network")
            strongly_typed = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED") and bool(
                network._flags & (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)))
            precision_flags = config._flags & {"FP16", "INT8", "BF16", "FP8", "INT4"}
            calibrator = config._values.get("int8_calibrator")
            if strongly_typed and (precision_flags or calibrator):
                return self._fail("precision flags and calibrators are not allowed on a strongly typed network")
            if network._qdq and not strongly_typed and "INT8" not in precision_flags:
                return self._fail("Q/DQ layers in a weakly typed network need BuilderFlag.INT8")
            scales = None
            if "INT8" in precision_flags and not network._qdq:
                if calibrator is None:
                    return self._fail("INT8 without Q/DQ layers needs a calibrator")
                scales = calibrated_scales(calibrator, network)
                if scales is None:
                    return self._fail("calibration failed: get_batch returned no data")
            if len(config._profiles) != 1:
                return self._fail(f"expected one optimization profile, got {len(config._profiles)}")
            (profile,) = config._profiles
            plan = {"onnx": network._onnx, "flags": network._flags, "builder_flags": sorted(config._flags),
                    "profiles": {k: [list(s) for s in v] for k, v in profile._shapes.items()},
                    "outputs": [[t.name, list(t.shape)] for t in network._outputs], "scales": scales,
                    "config": {k: str(v) for k, v in config._values.items() if k != "int8_calibrator"}}
            return IHostMemory(json.dumps(plan).encode())

        def _fail(self, message):
            self._record("error", message)
            return None

    @fake
    class Runtime:
        def __init__(self, logger):
            Surfaced.__init__(self)

        def deserialize_cuda_engine(self, serialized_engine):
            self._record("deserialize_cuda_engine")
            try:
                plan = json.loads(bytes(serialized_engine))
            except ValueError:
                return None
            if "VERSION_COMPATIBLE" in plan["builder_flags"] and not self._values.get("engine_host_code_allowed"):
                self._record("error", "version-compatible engine needs engine_host_code_allowed")
                return None
            return ICudaEngine(plan)

    @fake
    class ICudaEngine:
        def __init__(self, plan):
            Surfaced.__init__(self)
            self._plan = plan
            self._names = [*plan["profiles"], *(name for name, _ in plan["outputs"])]

        @property
        def num_io_tensors(self):
            return len(self._names)

        def get_tensor_name(self, index):
            return self._names[index]

        def get_tensor_mode(self, name):
            return trt.TensorIOMode.INPUT if name in self._plan["profiles"] else trt.TensorIOMode.OUTPUT

        def get_tensor_dtype(self, name):
            return trt.DataType.FLOAT

        def get_tensor_shape(self, name):
            if name in self._plan["profiles"]:
                return (-1, *self._plan["profiles"][name][0][1:])
            return tuple(dict(self._plan["outputs"])[name])

        def get_tensor_profile_shape(self, name, profile_index):
            return [tuple(s) for s in self._plan["profiles"][name]]

        def create_execution_context(self):
            self._record("create_execution_context")
            return IExecutionContext(self)

    @fake
    class IExecutionContext:
        def __init__(self, engine):
            Surfaced.__init__(self)
            self._engine, self._shapes, self._addresses, self._session = engine, {}, {}, None

        def set_input_shape(self, name, shape):
            self._record("set_input_shape", name, tuple(shape))
            low, _, high = self._engine._plan["profiles"][name]
            if not all(lo <= s <= hi for lo, s, hi in zip(low, shape, high)) or len(shape) != len(low):
                return False
            self._shapes[name] = tuple(shape)
            return True

        def set_tensor_address(self, name, memory):
            self._record("set_tensor_address", name, memory)
            self._addresses[name] = memory
            return True

        def get_tensor_shape(self, name):
            if name in self._shapes:
                return self._shapes[name]
            batch = next(iter(self._shapes.values()))[0]
            return (batch, *dict(self._engine._plan["outputs"])[name][1:])

        def execute_async_v3(self, stream_handle):
            """Run the engine's ONNX graph with ONNX Runtime on the fake device memory."""
            import onnxruntime as ort

            self._record("execute_async_v3", stream_handle)
            if set(self._addresses) != set(self._engine._names) or set(self._shapes) != set(self._engine._plan["profiles"]):
                return False
            if self._session is None:
                self._session = ort.InferenceSession(self._engine._plan["onnx"], providers=["CPUExecutionProvider"])
            feeds = {}
            for name, shape in self._shapes.items():
                raw = trt.device_memory[self._addresses[name]]
                feeds[name] = raw[: int(np.prod(shape)) * 4].view(np.float32).reshape(shape)
            for name, value in zip([o.name for o in self._session.get_outputs()], self._session.run(None, feeds)):
                raw = value.astype(np.float32).reshape(-1).view(np.uint8)
                trt.device_memory[self._addresses[name]][: raw.size] = raw
            return True

    for name in ALGORITHMS:
        if name in classes:
            fake(type(name, (), {"__init__": lambda self: Surfaced.__init__(self)}))

    def nptype(dtype):
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}[dtype.name]

    functions = {"nptype": nptype}
    for name in surface.get("functions", {}):
        setattr(trt, name, functions.get(name, _unimplemented(name)))
    return trt


def _unimplemented(name: str):
    def function(*args, **kwargs):
        raise NotImplementedError(f"the fake tensorrt does not implement {name}()")

    return function


def install(monkeypatch, version: str, device_memory: dict | None = None):
    module = make_fake_tensorrt(version, device_memory)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
