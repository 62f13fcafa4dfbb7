"""`resnet-deploy build`: the whole chain from a checkpoint (or ONNX) to an engine, reusing stages.

checkpoint -> FP32 ONNX -> FP16 graph | INT8 Q/DQ graph + calibration cache -> parity (ONNX
Runtime) -> TensorRT engine + sidecar -> parity on the engine. Each stage is skipped when its inputs
and settings are unchanged (see `stages.py`). Without TensorRT the chain stops after the portable
artifacts and says what to run on the target.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from resnet_deploy import data
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.stages import StageResult, run_stage

PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CHECKPOINT = Path("checkpoints/resnet18-w0.25/best.pt")


@dataclass
class BuildOptions:
    """Settings of one `build`; the engine options go to `engine.build_engine` unchanged."""

    precision: str = "int8"
    checkpoint: Path | None = None
    onnx: Path | None = None
    artifacts_dir: Path = Path("artifacts")
    calibration_dir: Path = Path("calibration")
    engines_dir: Path = Path("engines")
    reports_dir: Path = Path("reports")
    opset: int = 17
    calibration_method: str = "entropy"
    calibration_count: int = 512
    trt_cache_version: str = "10.3.0"
    max_drop_pp: float = 0.5
    parity_limit: int = 0
    data_dir: Path | None = None
    engine: dict[str, Any] = field(default_factory=dict)


@dataclass
class BuildResult:
    stages: list[StageResult]
    artifact: Path
    parity: dict[str, Any] | None
    engine: Path | None
    engine_message: str | None


Log = Callable[[str], None]


def build(options: BuildOptions, log: Log = print) -> BuildResult:
    """Run the chain for `options.precision`; raises `GateFailed` when a parity gate fails."""
    if options.precision not in PRECISIONS:
        raise ResnetDeployError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    stages: list[StageResult] = []
    checkpoint = None if options.onnx else ensure_checkpoint(options, log)
    fp32_onnx = Path(options.onnx) if options.onnx else None
    if fp32_onnx is None:
        stages.append(export_stage(checkpoint, options))
        fp32_onnx = stages[-1].outputs[0]
    artifact_stage = precision_stage(fp32_onnx, options)
    if artifact_stage is not None:
        stages.append(artifact_stage)
    artifact = artifact_stage.outputs[0] if artifact_stage else fp32_onnx
    parity = parity_stage(checkpoint, fp32_onnx, artifact, options)
    stages.append(parity)
    engine_path, message = engine_stage(artifact, options, stages)
    return BuildResult(stages, artifact, parity.details, engine_path, message)


def ensure_checkpoint(options: BuildOptions, log: Log) -> Path:
    """The given checkpoint, the default one, or a freshly trained default model."""
    if options.checkpoint:
        return Path(options.checkpoint)
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    from resnet_deploy.train import TrainConfig, train

    log(f"no checkpoint yet: training the default recipe into {DEFAULT_CHECKPOINT.parent} (about 17 min on 2 CPU cores)")
    return train(TrainConfig(), DEFAULT_CHECKPOINT.parent, data_dir=options.data_dir,
                 progress=_epoch_logger(log)).best_checkpoint


def _epoch_logger(log: Log):
    def report(event: str, values: dict[str, Any]) -> None:
        if event == "epoch":
            log(f"  epoch {values['epoch']}: loss {values['train_loss']:.4f}, "
                f"val {values['val_accuracy'] * 100:.2f}% ({values['seconds']:.0f} s)")
    return report


def artifact_stem(checkpoint: Path) -> str:
    """`checkpoints/resnet18-w0.25/best.pt` -> `resnet18-w0.25`."""
    return checkpoint.parent.name if checkpoint.stem in ("best", "last") else checkpoint.stem


def export_stage(checkpoint: Path, options: BuildOptions) -> StageResult:
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.export import export_onnx

    onnx_path = options.artifacts_dir / f"{artifact_stem(checkpoint)}.onnx"

    def make() -> dict[str, Any]:
        model, _ = load_checkpoint(checkpoint)
        check_images = data.normalize(data.load_fashion_mnist(options.data_dir).test_images[:1000])
        return export_onnx(model, onnx_path, opset=options.opset, check_images=check_images)

    return run_stage("export", [onnx_path], {"checkpoint": checkpoint}, {"opset": options.opset}, make)


def precision_stage(fp32_onnx: Path, options: BuildOptions) -> StageResult | None:
    if options.precision == "fp16":
        from resnet_deploy.quantize.fp16 import convert_to_fp16

        fp16_onnx = fp32_onnx.with_name(fp32_onnx.stem + ".fp16.onnx")
        return run_stage("fp16", [fp16_onnx], {"onnx": fp32_onnx}, {},
                         lambda: convert_to_fp16(fp32_onnx, fp16_onnx))
    if options.precision == "int8":
        return int8_stage(fp32_onnx, options)
    return None


def int8_stage(fp32_onnx: Path, options: BuildOptions) -> StageResult:
    from resnet_deploy.quantize.calibrate import calibrate_onnx
    from resnet_deploy.quantize.cache import write_calibration_cache
    from resnet_deploy.quantize.qdq import insert_qdq

    method = options.calibration_method
    qdq_onnx = options.calibration_dir / f"{fp32_onnx.stem}.int8-{method}.qdq.onnx"
    cache = options.calibration_dir / f"{fp32_onnx.stem}.{method}.cache"
    settings = {"method": method, "count": options.calibration_count, "trt_version": options.trt_cache_version}

    def make() -> dict[str, Any]:
        images = data.calibration_images(options.calibration_count, data_dir=options.data_dir)
        amax = calibrate_onnx(fp32_onnx, images, method)
        write_calibration_cache(cache, amax, trt_version=options.trt_cache_version)
        return insert_qdq(fp32_onnx, amax, qdq_onnx)

    return run_stage("int8", [qdq_onnx, cache], {"onnx": fp32_onnx}, settings, make)


def parity_stage(checkpoint: Path | None, fp32_onnx: Path, artifact: Path, options: BuildOptions) -> StageResult:
    """Accuracy parity of the ONNX artifacts on ONNX Runtime against the PyTorch reference."""
    from resnet_deploy.parity import parity_for_artifacts

    report_path = options.reports_dir / f"parity-{fp32_onnx.stem}-{options.precision}.json"
    artifacts = [fp32_onnx] if artifact == fp32_onnx else [fp32_onnx, artifact]
    inputs = {"reference": checkpoint or fp32_onnx, **{f"artifact{i}": p for i, p in enumerate(artifacts)}}
    settings = {"max_drop_pp": options.max_drop_pp, "limit": options.parity_limit}
    return run_stage("parity", [report_path], inputs, settings,
                     lambda: parity_for_artifacts(checkpoint or fp32_onnx, artifacts, report_path,
                                                  max_drop_pp=options.max_drop_pp, limit=options.parity_limit,
                                                  data_dir=options.data_dir))


def engine_stage(artifact: Path, options: BuildOptions, stages: list[StageResult]) -> tuple[Path | None, str | None]:
    """Build the engine where TensorRT imports; otherwise say what to run on the target."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return None, (
            "TensorRT is not installed here, so the engine step was not run. The portable artifacts are ready; "
            f"on the target GPU or Jetson (with TensorRT and pycuda) run:\n"
            f"  resnet-deploy build --precision {options.precision} --onnx {artifact}"
        )
    from resnet_deploy.engine import build_engine_for_artifact

    engine_path = build_engine_for_artifact(artifact, options, stages)
    return engine_path, None
