"""`resnet-deploy build`: the whole chain from a checkpoint (or ONNX) to an engine, reusing stages.

checkpoint -> FP32 ONNX -> FP16 graph | INT8 Q/DQ graph + calibration cache -> parity (ONNX
Runtime) -> TensorRT engine + sidecar -> parity on the engine. Each stage is skipped when its inputs
and settings are unchanged (see `stages.py`). Without TensorRT the chain stops after the portable
artifacts and says what to run on the target.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from resnet_deploy import data
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.quantize.fallback import FallbackSettings
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
    opset: int = 18
    calibration_method: str = "auto"
    calibration_count: int = 512
    trt_cache_version: str = "10.3.0"
    max_drop_pp: float = 0.5
    parity_limit: int = 0
    data_dir: Path | None = None
    engine: dict[str, Any] = field(default_factory=dict)
    fallback: FallbackSettings = field(default_factory=FallbackSettings)  # issue 12: INT8 fallback


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
    _refuse_legacy_fallback(options)
    stages: list[StageResult] = []
    checkpoint, fp32_onnx, artifact = None, None, None
    if options.onnx:
        fp32_onnx, artifact = _classify_onnx(Path(options.onnx), options.precision)
    else:
        checkpoint = ensure_checkpoint(options, log)
        stages.append(export_stage(checkpoint, options))
        fp32_onnx = stages[-1].outputs[0]
    if artifact is None:
        artifact_stage = precision_stage(fp32_onnx, options)
        if artifact_stage is not None:
            stages.append(artifact_stage)
        if options.precision == "int8" and options.fallback.active:
            artifact_stage = fallback_stage(fp32_onnx, options, log)
            stages.append(artifact_stage)
        artifact = artifact_stage.outputs[0] if artifact_stage else fp32_onnx
    parity = None
    reference = checkpoint or fp32_onnx
    compared = [p for p in dict.fromkeys([fp32_onnx, artifact]) if p is not None and p != reference]
    if reference is not None and compared:
        stages.append(parity_stage(reference, compared, options))
        parity = stages[-1].details
    legacy = options.engine.get("legacy_calibrator")
    engine_source = fp32_onnx if legacy and fp32_onnx is not None else artifact
    engine_path, message = engine_stage(engine_source, options, stages, log)
    return BuildResult(stages, artifact, parity, engine_path, message)


def _classify_onnx(onnx_path: Path, precision: str) -> tuple[Path | None, Path | None]:
    """(FP32 ONNX, finished artifact) for a user-given ONNX: FP32, or already of `precision`."""
    from resnet_deploy.parity import precision_of_artifact

    given = precision_of_artifact(onnx_path)
    if given == precision:
        return (onnx_path if given == "fp32" else None), onnx_path
    if given == "fp32":
        return onnx_path, None
    raise ResnetDeployError(f"{onnx_path}: is an {given} graph; --precision {precision} needs the FP32 ONNX "
                            f"or a {precision} graph")


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
        return export_onnx(model, onnx_path, opset=options.opset, check_images=check_images,
                           source_checkpoint=checkpoint)

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
    """Calibrate (train split), write Q/DQ graphs and caches, pick the method by validation top-1."""
    import json

    from resnet_deploy.quantize.calibrate import METHODS
    from resnet_deploy.quantize.int8 import Int8Paths, make_int8_artifacts

    methods = METHODS if options.calibration_method == "auto" else (options.calibration_method,)
    paths = Int8Paths(options.calibration_dir, fp32_onnx.stem)
    outputs = [paths.summary, *(paths.qdq(m) for m in methods), *(paths.cache(m) for m in methods)]
    settings = {"methods": list(methods), "count": options.calibration_count,
                "trt_version": options.trt_cache_version}
    result = run_stage("int8", outputs, {"onnx": fp32_onnx}, settings,
                       lambda: make_int8_artifacts(fp32_onnx, options.calibration_dir, methods=methods,
                                                   count=options.calibration_count,
                                                   trt_version=options.trt_cache_version, data_dir=options.data_dir))
    best = json.loads(paths.summary.read_text())["best_method"]
    result.outputs = [paths.qdq(best), paths.cache(best), paths.summary]
    return result


# --- issue 12: accuracy-budgeted INT8 fallback (quantize/fallback.py) ---
def fallback_stage(fp32_onnx: Path, options: BuildOptions, log: Log) -> StageResult:
    """Keep layers of the best method's Q/DQ graph out of INT8 (budget search or named layers)."""
    import json
    from dataclasses import asdict

    from resnet_deploy.quantize.int8 import Int8Paths, make_fallback_artifacts

    paths = Int8Paths(options.calibration_dir, fp32_onnx.stem)
    method = json.loads(paths.summary.read_text())["best_method"]
    outputs = [paths.fallback_qdq(method), paths.layer_precisions(method), paths.fallback_report(method)]
    result = run_stage("fallback", outputs, {"onnx": fp32_onnx, "amax": paths.amax(method)}, asdict(options.fallback),
                       lambda: make_fallback_artifacts(fp32_onnx, options.calibration_dir, options.fallback,
                                                       method=method, data_dir=options.data_dir, log=log))
    if result.details is None:
        result.details = json.loads(paths.fallback_report(method).read_text())
    return result


