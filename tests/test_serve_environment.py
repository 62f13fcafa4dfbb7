"""serve.environment: the serve extra's checks and the variables the Triton server and its stubs inherit."""

from __future__ import annotations

import os
import sys

import numpy
import pytest

from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.serve import environment


def test_tensors_pass_inline_unless_the_user_chose(monkeypatch):
    monkeypatch.delenv(environment.NO_TENSOR_STORE, raising=False)
    environment.pass_tensors_inline()
    assert os.environ[environment.NO_TENSOR_STORE] == "1"
    monkeypatch.setenv(environment.NO_TENSOR_STORE, "")  # empty: the user asks for PyTriton's tensor store
    environment.pass_tensors_inline()
    assert os.environ[environment.NO_TENSOR_STORE] == ""


def test_python_library_goes_first_once(monkeypatch):
    first = environment.python_library_dir()
    if not first:
        pytest.skip("static Python build: no libpython directory")
    monkeypatch.setenv("LD_LIBRARY_PATH", os.pathsep.join(["/opt/a", first, "", "/opt/b"]))
    value = environment.put_python_library_first()
    assert value == os.pathsep.join([first, "/opt/a", "/opt/b"])
    assert os.environ["LD_LIBRARY_PATH"] == value


def test_missing_client_is_one_line_naming_the_install(monkeypatch):
    pytest.importorskip("tritonclient.http", reason="serve extra not installed")
    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # import of it raises ImportError
    with pytest.raises(ResnetDeployError, match=r"tritonclient\.grpc is not importable.*pip install") as info:
        environment.require_serve_extra(server=False)
    assert "\n" not in str(info.value)


def test_numpy_2_is_refused_for_the_server_only(monkeypatch):
    pytest.importorskip("pytriton.triton", reason="serve extra not installed")
    monkeypatch.setattr(numpy, "__version__", "2.1.0")
    with pytest.raises(ResnetDeployError, match="needs numpy<2, this environment has numpy 2.1.0"):
        environment.require_serve_extra()
    environment.require_serve_extra(server=False)  # the client works with numpy 2
