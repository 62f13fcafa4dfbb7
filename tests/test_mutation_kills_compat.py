"""TensorRT version rules and feature detection pinned value by value, written to kill the mutants
tools/mutation.sh found surviving in resnet_deploy/trt/compat.py. A namespace stands in for `tensorrt`."""

from __future__ import annotations

import sys
import types

import pytest

from resnet_deploy.trt import compat
from resnet_deploy.trt.compat import (TensorRTMissing, capabilities, dla_supported, same_release,
                                      version_compatible_rule, version_compatible_runs, version_numbers)


def test_version_numbers():
    assert version_numbers("10.16.1.11") == (10, 16, 1)
    assert version_numbers("10.16.1.11", 4) == (10, 16, 1, 11)
    assert version_numbers("10.16.1", 1) == (10,)
    assert version_numbers("10.3.x.1") == (10, 3)
    assert version_numbers("rc.3") == ()
    assert version_numbers(8.6) == (8, 6)


@pytest.mark.parametrize("built, runtime, same", [
    ("10.3.0", "10.3.0.30", True), ("10.3.0.30", "10.3.0", True), ("10.3.0.30", "10.3.0.30", True),
    ("10.3.0.30", "10.3.0.26", False), ("10.3.0", "10.3.1", False), ("10.3", "10.3", False),
    ("10.3", "10.3.0", False), ("10.3.0", "10.3", False), ("8.6.1", "10.3.0", False),
])
def test_same_release(built, runtime, same):
    assert same_release(built, runtime) is same


@pytest.mark.parametrize("built, runtime, runs", [
    ("8.6.1", "8.6.1", True), ("8.6.1", "9.0.0", True), ("8.6.1", "10.3.0", True), ("8.6.1", "11.0.0", False),
    ("8.5.3", "8.6.1", False), ("8.5.3", "10.0.0", False), ("9.2.0", "10.1.0", True), ("9.2.0", "8.6.1", False),
    ("10.3.0", "10.2.0", False), ("10.3.0", "10.3.0", True), ("10.3.0", "11.0.0", True), ("10.3.0", "12.0.0", False),
    ("11.0.0", "11.1.0", True), ("12.0.0", "12.1.0", True), ("12.0.0", "13.0.0", False),
    ("10", "10.3.0", False), ("10.3.0", "11", False), ("x", "10.3.0", False), ("10.3", "10.4.0", True),
    ("10.3.0", "10.4", True),
])
def test_version_compatible_runs(built, runtime, runs):
    assert version_compatible_runs(built, runtime) is runs


def test_version_compatible_rule_in_words():
    assert version_compatible_rule("10.3.0") == ("a version-compatible engine runs on the TensorRT that built it or "
                                                 "a later release of major 10 or 11")
    assert version_compatible_rule("8.6.1").endswith("major 8 or 9 or 10")
    assert version_compatible_rule("11.2").endswith("major 11")
    too_old = "version compatibility needs TensorRT 8.6 or later at build and run time"
    assert version_compatible_rule("8.5.3") == too_old
    assert version_compatible_rule("7.2.3") == too_old
    assert version_compatible_rule("12.0.0") == too_old
    assert version_compatible_rule("abc") == too_old


@pytest.mark.parametrize("version, dla", [
    ("8.6.1", True), ("9.9.0", True), ("10", True), ("10.0.0", True), ("10.7.0", True), ("10.7.9.1", True), ("10.8.0", False),
    ("11.0.0", False), ("11.4.0", False), ("11.4.1", True), ("11.5.0", True), ("12.0", True),
])
def test_dla_supported(version, dla):
    assert dla_supported(version) is dla


def test_is_importable_and_missing_modules(monkeypatch):
    assert compat.is_importable("json") is True
    assert compat.is_importable("no_such_module_here") is False
    monkeypatch.setitem(sys.modules, "json_stub_none", None)
    assert compat.is_importable("json_stub_none") is False
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    monkeypatch.setitem(sys.modules, "pycuda", None)
    assert compat.missing_modules() == ["pycuda"]


