"""Fixtures for runner tests on the fakes: tiny graphs, the fake GPU (TensorRT 10.3 and 11.4) and an engine."""

from __future__ import annotations

import pytest

from resnet_deploy.trt.builder import build_engine
from resnet_deploy.trt.settings import EngineSettings
from tests import fakes
from tests.fakes.graphs import tiny_graphs


@pytest.fixture(scope="module")
def graphs(tmp_path_factory):
    return tiny_graphs(tmp_path_factory.mktemp("graphs"))


@pytest.fixture(params=["10.3", "11.4"])
def gpu(monkeypatch, request):
    return fakes.install(monkeypatch, request.param)


def build(graphs, tmp_path, graph="fp32", **settings):
    settings = {"precision": "fp32", "opt_batch": 8, "max_batch": 16, **settings}
    return build_engine(graphs[graph], EngineSettings(**settings), tmp_path, log=lambda _: None).engine_path


@pytest.fixture
def engine(gpu, graphs, tmp_path):
    return build(graphs, tmp_path)
