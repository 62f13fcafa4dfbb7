"""Model repositories for stock Triton containers (no Python there): `<model>/config.pbtxt`,
`<model>/<version>/model.onnx` or `model.plan`, `<model>/labels.txt`, `<model>/provenance.json`.

Configs are built as Triton's own protobuf message (`tritonclient.grpc.model_config_pb2`) and written
in its text format; `validate_repository` parses every `config.pbtxt` back with
`google.protobuf.text_format`, applies Triton's own model-config rules (`triton_rules`, after
`model_config_utils.cc` ValidateModelConfig / ValidateInstanceGroup and the TensorRT backend: max_batch_size
>= 0 and >= every preferred batch size, dynamic batching only with max_batch_size > 0, dims > 0 or -1,
a valid data type, instance count >= 1, plans on KIND_GPU, NVDLA secondary devices only for plans) and
checks it against the files beside it (and a plan against its sidecar and the target container's TensorRT).

A version-compatible plan loads only with `--backend-config=tensorrt,version-compatible=true`; a DLA plan
carries `secondary_devices { kind: KIND_NVDLA device_id: N }` in its instance group. The repository's
README.md says how to start Triton on it (Triton reads only the model folders).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.serve.artifact import ServedArtifact, describe_artifact
from resnet_deploy.serve.batching import BatchingSettings

LABELS_FILE = "labels.txt"
PROVENANCE_FILE = "provenance.json"
PLATFORMS = {"onnxruntime": ("onnxruntime_onnx", "model.onnx"), "tensorrt": ("tensorrt_plan", "model.plan")}
TRITON_TYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
}
ORT_TENSORRT_PRECISION = {"fp32": "FP32", "fp16": "FP16", "int8-qdq": "INT8"}
REPOSITORY_README = "README.md"
VERSION_COMPATIBLE_FLAG = "--backend-config=tensorrt,version-compatible=true"


@dataclass(frozen=True)
class RepositorySettings:
    """Batching, instances and placement for every model, and the target the plans must match."""

    batching: BatchingSettings = BatchingSettings()
    onnx_on_gpu: bool = False
    container_tensorrt: str | None = None
    target_compute_capability: str | None = None


def build_config(artifact: ServedArtifact, settings: RepositorySettings):
    """The `ModelConfig` message for one artifact."""
    from tritonclient.grpc import model_config_pb2 as pb

    platform, file_name = PLATFORMS[artifact.backend]
    batching = settings.batching
    max_batch = artifact.max_batch_size(batching.max_batch_size)
    too_large = [size for size in batching.preferred_batch_sizes if size > max_batch]
    if batching.dynamic and too_large:
        where = "the engine profile's max" if artifact.is_engine else "the max batch size (64 for ONNX by default)"
        raise ArtifactError(f"{artifact.path}: --preferred-batch-sizes {too_large} exceed {where} {max_batch}")
    config = pb.ModelConfig(
        name=artifact.name, platform=platform, default_model_filename=file_name, max_batch_size=max_batch
    )
    config.version_policy.specific.versions.append(artifact.version)
    config.input.add(
        name=artifact.input_name, data_type=_triton_type(artifact, artifact.input_dtype), dims=list(artifact.input_dims)
    )
    config.output.add(
        name=artifact.output_name, data_type=pb.TYPE_FP32, dims=list(artifact.output_dims), label_filename=LABELS_FILE
    )
    if batching.dynamic:
        config.dynamic_batching.max_queue_delay_microseconds = batching.max_queue_delay_us
        config.dynamic_batching.preferred_batch_size.extend(batching.preferred_batch_sizes)
    on_gpu = artifact.is_engine or settings.onnx_on_gpu
    group = config.instance_group.add(
        count=batching.instances, kind=pb.ModelInstanceGroup.KIND_GPU if on_gpu else pb.ModelInstanceGroup.KIND_CPU
    )
    dla_core = artifact.sidecar.get("dla_core") if artifact.is_engine else None
    if dla_core is not None:
        group.secondary_devices.add(kind=pb.ModelInstanceGroup.SecondaryDevice.KIND_NVDLA, device_id=int(dla_core))
    if on_gpu and not artifact.is_engine:
        precision = _onnx_precision(artifact)
        if precision not in ORT_TENSORRT_PRECISION:
            raise ArtifactError(
                f"{artifact.path}: --onnx-on-gpu runs ONNX Runtime's TensorRT accelerator, which "
                f"cannot take this {precision} graph (the CPU INT8 one); serve it on the CPU or "
                "give the FP32, FP16 or Q/DQ graph"
            )
        accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
        accelerator.parameters["precision_mode"] = ORT_TENSORRT_PRECISION[precision]
    return config


def triton_rules(config) -> list[str]:
    """What Triton itself refuses in a config (model_config_utils.cc and the TensorRT backend), as sentences."""
    from tritonclient.grpc import model_config_pb2 as pb

    problems = []
    if config.max_batch_size < 0:
        problems.append(f"max_batch_size {config.max_batch_size} must be >= 0")
    if config.HasField("dynamic_batching"):
        if config.max_batch_size == 0:
            problems.append("dynamic batching needs max_batch_size > 0")
        too_large = [s for s in config.dynamic_batching.preferred_batch_size if s < 1 or s > config.max_batch_size]
        if too_large:
            problems.append(f"preferred_batch_size {too_large} must lie in 1..max_batch_size {config.max_batch_size}")
    for tensor in [*config.input, *config.output]:
        if tensor.data_type == pb.TYPE_INVALID:
            problems.append(f"tensor {tensor.name!r} has no data_type")
        if not tensor.dims or any(d == 0 or d < -1 for d in tensor.dims):
            problems.append(f"tensor {tensor.name!r} dims {list(tensor.dims)} must be non-empty, each > 0 or -1")
    for group in config.instance_group:
        if group.count < 1:
            problems.append(f"instance_group count {group.count} must be >= 1")
        if config.platform == "tensorrt_plan" and group.kind not in (
            pb.ModelInstanceGroup.KIND_GPU,
            pb.ModelInstanceGroup.KIND_AUTO,
        ):
            problems.append(f"a tensorrt_plan runs on KIND_GPU, not {pb.ModelInstanceGroup.Kind.Name(group.kind)}")
        if group.secondary_devices and config.platform != "tensorrt_plan":
            problems.append("secondary_devices (KIND_NVDLA) apply to tensorrt_plan models only")
    return problems


def repository_readme(models: list[dict[str, Any]], release: str = "24.08") -> str:
    """The repository's README.md: the `docker run` that loads it, with the backend flag version-compatible
    plans need."""
    flags = [VERSION_COMPATIBLE_FLAG] if any(m["provenance"].get("version_compatible") for m in models) else []
    command = " ".join(["tritonserver", "--model-repository=/models", *flags])
    note = (
        (
            f"\nVersion-compatible plans load only with `{VERSION_COMPATIBLE_FLAG}` (Triton's TensorRT backend);"
            " it is in the command above.\n"
        )
        if flags
        else ""
    )
    return f"""# Triton model repository (written by resnet-deploy triton-repo)

