"""Checkpoints: round trip, sidecar, checksums, bare state dicts and refusal of code-carrying pickles."""

from __future__ import annotations

import os
import pickle

import pytest

torch = pytest.importorskip("torch")

from resnet_deploy import data
from resnet_deploy.checkpoint import load_checkpoint, meta_path, save_checkpoint
from resnet_deploy.errors import CheckpointError
from resnet_deploy.models import create_model


@pytest.fixture
def model():
    torch.manual_seed(0)
    return create_model("resnet18", width=0.125).eval()


def test_round_trip_gives_the_same_outputs(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model, {"accuracy": {"test": 0.5}})
    loaded, meta = load_checkpoint(path)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(model(x), loaded(x))
    assert meta["model"]["name"] == "resnet18" and meta["model"]["width"] == 0.125
    assert meta["accuracy"] == {"test": 0.5} and len(meta["class_names"]) == 10
    assert len(meta["state_dict_sha256"]) == 64
    assert meta["normalization"] == {"mean": data.MEAN, "std": data.STD} and meta["input_shape"] == [1, 28, 28]


def test_modified_checkpoint_fails_its_checksum(tmp_path, model):
    path = save_checkpoint(tmp_path / "m.pt", model)
    state = torch.load(path, weights_only=True)
    state["fc.bias"] += 1
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="sha256 does not match"):
        load_checkpoint(path)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-checkpoint",))


def test_pickle_carrying_code_is_refused_and_not_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "evil.pt"
    with path.open("wb") as handle:
        pickle.dump({"fc.weight": RunsCode()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="refused"):
        load_checkpoint(path, "resnet18")
    assert not (tmp_path / "pwned-by-checkpoint").exists()


def test_bare_state_dict_loads_with_a_model_name(tmp_path, model):
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="--model NAME"):
        load_checkpoint(path)
    loaded, meta = load_checkpoint(path, "resnet18", width=0.125)
    assert meta["source"] == "external state dict"
    assert torch.equal(loaded.fc.weight, model.fc.weight)


def test_wrong_model_is_a_clear_error(tmp_path, model):
    path = tmp_path / "bare.pt"
    torch.save(model.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit model resnet34"):
        load_checkpoint(path, "resnet34", width=0.125)


def test_not_a_checkpoint_and_bad_sidecar(tmp_path, model):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"definitely not torch")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk, "resnet18")
    path = save_checkpoint(tmp_path / "m.pt", model)
    meta_path(path).write_text("{not json")
    with pytest.raises(CheckpointError, match="m.json: checkpoint sidecar is not valid JSON"):
        load_checkpoint(path)
