"""Fuzzing every parser of a file a user can hand in: IDX headers, calibration caches, checkpoint and
engine sidecars, stage records, parity and latency baselines. Zero crashes: each input is accepted,
or refused with `ResnetDeployError` (exit 2 through the CLI), never another exception."""

from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import pytest

pytest.importorskip("torch")

from hypothesis import HealthCheck, given, settings, strategies as st

from resnet_deploy import bench, checkpoint, data, parity, stages
from resnet_deploy.trt import sidecar
from resnet_deploy.cli import run
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.quantize.cache import read_calibration_cache
from resnet_deploy.train import resume_config

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
FUZZ_CLI = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

scalars = st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True) | st.text(max_size=12)
json_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


def shaped(keys: dict) -> st.SearchStrategy:
    """Objects with (some of) the keys a parser looks for, holding well- or ill-typed values."""
    return st.fixed_dictionaries({}, optional={key: strategy | json_values for key, strategy in keys.items()})


def file_contents(shape: st.SearchStrategy) -> st.SearchStrategy:
    """What a user may hand in: JSON of the expected shape, any JSON, or any bytes."""
    return shape | json_values | st.binary(max_size=40)


def write(path: Path, content: bytes | object) -> Path:
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    return path


def accepted_or_refused(call) -> object:
    try:
        return call()
    except ResnetDeployError:
        return None


# ---- IDX --------------------------------------------------------------------------------------------------

idx_headers = st.builds(lambda zero, code, dims, body: (struct.pack(">HBB", zero, code, len(dims))
                                                        + b"".join(struct.pack(">I", d) for d in dims) + body),
                        st.sampled_from([0, 0, 1]), st.sampled_from([0x08, 0x08, 0x09, 0x0D]),
                        st.lists(st.sampled_from([0, 1, 2, 3, 28, 2**31, 2**32 - 1]), max_size=4),
                        st.binary(max_size=64))


@FUZZ
@given(content=idx_headers | st.binary(max_size=80), ndim=st.sampled_from([1, 3]), gz=st.booleans())
def test_idx_files(tmp_path, content, ndim, gz):
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(content) if gz else content)
    array = accepted_or_refused(lambda: data.read_idx(path, ndim))
    assert array is None or array.ndim == ndim


# ---- Calibration caches -------------------------------------------------------------------------------------

cache_lines = st.one_of(
    st.builds(lambda code, algo: f"TRT-{code}-{algo}", st.integers(0, 10**7), st.sampled_from(["EntropyCalibration2", "x"])),
    st.builds(lambda name, bits: f"{name}: {bits:08x}", st.text(max_size=10), st.integers(0, 2**32 - 1)),
    st.text(max_size=20))


@FUZZ
@given(lines=st.lists(cache_lines, max_size=6), raw=st.binary(max_size=40), use_raw=st.booleans())
def test_calibration_caches(tmp_path, lines, raw, use_raw):
    path = write(tmp_path / "c.cache", raw if use_raw else "\n".join(lines).encode("utf-8", "surrogatepass"))
    parsed = accepted_or_refused(lambda: read_calibration_cache(path))
    if parsed is not None:
        header, scales = parsed
        assert isinstance(header.version_code, int) and all(s > 0 for s in scales.values())


# ---- Checkpoint sidecars, and the training settings `--resume` reads from them ------------------------------

model_configs = shaped({"name": st.sampled_from(["resnet18", "resnet19"]), "width": st.floats(-1, 2),
                        "in_channels": st.integers(0, 3), "num_classes": st.integers(0, 1000),
                        "stem": st.sampled_from(["small", "tiny"]), "layers": st.lists(st.integers(0, 3))})
checkpoint_sidecars = shaped({"model": model_configs, "state_dict_sha256": st.text(max_size=64),
                              "training": shaped({"lr": st.floats(), "epochs": st.integers(-1, 3),
                                                  "schedule": st.sampled_from(["onecycle", "step"]),
                                                  "width": st.floats(-1, 1)}),
                              "accuracy": st.dictionaries(st.text(max_size=4), st.floats())})


@FUZZ
@given(content=file_contents(checkpoint_sidecars))
def test_checkpoint_sidecars(tmp_path, content):
    write(tmp_path / "last.json", content)
    meta = accepted_or_refused(lambda: checkpoint.read_meta(tmp_path / "last.pt"))
    assert meta is None or isinstance(meta["model"]["name"], str)
    config = accepted_or_refused(lambda: resume_config(tmp_path))
    assert config is None or config.epochs >= 1


