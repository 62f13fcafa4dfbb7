"""What Triton needs to know about an artifact: model name and version, tensors, batch limit, constants.

Read from the artifact itself (the ONNX graph, or an engine's sidecar), never from its file name
alone, so a served model and a model repository describe exactly what will run.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ArtifactError, ResnetDeployError

ENGINE_SUFFIXES = (".engine", ".plan")
NAME_PATTERN = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class ServedArtifact:
    """One artifact as a Triton model. `input_dims` and `output_dims` exclude the batch axis."""

    path: Path
    name: str
    version: int
    backend: str
    input_name: str
    input_dtype: str
    input_dims: tuple[int, ...]
    output_name: str
    output_dims: tuple[int, ...]
    profile_max_batch: int | None = None
    sidecar: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def num_classes(self) -> int:
        return self.output_dims[-1]

    @property
    def is_engine(self) -> bool:
        return self.backend == "tensorrt"

    def max_batch_size(self, requested: int | None) -> int:
        """The batch limit to serve: the engine profile's max, or `requested` (at most that max)."""
        limit = self.profile_max_batch
        if requested is not None and requested < 1:
            raise ResnetDeployError(f"--max-batch-size must be >= 1, got {requested}")
        if limit is not None and requested is not None and requested > limit:
            raise ArtifactError(
                f"{self.path}: --max-batch-size {requested} exceeds the engine profile's max batch {limit}"
            )
        return requested or limit or 64


def model_name_for(path: Path) -> str:
    """A Triton model name from the file name: `resnet18-w0.25.int8-cpu.onnx` -> `resnet18-w0.25.int8-cpu`."""
    name = NAME_PATTERN.sub("-", path.name[: -len(path.suffix)] if path.suffix else path.name).strip("-.")
    if not name:
        raise ArtifactError(f"{path}: cannot derive a model name from the file name; pass --name")
    return name


def describe_artifact(path: str | Path, name: str | None = None, version: int | None = None) -> ServedArtifact:
    """Read an FP32/FP16/Q-DQ/CPU-INT8 ONNX file or a TensorRT engine (through its sidecar)."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: file not found")
    if name is not None and NAME_PATTERN.search(name):
        raise ResnetDeployError(f"model name {name!r} may only hold letters, digits, '.', '_' and '-'")
    if version is not None and version < 1:
        raise ResnetDeployError(f"model version must be >= 1, got {version}")
    if path.suffix.lower() in ENGINE_SUFFIXES:
        return _from_engine(path, name or model_name_for(path), version or 1)
    if path.suffix.lower() == ".onnx":
        return _from_onnx(path, name or model_name_for(path), version)
    raise ArtifactError(f"{path}: cannot serve {path.suffix!r} files (expected .onnx, .engine or .plan)")


def _from_onnx(path: Path, name: str, version: int | None) -> ServedArtifact:
    from resnet_deploy.onnx_io import io_signature, load_classifier

    model = load_classifier(path)
    (tensor_in,), (tensor_out,) = io_signature(model)
    return ServedArtifact(
        path,
        name,
        version or (model.model_version if model.model_version > 0 else 1),
        "onnxruntime",
        tensor_in["name"],
        tensor_in["dtype"],
        tuple(tensor_in["shape"][1:]),
        tensor_out["name"],
        tuple(tensor_out["shape"][1:]),
    )


def _from_engine(path: Path, name: str, version: int) -> ServedArtifact:
    from resnet_deploy.trt.sidecar import read_sidecar

    sidecar = read_sidecar(path)
    try:
        tensor_in, tensor_out = sidecar["inputs"][0], sidecar["outputs"][0]
        max_batch = int(sidecar["profile"]["max"][0])
        return ServedArtifact(
            path,
            name,
            version,
            "tensorrt",
            tensor_in["name"],
            tensor_in["dtype"],
            tuple(int(d) for d in tensor_in["shape"][1:]),
            tensor_out["name"],
            tuple(int(d) for d in tensor_out["shape"][1:]),
            max_batch,
            sidecar,
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ArtifactError(f"{path}: sidecar lacks the engine's I/O or profile ({exc!r})") from exc