Models: {", ".join(m["model"] for m in models)}. Check it with `resnet-deploy triton-repo --check <this folder>`.

    docker run --gpus all -p8000:8000 -p8001:8001 -p8002:8002 -v $PWD:/models \\
        nvcr.io/nvidia/tritonserver:{release}-py3 {command}
{note}"""


def _triton_type(artifact: ServedArtifact, dtype: str) -> int:
    from tritonclient.grpc import model_config_pb2 as pb

    if dtype not in TRITON_TYPES:
        raise ArtifactError(f"{artifact.path}: tensor type {dtype!r} has no Triton equivalent here")
    return pb.DataType.Value(TRITON_TYPES[dtype])


def _onnx_precision(artifact: ServedArtifact) -> str:
    from resnet_deploy.onnx_info import describe_onnx

    return describe_onnx(artifact.path)["precision"]


def write_repository(
    artifacts: list[ServedArtifact], out_dir: str | Path, settings: RepositorySettings, force: bool = False
) -> list[dict[str, Any]]:
    """Write one model folder per artifact (each built aside and renamed into place), then validate them."""
    from google.protobuf import text_format

    out_dir = Path(out_dir)
    names = [a.name for a in artifacts]
    if len(set(names)) != len(names):
        raise ResnetDeployError(f"two artifacts would become the same model {names}; pass --name or rename them")
    for artifact in artifacts:
        target = out_dir / artifact.name
        if target.exists() and not force:
            raise ResnetDeployError(f"{target}: already exists; pass --force to replace it")
        config = build_config(artifact, settings)
        provenance = _provenance(artifact, settings)
        out_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{artifact.name}.", dir=out_dir))
        try:
            version_dir = staging / str(artifact.version)
            version_dir.mkdir()
            shutil.copyfile(artifact.path, version_dir / config.default_model_filename)
            if artifact.is_engine:
                shutil.copyfile(artifact.path.with_suffix(".json"), version_dir / "model.json")
            header = f"# written by resnet-deploy triton-repo from {artifact.path.name}\n"
            (staging / "config.pbtxt").write_text(header + text_format.MessageToString(config))
            (staging / LABELS_FILE).write_text("\n".join(_class_names(artifact)) + "\n")
            (staging / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2) + "\n")
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    models = validate_repository(out_dir, settings, only=names)
    _write_readme(out_dir)
    return models


def _write_readme(out_dir: Path) -> None:
    """README.md over every model folder now in `out_dir` (ours and those already there)."""
    from resnet_deploy.fileio import atomic_write_text

    models = []
    for folder in sorted(p for p in out_dir.iterdir() if (p / "config.pbtxt").is_file()):
        provenance = folder / PROVENANCE_FILE
        models.append(
            {"model": folder.name, "provenance": json.loads(provenance.read_text()) if provenance.is_file() else {}}
        )
    atomic_write_text(out_dir / REPOSITORY_README, repository_readme(models))


def _class_names(artifact: ServedArtifact) -> list[str]:
    from resnet_deploy.data import CLASS_NAMES

    names = list(artifact.sidecar.get("class_names", CLASS_NAMES))
    if len(names) != artifact.num_classes:
        raise ArtifactError(f"{artifact.path}: {artifact.num_classes} outputs but {len(names)} class names")
    return names


def _provenance(artifact: ServedArtifact, settings: RepositorySettings) -> dict[str, Any]:
    from resnet_deploy.fileio import sha256_file
    from resnet_deploy.serve.releases import SOURCE, container_image, releases_carrying

    record: dict[str, Any] = {
        "source": str(artifact.path),
        "sha256": sha256_file(artifact.path),
        "backend": artifact.backend,
    }
    if artifact.is_engine:
        version = str(artifact.sidecar["tensorrt_version"])
        _check_plan_target(artifact, settings)
        releases = releases_carrying(version)
        record.update(
            {
                "version_compatible": bool(artifact.sidecar.get("version_compatible")),
                "dla_core": artifact.sidecar.get("dla_core"),
                "tensorrt_version": version,
                "compute_capability": artifact.sidecar["compute_capability"],
                "gpu_name": artifact.sidecar.get("gpu_name"),
                "ngc_releases": releases,
                "ngc_images": [container_image(r) for r in releases],
                "ngc_source": SOURCE,
            }
        )
    return record


def _check_plan_target(artifact: ServedArtifact, settings: RepositorySettings) -> None:
    """Refuse a plan the target container's TensorRT or the target GPU cannot run (the sidecar's rules)."""
    from resnet_deploy.trt.cuda import DeviceInfo
    from resnet_deploy.trt.sidecar import check_compatible

    if settings.container_tensorrt or settings.target_compute_capability:
        sidecar = artifact.sidecar
        target = DeviceInfo(
            0,
            str(sidecar.get("gpu_name", "?")),
            settings.target_compute_capability or str(sidecar["compute_capability"]),
            bool(sidecar.get("integrated_gpu")),
            str(sidecar.get("platform", "x86_64")),
        )
        check_compatible(
            sidecar, settings.container_tensorrt or str(sidecar["tensorrt_version"]), target, engine_path=artifact.path
        )


def parse_config(path: str | Path):
    """Parse a `config.pbtxt` with Triton's protobuf; a syntax or field error raises `ArtifactError`."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as pb

    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), pb.ModelConfig())
    except (OSError, text_format.ParseError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path}: not a valid Triton model config: {exc}") from exc


