"""The TensorRT fakes against the real API: the stored surfaces always, NVIDIA's bindings when present.

Set RESNET_DEPLOY_TRT_ORACLE to one or more folders (separated by ':') made by
`tools/trt_oracle.sh VERSION DIR` to compare with the real `tensorrt_bindings` module of each version.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fakes.fake_tensorrt import VERSIONS, Surfaced, load_surface, make_fake_tensorrt

pytestmark = pytest.mark.runtime

USED_ENUMS = ("BuilderFlag", "NetworkDefinitionCreationFlag", "MemoryPoolType", "DeviceType", "TensorIOMode",
              "DataType", "HardwareCompatibilityLevel", "ErrorCode", "CalibrationAlgoType")


def fake_classes(trt) -> dict[str, type]:
    return {name: value for name, value in vars(trt).items()
            if isinstance(value, type) and issubclass(value, Surfaced)}


@pytest.mark.parametrize("version", list(VERSIONS))
def test_fake_enums_have_the_real_values(version):
    surface, trt = load_surface(version), make_fake_tensorrt(version)
    assert trt.__version__ == surface["version"]
    for enum, members in surface["enums"].items():
        assert {m: int(getattr(getattr(trt, enum), m)) for m in members} == members


@pytest.mark.parametrize("version", list(VERSIONS))
def test_fakes_implement_only_members_the_real_classes_have(version):
    surface, trt = load_surface(version), make_fake_tensorrt(version)
    for name, cls in fake_classes(trt).items():
        implemented = {attr for base in cls.__mro__[1:-2] for attr in vars(base) if not attr.startswith("_")}
        assert implemented <= set(surface["classes"][name]["members"]), (version, name)


@pytest.mark.parametrize("version", list(VERSIONS))
def test_fake_module_has_exactly_the_real_classes_enums_and_functions(version):
    """So `hasattr(trt, name)`, which the builder's feature detection relies on, answers as for real."""
    surface, trt = load_surface(version), make_fake_tensorrt(version)
    public = {name for name in vars(trt) if not name.startswith("_")} - {"calls", "device_memory"}
    assert public == set(surface["classes"]) | set(surface["enums"]) | set(surface["functions"])
    for name, cls in fake_classes(trt).items():
        public_members = {m for m in surface["classes"][name]["members"] if not m.startswith("_")}
        assert public_members <= set(cls._surface), (version, name)


