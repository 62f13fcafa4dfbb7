"""Fakes of TensorRT and pycuda, as strict as the real libraries where our code depends on them."""

from __future__ import annotations


def install(monkeypatch, trt_version: str = "10.3", devices=None):
    """Install the fake pycuda (with `devices`) and the fake TensorRT `trt_version` on it: (recorder, trt)."""
    from tests.fakes import fake_pycuda, fake_tensorrt

    rec = fake_pycuda.install(monkeypatch, devices=devices)
    return rec, fake_tensorrt.install(monkeypatch, trt_version, gpu=rec)