def validate_repository(
    root: str | Path, settings: RepositorySettings = RepositorySettings(), only: list[str] | None = None
) -> list[dict[str, Any]]:
    """Parse and check every model folder under `root` (or the ones in `only`); one summary per model."""
    root = Path(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []
    if only is not None:
        folders = [root / name for name in only]
    if not folders:
        raise ArtifactError(f"{root}: no model folders (a Triton repository holds <model>/config.pbtxt)")
    return [_validate_model(folder, settings) for folder in folders]


def _validate_model(folder: Path, settings: RepositorySettings) -> dict[str, Any]:
    from tritonclient.grpc import model_config_pb2 as pb

    config_path = folder / "config.pbtxt"
    config = parse_config(config_path)
    problems = triton_rules(config)
    if config.name != folder.name:
        problems.append(f"name {config.name!r} differs from its folder {folder.name!r}")
    backend = {platform: backend for backend, (platform, _) in PLATFORMS.items()}.get(config.platform)
    if backend is None:
        raise ArtifactError(
            f"{config_path}: platform {config.platform!r} is not one triton-repo writes "
            f"({', '.join(p for p, _ in PLATFORMS.values())})"
        )
    versions = list(config.version_policy.specific.versions) or [1]
    model_file = folder / str(versions[0]) / (config.default_model_filename or PLATFORMS[backend][1])
    if not model_file.is_file():
        raise ArtifactError(f"{config_path}: model file {model_file} is missing")
    artifact = describe_artifact(model_file, config.name, versions[0])
    if artifact.profile_max_batch is not None and config.max_batch_size > artifact.profile_max_batch:
        problems.append(
            f"max_batch_size {config.max_batch_size} exceeds the engine profile's max batch "
            f"{artifact.profile_max_batch}"
        )
        raise ArtifactError(f"{config_path}: " + "; ".join(problems))
    expected = build_config(
        artifact, RepositorySettings(BatchingSettings(max_batch_size=config.max_batch_size or None, dynamic=False))
    )
    for field in ("input", "output"):
        got, want = (
            ", ".join(f"{t.name} {pb.DataType.Name(t.data_type)[5:]} {list(t.dims)}" for t in getattr(c, field))
            for c in (config, expected)
        )
        if got != want:
            problems.append(f"{field} {got} does not match the model file's {want}")
    labels = folder / LABELS_FILE
    if not labels.is_file() or len(labels.read_text().splitlines()) != artifact.num_classes:
        problems.append(f"{LABELS_FILE} must hold one class name per line, {artifact.num_classes} lines")
    if problems:
        raise ArtifactError(f"{config_path}: " + "; ".join(problems))
    if artifact.is_engine:
        _check_plan_target(artifact, settings)
    return {
        "model": config.name,
        "platform": config.platform,
        "version": versions[0],
        "max_batch_size": config.max_batch_size,
        "path": str(folder),
        "provenance": json.loads((folder / PROVENANCE_FILE).read_text())
        if (folder / PROVENANCE_FILE).is_file()
        else {},
    }