def test_known_differences_between_versions():
    t10, t11 = make_fake_tensorrt("10.3"), make_fake_tensorrt("11.4")
    assert int(t10.BuilderFlag.INT8) == 1 and not hasattr(t11.BuilderFlag, "INT8")
    assert int(t10.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(t11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert not hasattr(t10.HardwareCompatibilityLevel, "SAME_COMPUTE_CAPABILITY")
    assert hasattr(t10, "IInt8EntropyCalibrator2") and not hasattr(t11, "IInt8EntropyCalibrator2")
    for version in ("10.3", "10.16"):  # layer precisions (the legacy INT8 fallback): weakly typed 10.x only
        trt = make_fake_tensorrt(version)
        flags = trt.BuilderFlag
        assert int(flags.OBEY_PRECISION_CONSTRAINTS) == 9 and int(flags.PREFER_PRECISION_CONSTRAINTS) == 10
        assert {"precision", "set_output_type"} <= set(trt.ILayer._surface)
    assert not {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS"} & set(t11.BuilderFlag.__members__)
    assert not {"precision", "set_output_type"} & set(t11.ILayer._surface)
    assert {"get_layer", "num_layers"} <= set(t10.INetworkDefinition._surface) & set(t11.INetworkDefinition._surface)


DUMP = """
import json, sys, inspect
import tensorrt_bindings as trt
enums = {name: {m: int(v) for m, v in getattr(trt, name).__members__.items()} for name in sys.argv[1].split(',')
         if hasattr(trt, name)}
classes = {name: sorted(n for n in dir(getattr(trt, name)) if not n.startswith('_')) for name in sys.argv[2].split(',')
           if hasattr(trt, name)}
print(json.dumps({"version": trt.__version__, "enums": enums, "classes": classes}))
"""


def oracle_dirs() -> list[Path]:
    value = os.environ.get("RESNET_DEPLOY_TRT_ORACLE", "")
    return [Path(p) for p in value.split(":") if p]


@pytest.mark.skipif(not oracle_dirs(), reason="RESNET_DEPLOY_TRT_ORACLE not set (see tools/trt_oracle.sh)")
@pytest.mark.parametrize("oracle", oracle_dirs(), ids=str)
def test_fakes_match_the_real_bindings(oracle):
    version = (oracle / "VERSION").read_text().strip()
    trt = make_fake_tensorrt(version)
    classes = fake_classes(trt)
    env = {**os.environ, "LD_LIBRARY_PATH": str(oracle / "lib"), "PYTHONPATH": str(oracle)}
    result = subprocess.run([sys.executable, "-c", DUMP, ",".join(USED_ENUMS), ",".join(classes)],
                            capture_output=True, text=True, env=env, check=True)
    real = json.loads(result.stdout)
    assert real["version"] == trt.__version__
    for enum in USED_ENUMS:
        fake_members = dict(getattr(trt, enum).__members__) if hasattr(trt, enum) else {}
        assert {m: int(v) for m, v in fake_members.items()} == real["enums"].get(enum, {}), enum
    assert set(real["classes"]) == set(classes)
    for name, cls in classes.items():
        surfaced = {m for m in cls._surface if not m.startswith("_")}
        assert surfaced == set(real["classes"][name]), (name, surfaced ^ set(real["classes"][name]))
        implemented = {attr for base in cls.__mro__[1:-2] for attr in vars(base) if not attr.startswith("_")}
        assert implemented <= set(real["classes"][name]), (name, implemented - set(real["classes"][name]))


REAL_MODULE = """
import dataclasses, json, sys
import tensorrt_bindings
sys.modules["tensorrt"] = tensorrt_bindings
from resnet_deploy.trt import compat
trt = tensorrt_bindings
logger = compat.trt_logger(trt)
severities = [logger.min_severity.name]
compat.set_verbose(True)
severities.append(logger.min_severity.name)
same = compat.trt_logger(trt) is logger
print(json.dumps({"capabilities": dataclasses.asdict(compat.capabilities(trt)), "severities": severities,
                  "same_logger": same}))
"""


@pytest.mark.skipif(not oracle_dirs(), reason="RESNET_DEPLOY_TRT_ORACLE not set (see tools/trt_oracle.sh)")
@pytest.mark.parametrize("oracle", oracle_dirs(), ids=str)
def test_capabilities_and_the_logger_on_the_real_bindings(oracle):
    """Feature detection reads the real module as it reads the fake; the real Logger takes our severity."""
    import dataclasses

    from resnet_deploy.trt.compat import capabilities

    version = (oracle / "VERSION").read_text().strip()
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "LD_LIBRARY_PATH": str(oracle / "lib"), "PYTHONPATH": f"{oracle}{os.pathsep}{root}"}
    env.pop("RESNET_DEPLOY_TRT_VERBOSE", None)
    result = subprocess.run([sys.executable, "-c", REAL_MODULE], capture_output=True, text=True, env=env, check=True)
    real = json.loads(result.stdout)
    fake = json.loads(json.dumps(dataclasses.asdict(capabilities(make_fake_tensorrt(version)))))
    assert real["capabilities"] == fake
    assert real["severities"] == ["WARNING", "VERBOSE"] and real["same_logger"]


PYCUDA_DUMP = """
import json, pycuda.driver as driver
names = {"module": sorted(n for n in dir(driver) if not n.startswith("_"))}
for name in ("Device", "Context", "Stream", "Event", "device_attribute"):
    names[name] = sorted(n for n in dir(getattr(driver, name)) if not n.startswith("_"))
try:
    driver.init()
except driver.Error as exc:
    names["init"] = f"{type(exc).__name__}: {exc}"
print(json.dumps(names))
"""


@pytest.mark.skipif(not os.environ.get("RESNET_DEPLOY_PYCUDA_ORACLE"),
                    reason="RESNET_DEPLOY_PYCUDA_ORACLE not set (see tools/pycuda_oracle.sh)")
def test_fake_pycuda_uses_only_names_the_real_pycuda_has():
    """The fake pycuda's module functions, classes and their members all exist in the real pycuda.driver."""
    from tests.fakes.fake_pycuda import make_fake_pycuda

    oracle = Path(os.environ["RESNET_DEPLOY_PYCUDA_ORACLE"]).resolve()
    env = {**os.environ, "LD_LIBRARY_PATH": str(oracle / "lib")}
    result = subprocess.run([str(oracle / "venv" / "bin" / "python"), "-c", PYCUDA_DUMP], capture_output=True,
                            text=True, env=env, check=True, cwd=oracle)
    real = json.loads(result.stdout)
    _, driver, _ = make_fake_pycuda()
    public = {name for name in vars(driver) if not name.startswith("_")}
    assert public <= set(real["module"]), public - set(real["module"])
    for name in ("Device", "Context", "Stream", "Event", "device_attribute"):
        members = {m for m in vars(getattr(driver, name)) if not m.startswith("_")}
        assert members <= set(real[name]), (name, members - set(real[name]))
    assert real["init"] == "RuntimeError: cuInit failed: no CUDA-capable device is detected"
    # Why CUDA graphs go through ctypes on the driver (resnet_deploy/trt/cudagraph.py): pycuda has no graph API.
    assert [n for n in real["Stream"] if "capture" in n] == []
    assert [n for n in real["module"] if "graph" in n.lower() and not n.startswith("graphics")] == []


def cuda_include() -> Path | None:
    """The CUDA toolkit's include folder (RESNET_DEPLOY_CUDA_INCLUDE, $CUDA_ROOT/include or /usr/local/cuda/include)."""
    candidates = [os.environ.get("RESNET_DEPLOY_CUDA_INCLUDE"),
                  os.environ.get("CUDA_ROOT") and os.path.join(os.environ["CUDA_ROOT"], "include"),
                  "/usr/local/cuda/include"]
    return next((Path(c) for c in candidates if c and (Path(c) / "cuda.h").is_file()), None)


needs_cuda_header = pytest.mark.skipif(cuda_include() is None or shutil.which("gcc") is None,
                                       reason="no cuda.h (CUDA toolkit) or no gcc here")


@needs_cuda_header
def test_cuda_graph_symbols_have_the_signatures_cuda_h_declares(tmp_path):
    """Each driver function called through ctypes, with our parameter types, compiles against the real cuda.h
    with incompatible pointer types as errors: names, argument count and types are the header's."""
    from resnet_deploy.trt.cudagraph import SIGNATURES

    lines = ["#include <cuda.h>"]
    for index, (symbol, parameters) in enumerate(SIGNATURES.items()):
        lines.append(f"CUresult (*check{index})({', '.join(parameters)}) = &{symbol};")
    source = tmp_path / "signatures.c"
    source.write_text("\n".join(lines) + "\n")
    result = subprocess.run(["gcc", "-fsyntax-only", "-Werror", "-Wincompatible-pointer-types", "-I",
                             str(cuda_include()), str(source)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@needs_cuda_header
def test_cuda_graph_symbols_are_what_the_public_names_resolve_to(tmp_path):
    """cuda.h maps cuStreamBeginCapture and cuGraphInstantiate to other symbols by macro; we call those symbols."""
    from resnet_deploy.trt.cudagraph import SIGNATURES

    public = ["cuStreamBeginCapture", "cuStreamEndCapture", "cuGraphInstantiate", "cuGraphLaunch",
              "cuGraphExecDestroy", "cuGraphDestroy", "cuGetErrorName"]
    source = tmp_path / "names.c"
    source.write_text("#include <cuda.h>\nRESOLVED " + " ".join(public) + "\n")
    result = subprocess.run(["gcc", "-E", "-P", "-I", str(cuda_include()), str(source)], capture_output=True,
                            text=True, check=True)
    resolved = next(line for line in result.stdout.splitlines() if line.startswith("RESOLVED")).split()[1:]
    assert resolved == list(SIGNATURES)
