"""Checkpoints: a plain state dict (`.pt`, loaded with `weights_only=True`) plus a JSON sidecar.

The sidecar holds what a later stage needs without torch code: the model name and config,
normalization constants, class names, data hashes, accuracy and training settings.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path
from typing import Any

import torch

from resnet_deploy import data
from resnet_deploy.errors import CheckpointError
from resnet_deploy.fileio import atomic_write_bytes, atomic_write_json, sha256_bytes, sha256_file
from resnet_deploy.models import ResNet, create_model

MODEL_KWARGS = ("preact", "shortcut", "stem", "width", "in_channels", "num_classes")


def meta_path(checkpoint_path: str | Path) -> Path:
    return Path(checkpoint_path).with_suffix(".json")


def base_meta(model: ResNet) -> dict[str, Any]:
    """The sidecar fields every checkpoint carries, whatever produced it."""
    return {
        "model": dict(model.config),
        "normalization": {"mean": data.MEAN, "std": data.STD},
        "class_names": list(data.CLASS_NAMES),
        "input_shape": [model.config["in_channels"], 28, 28],
    }


def save_checkpoint(path: str | Path, model: ResNet, meta: dict[str, Any] | None = None,
                    extra_state: dict[str, Any] | None = None) -> Path:
    """Write the state dict (plus optional tensors-only `extra_state`) and its JSON sidecar."""
    buffer = io.BytesIO()
    payload = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if extra_state:
        payload = {"model": payload, **extra_state}
    torch.save(payload, buffer)
    blob = buffer.getvalue()
    full_meta = {**base_meta(model), **(meta or {}), "state_dict_sha256": sha256_bytes(blob)}
    atomic_write_bytes(path, blob)
    atomic_write_json(meta_path(path), full_meta)
    return Path(path)


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a state dict with `weights_only=True`; refuse pickles that carry code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: the file is not a plain state dict (it carries code or objects "
            f"that weights_only loading does not allow): {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: {exc}") from exc


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The JSON sidecar of a checkpoint, or None if it has none."""
    sidecar = meta_path(path)
    if not sidecar.is_file():
        return None
    try:
        return json.loads(sidecar.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{sidecar}: malformed JSON: {exc}") from exc


def load_checkpoint(path: str | Path, model_name: str | None = None, **model_kwargs) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns it in eval mode with its metadata.

    A bare state dict from elsewhere (no sidecar) loads when `model_name` (and, if they differ from
    the defaults, `model_kwargs`) say which model it is.
    """
    path = Path(path)
    state = load_state(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    meta = read_meta(path)
    if meta is not None:
        if meta.get("state_dict_sha256") and sha256_file(path) != meta["state_dict_sha256"]:
            raise CheckpointError(f"{path}: sha256 does not match its sidecar {meta_path(path).name}")
        config = meta["model"]
        model_name = model_name or config["name"]
        model_kwargs = {**{k: config[k] for k in MODEL_KWARGS if k in config}, **model_kwargs}
    elif model_name is None:
        raise CheckpointError(f"{path}: no sidecar {meta_path(path).name}; say which model it is with --model NAME")
    try:
        model = create_model(model_name, **model_kwargs)
    except KeyError as exc:
        raise CheckpointError(f"{path}: {exc.args[0]}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: does not fit model {model_name}: {str(exc).splitlines()[0]}") from exc
    model.eval()
    return model, meta if meta is not None else {**base_meta(model), "source": "external state dict"}
