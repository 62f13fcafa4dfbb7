"""Checkpoints: a plain state dict (`.pt`, loaded with `weights_only=True`) plus a JSON sidecar.

The sidecar holds what a later stage needs without torch code: the model name and config,
normalization constants, class names, data hashes, accuracy and training settings.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import torch

from resnet_deploy import data, schema, train_config
from resnet_deploy.errors import CheckpointError, EnvironmentFailure
from resnet_deploy.fileio import (
    atomic_write_bytes,
    atomic_write_json,
    read_json,
    require_file,
    sha256_bytes,
    sha256_file,
)
from resnet_deploy.models import ResNet, create_model
from resnet_deploy.onnx_io import IMAGE_SHAPE

MODEL_KWARGS = ("preact", "shortcut", "stem", "width", "in_channels", "num_classes")
# What later stages read from a sidecar (resnet_deploy.schema); other fields are kept as written.
SIDECAR_SCHEMA = {
    "model": {
        "name": str,
        "preact?": bool,
        "shortcut?": str,
        "stem?": str,
        "width?": float,
        "in_channels?": int,
        "num_classes?": int,
        "block?": str,
        "layers?": [int],
    },
    "state_dict_sha256?": str,
    "normalization?": {"mean": float, "std": float},
    "class_names?": [str],
    "input_shape?": [int],
    "training?": train_config.SCHEMA,
    "accuracy?": schema.Map(float),
    "history?": [dict],
}


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


def save_checkpoint(
    path: str | Path, model: ResNet, meta: dict[str, Any] | None = None, extra_state: dict[str, Any] | None = None
) -> Path:
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


def _unpickler_reason(exc: Exception) -> str:
    """What torch's loader stopped at, without torch's advice to load the file unsafely."""
    advice = ("weights_only", "Weights only", "torch.load", "Please file an issue")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    useful = [line for line in lines if not any(word in line for word in advice)]
    return (useful[0] if useful else type(exc).__name__)[:200]


def load_state(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint with torch's restricted loader (tensors and plain containers only).

    A pickle that carries code or other objects is refused without running it, and the message
    never suggests the unsafe `weights_only=False`.
    """
    path = require_file(path, "checkpoint", CheckpointError)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(exc)
        if "global" in reason.lower():
            raise CheckpointError(
                f"{path}: refused: it holds code or objects, not only tensors ({reason}); it was not loaded"
            ) from exc
        raise CheckpointError(f"{path}: not a PyTorch checkpoint or corrupt ({reason})") from exc
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "read", path) from exc
    except (RuntimeError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CheckpointError(f"{path}: not a PyTorch checkpoint or corrupt ({_unpickler_reason(exc)})") from exc


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The JSON sidecar of a checkpoint (checked against `SIDECAR_SCHEMA`), or None if it has none."""
    sidecar = meta_path(path)
    if not sidecar.exists():
        return None
    meta = read_json(sidecar, "checkpoint sidecar", CheckpointError)
    return schema.check(meta, SIDECAR_SCHEMA, sidecar, "checkpoint sidecar", CheckpointError)


def _state_dict(state: Any, path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors: a plain state dict, or the `model` entry of a `last.pt` with resume state."""
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not (
        isinstance(state, dict)
        and state
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items())
    ):
        raise CheckpointError(
            f"{path}: not a model state dict (expected names mapped to tensors, found {type(state).__name__})"
        )
    return state


def _check_io(config: dict[str, Any], path: Path) -> None:
    found = (config.get("in_channels", 1), config.get("num_classes", 10))
    expected = (IMAGE_SHAPE[0], len(data.CLASS_NAMES))
    if found != expected:
        raise CheckpointError(
            f"{path}: not a Fashion-MNIST classifier: expected {expected[0]} input channel and "
            f"{expected[1]} classes, found {found[0]} and {found[1]}"
        )


def misfit(model: ResNet, state: dict[str, torch.Tensor]) -> str:
    """What in `state` does not fit `model`: the first tensor of another shape (with the width it
    implies), else the tensors missing from or unknown to the model (another depth)."""
    expected = model.state_dict()
    for name, tensor in expected.items():
        found = state.get(name)
        if found is not None and tuple(found.shape) != tuple(tensor.shape):
            text = f"{name} is {list(found.shape)} in the file, {list(tensor.shape)} in the model"
            width = model.config.get("width")
            if isinstance(width, (int, float)) and width and found.dim() and tensor.shape[0]:
                text += f" (width {width * found.shape[0] / tensor.shape[0]:g} in the file vs {width:g})"
            return text
    missing = [name for name in expected if name not in state]
    unknown = [name for name in state if name not in expected]
    parts = [
        f"{len(names)} tensors {what}, first {names[0]}"
        for names, what in ((missing, "missing from the file"), (unknown, "in the file unknown to the model"))
        if names
    ]
    return "; ".join(parts) + " (another depth or block?)" if parts else "the tensors do not load"


def load_checkpoint(path: str | Path, model_name: str | None = None, **model_kwargs) -> tuple[ResNet, dict[str, Any]]:
    """Rebuild the model from a checkpoint; returns it in eval mode with its metadata.

    A bare state dict from elsewhere (no sidecar) loads when `model_name` (and, if they differ from
    the defaults, `model_kwargs`) say which model it is; a keyword given as None is not given.
    """
    model_kwargs = {key: value for key, value in model_kwargs.items() if value is not None}
    path = require_file(path, "checkpoint", CheckpointError)
    meta = read_meta(path)
    if meta is None and model_name is None:
        raise CheckpointError(f"{path}: no sidecar {meta_path(path).name}; say which model it is with --model NAME")
    state = _state_dict(load_state(path), path)
    if meta is not None:
        if meta.get("state_dict_sha256") and sha256_file(path) != meta["state_dict_sha256"]:
            raise CheckpointError(f"{path}: sha256 does not match its sidecar {meta_path(path).name}")
        config = meta["model"]
        _check_io(config, path)
        model_name = model_name or config["name"]
        model_kwargs = {**{k: config[k] for k in MODEL_KWARGS if k in config}, **model_kwargs}
    assert model_name is not None  # given, or named by the sidecar (checked above)
    try:
        model = create_model(model_name, **model_kwargs)
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot build its model: {exc.args[0] if exc.args else exc}") from exc
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        source = "its sidecar" if meta is not None else "the options"
        raise CheckpointError(
            f"{path}: does not fit model {model_name} (as {source} describe it): {misfit(model, state)}"
        ) from exc
    model.eval()
    return model, meta if meta is not None else {**base_meta(model), "source": "external state dict"}
