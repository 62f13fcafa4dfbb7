"""tools/gpu_smoke/smoke.py against the fake pycuda, with numpy standing in for the CUDA kernel.

This checks the script's logic and its gates here (no GPU); the script itself is meant for a GPU.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.fakes import fake_pycuda

SCRIPT = Path(__file__).resolve().parents[1] / "tools" / "gpu_smoke" / "smoke.py"


@pytest.fixture
def smoke():
    spec = importlib.util.spec_from_file_location("gpu_smoke", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def numpy_kernel(smoke, rec, transform=lambda logits: logits, leak=None):
    """The kernel's arithmetic on the fake device memory; `leak` collects a device allocation per call."""
    def work(images, logits, batch):
        pixels = rec.memory[int(images.device)][: batch * 784 * 4].view(np.float32).reshape(batch, 1, 28, 28)
        result = transform(smoke.expected_logits(pixels))
        rec.memory[int(logits.device)][: result.nbytes] = result.reshape(-1).view(np.uint8)
        if leak is not None:
            leak.append(smoke.cuda.driver().mem_alloc(4096))

    def launch(stream, images, logits, batch):
        rec.launch(stream, lambda: work(images, logits, batch))  # runs, or is captured into a CUDA graph
    return launch


def test_the_smoke_loop_passes_with_a_correct_stand_in(monkeypatch, smoke):
    rec = fake_pycuda.install(monkeypatch)
    report = smoke.run(iterations=300, batch=8, launch=numpy_kernel(smoke, rec), warmup=20)
    assert report["passed"] and report["wrong_results"] == 0 and report["iterations"] == 300
    assert report["device_free_lost_bytes"] == 0 and report["device_freed_at_end_bytes"] > 0
    assert set(report["median_ms"]) == {"h2d", "compute", "d2h", "enqueue"}
    assert set(rec.memory) == rec.freed and rec.pinned_alive() == 0 and rec.context_depth == 0
    assert rec.retained == {0: 1}


def test_the_smoke_loop_replays_the_kernel_from_a_cuda_graph(monkeypatch, smoke):
    rec = fake_pycuda.install(monkeypatch)
    report = smoke.run(iterations=200, batch=8, launch=numpy_kernel(smoke, rec), warmup=10, cuda_graph=True)
    assert report["passed"] and report["wrong_results"] == 0
    assert report["cuda_graph"] == {"requested": True, "captured": [[8]], "fallback": None}
    assert sum(c[0] == "begin_capture" for c in rec.calls) == 1
    assert sum(c[0] == "graph_launch" for c in rec.calls) == 200 + 10 - 1, "every batch after the first replays"
    assert rec.executables == {} and set(rec.memory) == rec.freed and rec.context_depth == 0


def test_the_smoke_gates_catch_wrong_results_and_a_device_leak(monkeypatch, smoke):
    rec = fake_pycuda.install(monkeypatch)
    report = smoke.run(iterations=100, batch=8, launch=numpy_kernel(smoke, rec, transform=lambda x: x * 0), warmup=5)
    assert not report["passed"] and report["wrong_results"] == 100 + 5
    leaked = []
    report = smoke.run(iterations=400, batch=8, launch=numpy_kernel(smoke, rec, leak=leaked), warmup=5)
    assert not report["passed"] and report["device_free_lost_bytes"] >= 400 * 4096


def test_without_a_gpu_the_script_exits_2_with_one_line(monkeypatch, smoke, capsys):
    monkeypatch.setitem(sys.modules, "pycuda", None)
    assert smoke.main(["--iterations", "10"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpu smoke: could not run: TensorRTMissing: the TensorRT engine runtime needs pycuda")
    assert len(err.strip().splitlines()) == 1