def _refuse_legacy_fallback(options: BuildOptions) -> None:
    if options.engine.get("legacy_calibrator") and options.fallback.active and options.precision == "int8":
        raise ResnetDeployError("--legacy-calibrator with INT8 fallback: the engine builder does not apply layer "
                                "precisions yet; build the fallback Q/DQ graph strongly typed (drop "
                                "--legacy-calibrator), or give the .layer-precisions.json to trtexec")
# --- end issue 12 ---


def parity_stage(reference: Path, artifacts: list[Path], options: BuildOptions) -> StageResult:
    """Accuracy parity of the ONNX artifacts on ONNX Runtime against the reference (PyTorch or FP32 ONNX)."""
    from resnet_deploy.parity import parity_for_artifacts

    report_path = options.reports_dir / f"parity-{artifacts[0].stem}-{options.precision}.json"
    inputs = {"reference": reference, **{f"artifact{i}": p for i, p in enumerate(artifacts)}}
    settings = {"max_drop_pp": options.max_drop_pp, "limit": options.parity_limit}
    result = run_stage("parity", [report_path], inputs, settings,
                       lambda: parity_for_artifacts(reference, artifacts, report_path, max_drop_pp=options.max_drop_pp,
                                                    limit=options.parity_limit, data_dir=options.data_dir))
    if result.details is None:
        import json

        result.details = json.loads(report_path.read_text())
    return result


def engine_stage(artifact: Path, options: BuildOptions, stages: list[StageResult],
                 log: Log) -> tuple[Path | None, str | None]:
    """Build the engine and check its parity where TensorRT imports; otherwise say what to run on the target."""
    from resnet_deploy.engine import tensorrt_available

    if not tensorrt_available():
        return None, (
            "TensorRT is not installed here, so the engine step was not run. The portable artifacts are ready; "
            "on the target GPU or Jetson (with TensorRT and pycuda) run:\n"
            f"  resnet-deploy build --precision {options.precision} --onnx {artifact}"
        )
    from resnet_deploy.engine import build_engine, planned_engine_path
    from resnet_deploy.parity import parity_for_artifacts
    from resnet_deploy.sidecar import sidecar_path

    model_name = artifact.name.removesuffix(".onnx").removesuffix(".qdq")
    engine_path = planned_engine_path(artifact, options.engines_dir, options.precision, model_name=model_name,
                                      **options.engine)
    cache = _calibration_cache(stages)
    settings = {"precision": options.precision, **options.engine}
    inputs = {"onnx": artifact, **({"calibration_cache": cache} if cache and settings.get("legacy_calibrator") else {})}
    stages.append(run_stage("engine", [engine_path, sidecar_path(engine_path)], inputs, settings,
                            lambda: build_engine(artifact, options.engines_dir, precision=options.precision, log=log,
                                                 calibration_cache=cache, model_name=model_name, **options.engine)))
    report_path = options.reports_dir / f"parity-{engine_path.stem}.json"
    stages.append(run_stage("engine parity", [report_path], {"engine": engine_path, "reference": artifact},
                            {"max_drop_pp": options.max_drop_pp, "limit": options.parity_limit},
                            lambda: parity_for_artifacts(artifact, [engine_path], report_path,
                                                         max_drop_pp=options.max_drop_pp, limit=options.parity_limit,
                                                         data_dir=options.data_dir)))
    return engine_path, None


def _calibration_cache(stages: list[StageResult]) -> Path | None:
    for stage in stages:
        if stage.name == "int8":
            return stage.outputs[1]
    return None