def test_require_names_what_is_missing_and_how_to_get_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    monkeypatch.setitem(sys.modules, "pycuda", None)
    with pytest.raises(TensorRTMissing) as error:
        compat.require("build")
    assert str(error.value) == ("build needs tensorrt and pycuda, not installed here: tensorrt: "
                                + compat.INSTALL["tensorrt"] + "; pycuda: " + compat.INSTALL["pycuda"])
    with pytest.raises(TensorRTMissing, match=r"^x needs pycuda, not installed here: pycuda: `pip install pycuda`"):
        compat.require("x", ("pycuda",))
    with pytest.raises(TensorRTMissing, match=r"^this command needs tensorrt, "):
        compat.import_tensorrt()
    with pytest.raises(TensorRTMissing, match=r"^this command needs pycuda, "):
        compat.import_cuda_driver()
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "10.3.0"
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    compat.require("build", ("tensorrt",))
    assert compat.import_tensorrt() is sys.modules["tensorrt"]


def test_import_cuda_driver_returns_pycuda_driver(monkeypatch):
    package, driver = types.ModuleType("pycuda"), types.ModuleType("pycuda.driver")
    package.driver = driver
    monkeypatch.setitem(sys.modules, "pycuda", package)
    monkeypatch.setitem(sys.modules, "pycuda.driver", driver)
    assert compat.import_cuda_driver() is driver


def fake_trt(*, strongly_typed=True, explicit_batch=False, flags=("INT8", "FP16", "TF32"),
             calibrators=("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"), profile=True,
             levels=("NONE", "AMPERE_PLUS")):
    ns = types.SimpleNamespace
    creation = ns(**{name: 1 for name, on in (("STRONGLY_TYPED", strongly_typed), ("EXPLICIT_BATCH", explicit_batch))
                     if on})
    trt = ns(__version__="10.3.0.30", NetworkDefinitionCreationFlag=creation, BuilderFlag=ns(**dict.fromkeys(flags, 1)),
             IBuilderConfig=ns(**({"set_calibration_profile": 1} if profile else {})),
             **dict.fromkeys(calibrators, object))
    if levels is not None:
        trt.HardwareCompatibilityLevel = ns(**dict.fromkeys(levels, 1))
    return trt


def test_capabilities_by_feature():
    caps = capabilities(fake_trt())
    assert caps == compat.Capabilities(version="10.3.0.30", strongly_typed=True, explicit_batch_flag=False,
                                       precision_flags=True,
                                       calibrators=("IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator"),
                                       calibration_profile=True, hardware_levels=("none", "ampere_plus"),
                                       tf32_flag=True)
    assert caps.legacy_calibrator is True
    old = capabilities(fake_trt(strongly_typed=False, explicit_batch=True, flags=("INT8",), calibrators=(),
                                profile=False, levels=None))
    assert (old.strongly_typed, old.explicit_batch_flag, old.precision_flags, old.calibrators,
            old.calibration_profile, old.hardware_levels, old.tf32_flag) == (False, True, False, (), False, (), False)
    assert old.legacy_calibrator is False
    assert capabilities(fake_trt(flags=("FP16",))).precision_flags is False
    assert capabilities(fake_trt(calibrators=())).legacy_calibrator is False
    assert capabilities(fake_trt(levels=("SAME_COMPUTE_CAPABILITY",))).hardware_levels == ("same_compute_capability",)


class Logger:
    WARNING, VERBOSE = "warning", "verbose"

    def __init__(self, severity):
        self.min_severity = severity


def test_one_logger_per_tensorrt_module_and_verbosity(monkeypatch):
    monkeypatch.setattr(compat, "_logger", None)
    monkeypatch.setattr(compat, "_verbose", False)
    trt = types.SimpleNamespace(Logger=Logger)
    logger = compat.trt_logger(trt)
    assert logger.min_severity == "warning" and compat.trt_logger(trt) is logger
    compat.set_verbose(True)
    assert logger.min_severity == "verbose" and compat._verbose is True
    other = types.SimpleNamespace(Logger=Logger)
    assert compat.trt_logger(other) is not logger and compat.trt_logger(other).min_severity == "verbose"
    compat.set_verbose(False)
    assert compat.trt_logger(other).min_severity == "warning"
    monkeypatch.setattr(compat, "_logger", None)
    compat.set_verbose(True)
    assert compat._logger is None
