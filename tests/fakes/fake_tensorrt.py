"""A recording fake of the `tensorrt` module, generated from the real API surface of one version.

Enums carry the real member values; every attribute our code reads, sets or calls on a fake object
must exist in that version's surface (a property must be settable to be set), so code that uses
an API removed in TensorRT 11 fails here as it would on the real module. Behaviour is recorded,
and the fake "engine" runs its ONNX graph with ONNX Runtime on the fake pycuda memory, so a
runner test sees real logits.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np

SURFACES = Path(__file__).resolve().parents[2].parent / "shared" / "tensorrt-api"
VERSIONS = {"10.3": "10.3.0", "10.16": "10.16.1.11", "11.4": "11.4.0.106"}


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
            self._values = {**object.__getattribute__(self, "_values"), name: value}
            return
        object.__setattr__(self, name, value)

    def _record(self, *call):
        self._trt.calls.append((type(self).__name__, *call))


def make_fake_tensorrt(version: str, device_memory: dict | None = None):
    """Return (module, recorder) for TensorRT `version` ('10.3', '10.16' or '11.4')."""
    surface = load_surface(version)
    trt = types.ModuleType("tensorrt")
    trt.__version__ = surface["version"]
    trt.calls = []
    trt.device_memory = device_memory if device_memory is not None else {}
    for name, members in surface["enums"].items():
        setattr(trt, name, make_enum(name, members))
    classes = surface["classes"]

    def fake(name: str, base: type = Surfaced):
        def decorate(cls):
            members = classes[name]["members"]
            built = type(name, (cls,), {"_surface": members, "_trt_version": surface["version"], "_trt": trt})
            setattr(trt, name, built)
            return built
        return decorate

    @fake("Logger")
    class Logger(Surfaced):
        def __init__(self, min_severity=None):
            self._values = {}
    trt.Logger.WARNING = trt.ILogger.Severity.WARNING if hasattr(trt, "ILogger") and hasattr(trt.ILogger, "Severity") else EnumMember("Severity", "WARNING", 2)

    @fake("ITensor")
    class ITensor(Surfaced):
        def __init__(self, name, shape):
            self._values = {}
            object.__setattr__(self, "_name", name)
            object.__setattr__(self, "_shape", tuple(shape))

        @property
        def name(self):
            return self._name

        @property
        def shape(self):
            return self._shape

    @fake("INetworkDefinition")
    class INetworkDefinition(Surfaced):
        def __init__(self, flags):
            self._values = {}
            self._flags = flags
            self._inputs, self._outputs, self._onnx = [], [], None

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

    @fake("OnnxParser")
    class OnnxParser(Surfaced):
        def __init__(self, network, logger):
            self._values = {}
            self._network, self._errors = network, []

        def parse_from_file(self, path):
            import onnx

            self._record("parse_from_file", path)
            try:
                model = onnx.load(path)
                onnx.checker.check_model(model)
            except Exception as exc:
                self._errors.append(f"In node -1: {type(exc).__name__}: {exc}")
                return False

            def dims(value):
                return tuple(d.dim_value if d.dim_value else -1 for d in value.type.tensor_type.shape.dim)

            self._network._inputs = [ITensor(v.name, dims(v)) for v in model.graph.input]
            self._network._outputs = [ITensor(v.name, dims(v)) for v in model.graph.output]
            self._network._onnx = path
            return True

        @property
        def num_errors(self):
            return len(self._errors)

        def get_error(self, index):
            return self._errors[index]

    @fake("IOptimizationProfile")
    class IOptimizationProfile(Surfaced):
        def __init__(self):
            self._values = {}
            self._shapes = {}

        def set_shape(self, input, min, opt, max):
            self._record("set_shape", input, tuple(min), tuple(opt), tuple(max))
            self._shapes[input] = (tuple(min), tuple(opt), tuple(max))

    @fake("IHostMemory")
    class IHostMemory(Surfaced):
        def __init__(self, data: bytes):
            self._values = {}
            self._data = data

        def __bytes__(self):
            return self._data

        @property
        def nbytes(self):
            return len(self._data)

    @fake("ITimingCache")
    class ITimingCache(Surfaced):
        def __init__(self, data: bytes):
            self._values = {}
            self._data = data

        def serialize(self):
            return IHostMemory(self._data + b"|timed")

    @fake("IBuilderConfig")
    class IBuilderConfig(Surfaced):
        def __init__(self):
            self._values = {}
            self._flags, self._profiles, self._timing_cache = set(), [], None

        def set_flag(self, flag):
            self._record("set_flag", flag.name)
            self._flags.add(flag.name)

        def set_memory_pool_limit(self, pool, size):
            self._record("set_memory_pool_limit", pool.name, size)

        def add_optimization_profile(self, profile):
            self._record("add_optimization_profile")
            self._profiles.append(profile)
            return len(self._profiles) - 1

        def create_timing_cache(self, serialized_timing_cache):
            self._record("create_timing_cache", bytes(serialized_timing_cache))
            return ITimingCache(bytes(serialized_timing_cache))

        def set_timing_cache(self, cache, ignore_mismatch):
            self._record("set_timing_cache", ignore_mismatch)
            self._timing_cache = cache
            return True

    @fake("Builder")
    class Builder(Surfaced):
        def __init__(self, logger):
            self._values = {}
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
            self._record("build_serialized_network")
            calibrator = config._values.get("int8_calibrator")
            (profile,) = config._profiles
            plan = {"onnx": network._onnx, "flags": network._flags, "builder_flags": sorted(config._flags),
                    "profiles": {k: [list(s) for s in v] for k, v in profile._shapes.items()},
                    "outputs": [[t.name, list(t.shape)] for t in network._outputs],
                    "calibration_cache": calibrator.read_calibration_cache().decode() if calibrator else None}
            return IHostMemory(json.dumps(plan).encode())

    @fake("Runtime")
    class Runtime(Surfaced):
        def __init__(self, logger):
            self._values = {}

        def deserialize_cuda_engine(self, serialized_engine):
            self._record("deserialize_cuda_engine")
            try:
                return ICudaEngine(json.loads(bytes(serialized_engine)))
            except ValueError:
                return None

    @fake("ICudaEngine")
    class ICudaEngine(Surfaced):
        def __init__(self, plan):
            self._values = {}
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

    @fake("IExecutionContext")
    class IExecutionContext(Surfaced):
        def __init__(self, engine):
            self._values = {}
            self._engine, self._shapes, self._addresses, self._session = engine, {}, {}, None

        def set_input_shape(self, name, shape):
            self._record("set_input_shape", name, tuple(shape))
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
            trt.device_memory_calls = getattr(trt, "device_memory_calls", 0) + 1
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

    if "IInt8EntropyCalibrator2" in classes:
        @fake("IInt8EntropyCalibrator2")
        class IInt8EntropyCalibrator2:
            def __init__(self):
                pass

    def nptype(dtype):
        return {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32}[dtype.name]

    trt.nptype = nptype
    return trt


def install(monkeypatch, version: str, device_memory: dict | None = None):
    module = make_fake_tensorrt(version, device_memory)
    monkeypatch.setitem(sys.modules, "tensorrt", module)
    return module
