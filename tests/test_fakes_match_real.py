"""The TensorRT fakes against the real API: the stored surfaces always, NVIDIA's bindings when present.

Set RESNET_DEPLOY_TRT_ORACLE to one or more folders (separated by ':') made by
`tools/trt_oracle.sh VERSION DIR` to compare with the real `tensorrt_bindings` module of each version.
"""

from __future__ import annotations

import json
import os
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