# ---- Engine sidecars ------------------------------------------------------------------------------------------

engine_sidecars = shaped({"tensorrt_version": st.sampled_from(["10.3.0", "10.3", "11.4.0.1", "x"]) | st.integers(),
                          "compute_capability": st.sampled_from(["8.7", "8.6", "9"]) | st.floats(),
                          "precision": st.sampled_from(["fp32", "fp16", "int8", "int4"]),
                          "version_compatible": st.booleans(), "hardware_compatibility": st.sampled_from(
                              ["none", "ampere_plus"]), "gpu_name": st.text(max_size=8)})


@FUZZ
@given(content=file_contents(engine_sidecars))
def test_engine_sidecars(tmp_path, content):
    write(tmp_path / "m.json", content)
    engine = write(tmp_path / "m.engine", b"plan")
    found = accepted_or_refused(lambda: sidecar.read_sidecar(engine))
    if found is not None:
        accepted_or_refused(lambda: sidecar.check_compatible(found, "10.3.0", "8.7", "Orin", engine))
    precision = accepted_or_refused(lambda: parity.precision_of_artifact(engine))
    assert precision in (None, "fp32", "fp16", "int8")


# ---- Stage records --------------------------------------------------------------------------------------------

stage_records = shaped({"stage": st.text(max_size=5), "inputs": st.dictionaries(st.text(max_size=3), st.text(max_size=3)),
                        "settings": json_values, "outputs": st.dictionaries(st.text(max_size=3), scalars)})


@FUZZ
@given(content=file_contents(stage_records))
def test_stage_records(tmp_path, content):
    output = write(tmp_path / "out.bin", b"artifact")
    write(stages.stage_record_path(output), content)
    assert stages.is_current([output], {"source": output}, {"n": 1}) in (True, False)


# ---- Baselines --------------------------------------------------------------------------------------------------

parity_baselines = shaped({"top1": st.dictionaries(st.sampled_from(["a.onnx", "b"]), st.floats()),
                           "count": st.integers()})
latency_tables = st.dictionaries(st.sampled_from(["1", "8"]), st.dictionaries(st.sampled_from(["a", "b"]), st.floats()))
latency_baselines = shaped({"reference": st.sampled_from(["a", "b"]), "fingerprint": json_values,
                            "speedup_vs_reference": latency_tables, "median_ms": latency_tables})


def parity_report() -> dict:
    entry = {"label": "a.onnx", "top1": 0.9, "gates": []}
    return {"artifacts": [entry], "thresholds": {}, "reference": {"top1": 0.9}, "dataset": {"count": 10}}


def latency_report() -> dict:
    entry = {"speedup_vs_reference": 1.0, "latency_ms": {"median": 1.0}}
    return {"reference": "a", "fingerprint": bench.fingerprint(), "results": {"1": {"a": entry, "b": dict(entry)}}}


@FUZZ
@given(content=file_contents(parity_baselines))
def test_parity_baselines(tmp_path, content):
    path = write(tmp_path / "p.json", content)
    recorded = accepted_or_refused(lambda: parity.read_baseline(path))
    if recorded is not None:
        parity.apply_baseline(parity_report(), recorded, 0.1, path)


@FUZZ
@given(content=file_contents(latency_baselines))
def test_latency_baselines(tmp_path, content):
    path = write(tmp_path / "b.json", content)
    accepted_or_refused(lambda: bench.apply_baseline_gate(latency_report(), path, 10.0))


# ---- The same parsers through the CLI: exit 0 or 2 --------------------------------------------------------------

@FUZZ_CLI
@given(cache=st.lists(cache_lines, max_size=4), engine_sidecar=file_contents(engine_sidecars))
def test_inspect_through_the_cli(tmp_path, capsys, cache, engine_sidecar):
    write(tmp_path / "c.cache", "\n".join(cache).encode("utf-8", "surrogatepass"))
    write(tmp_path / "m.engine", b"plan")
    write(tmp_path / "m.json", engine_sidecar)
    for path in ("c.cache", "m.engine"):
        assert run(["inspect", str(tmp_path / path)]) in (0, 2)
        assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize("depth", [10, 100_000], ids=["shallow", "deep"])
def test_deeply_nested_json_is_refused_not_a_crash(tmp_path, depth):
    path = write(tmp_path / "p.json", ("[" * depth + "]" * depth).encode())
    with pytest.raises(ResnetDeployError):
        parity.read_baseline(path)
