"""`resnet-deploy build`: the whole chain from a checkpoint (or ONNX) to an engine, reusing stages.

checkpoint -> FP32 ONNX -> FP16 graph | INT8 Q/DQ graph + calibration cache -> parity (ONNX
Runtime) -> TensorRT engine + sidecar -> parity on the engine. Each stage is skipped when its inputs
and settings are unchanged (see `stages.py`). Without TensorRT the chain stops after the portable
artifacts and says what to run on the target.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

from resnet_deploy import data
from resnet_deploy.errors import ArtifactError, ResnetDeployError
from resnet_deploy.fileio import folder_lock
from resnet_deploy.onnx_io import GRAPH_PRECISION, PRECISIONS
from resnet_deploy.parity import INT8_MAX_DROP_PP
from resnet_deploy.quantize.fallback import FallbackSettings
from resnet_deploy.stages import StageResult, run_stage
from resnet_deploy.trt.compat import DEFAULT_TRT_VERSION
from resnet_deploy.trt.settings import EngineSettings

DEFAULT_CHECKPOINT = Path("checkpoints/resnet18-w0.25/best.pt")


@dataclass
class BuildOptions:
    """Settings of one `build`; `engine` (its precision is `precision`) goes to `build_engine`, a legacy
    INT8 build's with the fallback stage's layer precisions.

    `calibration_method` "all" calibrates with every method and keeps the best on the validation
    split. `target_flags` are the engine flags of the command line (and, for a legacy build, the
    fallback flags), repeated in the command suggested for the target when TensorRT is missing here.
    `reference` is the FP32 ONNX (or checkpoint) an FP16 or Q/DQ `onnx` is gated against; without it
    the one its reports name is looked up (`graph_reference.find_reference`)."""

    precision: str = "int8"
    checkpoint: Path | None = None
    onnx: Path | None = None
    reference: Path | None = None
    artifacts_dir: Path = Path("artifacts")
    calibration_dir: Path = Path("calibration")
    engines_dir: Path = Path("engines")
    reports_dir: Path = Path("reports")
    opset: int = 18
    calibration_method: str = "all"
    calibration_count: int = 512
    trt_cache_version: str = DEFAULT_TRT_VERSION
    max_drop_pp: float = INT8_MAX_DROP_PP
    parity_limit: int = 0
    data_dir: Path | None = None
    engine: EngineSettings | None = None
    target_flags: tuple[str, ...] = ()
    fallback: FallbackSettings = field(default_factory=FallbackSettings)

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = EngineSettings(precision=self.precision)
        elif self.engine.precision != self.precision:
            raise ResnetDeployError(
                f"the engine settings say precision {self.engine.precision!r}, the build {self.precision!r}"
            )

    @property
    def output_dirs(self) -> tuple[Path, ...]:
        return self.artifacts_dir, self.calibration_dir, self.engines_dir, self.reports_dir


@dataclass
class BuildResult:
    stages: list[StageResult]
    artifact: Path
    parity: dict[str, Any] | None
    engine: Path | None
    engine_message: str | None


Log = Callable[[str], None]


def build(options: BuildOptions, log: Log = print) -> BuildResult:
    """Run the chain for `options.precision`; raises `GateFailed` when a parity gate fails.

    A given ONNX is checked before anything is written. The output folders are then locked for
    the whole run: a second build into them waits, so it never reads the other one's half-made
    stage (two builds with other settings share file names).
    """
    if options.precision not in PRECISIONS:
        raise ResnetDeployError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    given = _classify_onnx(Path(options.onnx), options.precision) if options.onnx else None
    reference = _graph_reference(options, log) if given and given[0] is None else None
    if options.reference is not None and reference is None:
        raise ResnetDeployError(
            "--reference gates an FP16 or INT8 graph given with --onnx; "
            f"{'the FP32 --onnx is its own reference' if given else 'give that graph with --onnx'}"
        )
    with folder_lock(options.output_dirs, log):
        return _build(options, given, reference, log)


def _graph_reference(options: BuildOptions, log: Log) -> Path:
    """The FP32 reference of the FP16 or Q/DQ graph `options.onnx`: `--reference`, else the one its reports name."""
    from resnet_deploy.fileio import require_file
    from resnet_deploy.graph_reference import WHERE_LOOKED, find_reference

    if options.reference is not None:
        return require_file(options.reference, "--reference")
    assert options.onnx is not None  # only called for a graph given with --onnx
    graph = Path(options.onnx)
    found = find_reference(graph)
    if found is None:
        raise ArtifactError(
            f"{graph}: no FP32 reference to gate this {options.precision} graph's parity "
            f"against: none named by {WHERE_LOOKED} exists with its recorded sha256; "
            "pass --reference FP32.onnx"
        )
    log(f"parity reference: {found} (the FP32 source {graph.name}'s reports name, sha256 matching)")
    return found


def _build(
    options: BuildOptions, given: tuple[Path | None, Path | None] | None, given_reference: Path | None, log: Log
) -> BuildResult:
    stages: list[StageResult] = []
    checkpoint, fp32_onnx, artifact = None, None, None
    if given:
        fp32_onnx, artifact = given
    else:
        checkpoint = ensure_checkpoint(options, log)
        stages.append(export_stage(checkpoint, options))
        fp32_onnx = stages[-1].outputs[0]
    if artifact is None:
        assert fp32_onnx is not None  # _classify_onnx gives the FP32 graph whenever it gives no artifact
        artifact_stage = precision_stage(fp32_onnx, options)
        if artifact_stage is not None:
            stages.append(artifact_stage)
        if options.precision == "int8" and options.fallback.active:
            artifact_stage = fallback_stage(fp32_onnx, options, log)
            stages.append(artifact_stage)
        artifact = artifact_stage.outputs[0] if artifact_stage else fp32_onnx
    parity = None
    reference = checkpoint or fp32_onnx or given_reference
    compared = [p for p in dict.fromkeys([fp32_onnx, artifact]) if p is not None and p != reference]
    if reference is not None and compared:
        stages.append(parity_stage(reference, compared, options))
        parity = stages[-1].details
    assert options.engine is not None  # set by BuildOptions.__post_init__
    legacy = options.engine.legacy_calibrator
    engine_source = fp32_onnx if legacy and fp32_onnx is not None else artifact
    cache = _stage_output(stages, "int8", 1) if legacy else None
    layer_precisions = _stage_output(stages, "fallback", 1) if legacy else None
    reference_onnx = fp32_onnx or given_reference
    if reference_onnx is not None and engine_source != reference_onnx:  # the command for the target gates it too
        options = replace(options, target_flags=(*options.target_flags, "--reference", str(reference_onnx)))
    engine_path, message = engine_stage(
        engine_source, options, stages, log, calibration_cache=cache, layer_precisions=layer_precisions
    )
    return BuildResult(stages, artifact, parity, engine_path, message)


def _classify_onnx(onnx_path: Path, precision: str) -> tuple[Path | None, Path | None]:
    """(FP32 ONNX, finished artifact) for a user-given ONNX: FP32, or already of `precision`.

    The graph must meet the I/O contract, and an INT8 graph must be the TensorRT-style Q/DQ one."""
    from resnet_deploy.onnx_io import load_classifier, precision_of

    kind = precision_of(load_classifier(onnx_path))
    if kind == "int8-cpu":
        raise ArtifactError(
            f"{onnx_path}: is the ONNX Runtime CPU INT8 graph (uint8 activations), not for "
            "TensorRT; give the FP32 ONNX or a TensorRT Q/DQ graph (*.int8-<method>.qdq.onnx)"
        )
    given = GRAPH_PRECISION[kind]
    if given == precision:
        return (onnx_path if given == "fp32" else None), onnx_path
    if given == "fp32":
        return onnx_path, None
    raise ResnetDeployError(
        f"{onnx_path}: is an {given} graph; --precision {precision} needs the FP32 ONNX or a {precision} graph"
    )


def ensure_checkpoint(options: BuildOptions, log: Log) -> Path:
    """The given checkpoint, the default one, or a freshly trained default model."""
    if options.checkpoint:
        return Path(options.checkpoint)
    if DEFAULT_CHECKPOINT.is_file():
        return DEFAULT_CHECKPOINT
    from resnet_deploy.train import TrainConfig, train

    log(
        f"no checkpoint yet: training the default recipe into {DEFAULT_CHECKPOINT.parent} (about 17 min on 2 CPU cores)"
    )
    return train(
        TrainConfig(), DEFAULT_CHECKPOINT.parent, data_dir=options.data_dir, progress=_epoch_logger(log)
    ).best_checkpoint


def _epoch_logger(log: Log):
    def report(event: str, values: dict[str, Any]) -> None:
        if event == "epoch":
            log(
                f"  epoch {values['epoch']}: loss {values['train_loss']:.4f}, "
                f"val {values['val_accuracy'] * 100:.2f}% ({values['seconds']:.0f} s)"
            )

    return report


def artifact_stem(checkpoint: Path) -> str:
    """`checkpoints/resnet18-w0.25/best.pt` -> `resnet18-w0.25` (also when given as `best.pt` from inside
    that folder); any other checkpoint -> its own stem."""
    if checkpoint.stem not in ("best", "last"):
        return checkpoint.stem
    return checkpoint.resolve().parent.name or checkpoint.stem


def export_stage(checkpoint: Path, options: BuildOptions) -> StageResult:
    from resnet_deploy.checkpoint import load_checkpoint
    from resnet_deploy.export import export_onnx

    onnx_path = options.artifacts_dir / f"{artifact_stem(checkpoint)}.onnx"

    def make() -> dict[str, Any]:
        model, _ = load_checkpoint(checkpoint)
        check_images = data.normalize(data.load_fashion_mnist(options.data_dir).test_images[:1000])
        return export_onnx(
            model, onnx_path, opset=options.opset, check_images=check_images, source_checkpoint=checkpoint
        )

    return run_stage("export", [onnx_path], {"checkpoint": checkpoint}, {"opset": options.opset}, make)


def precision_stage(fp32_onnx: Path, options: BuildOptions, precision: str | None = None) -> StageResult | None:
    """The FP16 graph or the INT8 artifacts for `precision` (default: the build's); None for fp32."""
    precision = precision or options.precision
    if precision == "fp16":
        from resnet_deploy.quantize.fp16 import convert_to_fp16

        fp16_onnx = fp32_onnx.with_name(fp32_onnx.stem + ".fp16.onnx")
        return run_stage("fp16", [fp16_onnx], {"onnx": fp32_onnx}, {}, lambda: convert_to_fp16(fp32_onnx, fp16_onnx))
    if precision == "int8":
        return int8_stage(fp32_onnx, options)
    return None


def int8_stage(fp32_onnx: Path, options: BuildOptions) -> StageResult:
    """Calibrate (train split), write Q/DQ graphs and caches, pick the method by validation top-1."""
    from resnet_deploy.quantize.calibrate import METHODS
    from resnet_deploy.quantize.int8 import Int8Paths, make_int8_artifacts

    methods = METHODS if options.calibration_method == "all" else (options.calibration_method,)
    paths = Int8Paths(options.calibration_dir, fp32_onnx.stem)
    outputs = [paths.summary, *(paths.qdq(m) for m in methods), *(paths.cache(m) for m in methods)]
    settings = {"methods": list(methods), "count": options.calibration_count, "trt_version": options.trt_cache_version}
    result = run_stage(
        "int8",
        outputs,
        {"onnx": fp32_onnx},
        settings,
        lambda: make_int8_artifacts(
            fp32_onnx,
            options.calibration_dir,
            methods=methods,
            count=options.calibration_count,
            trt_version=options.trt_cache_version,
            data_dir=options.data_dir,
        ),
    )
    best = paths.best_method()
    result.outputs = [paths.qdq(best), paths.cache(best), paths.summary]
    return result


def fallback_stage(fp32_onnx: Path, options: BuildOptions, log: Log) -> StageResult:
    """Keep layers of the best method's Q/DQ graph out of INT8 (budget search or named layers)."""
    from resnet_deploy.quantize.int8 import Int8Paths, make_fallback_artifacts

    paths = Int8Paths(options.calibration_dir, fp32_onnx.stem)
    method = paths.best_method()
    outputs = [paths.fallback_qdq(method), paths.layer_precisions(method), paths.fallback_report(method)]
    result = run_stage(
        "fallback",
        outputs,
        {"onnx": fp32_onnx, "amax": paths.amax(method)},
        asdict(options.fallback),
        lambda: make_fallback_artifacts(
            fp32_onnx, options.calibration_dir, options.fallback, method=method, data_dir=options.data_dir, log=log
        ),
    )
    if result.details is None:
        result.details = json.loads(paths.fallback_report(method).read_text())
    return result


def parity_stage(reference: Path, artifacts: list[Path], options: BuildOptions, tag: str | None = None) -> StageResult:
    """Accuracy parity of the ONNX artifacts on ONNX Runtime against the reference (PyTorch or FP32 ONNX)."""
    from resnet_deploy.parity import parity_for_artifacts

    report_path = options.reports_dir / f"parity-{artifacts[0].stem}-{tag or options.precision}.json"
    inputs = {"reference": reference, **{f"artifact{i}": p for i, p in enumerate(artifacts)}}
    settings = {"max_drop_pp": options.max_drop_pp, "limit": options.parity_limit}
    result = run_stage(
        "parity",
        [report_path],
        inputs,
        settings,
        lambda: parity_for_artifacts(
            reference,
            artifacts,
            report_path,
            max_drop_pp=options.max_drop_pp,
            limit=options.parity_limit,
            data_dir=options.data_dir,
        ),
    )
    if result.details is None:
        result.details = json.loads(report_path.read_text())
    return result


def engine_stage(
    artifact: Path,
    options: BuildOptions,
    stages: list[StageResult],
    log: Log,
    *,
    calibration_cache: Path | None = None,
    layer_precisions: Path | None = None,
    rerun: list[str] | None = None,
    extra_metadata: dict[str, Any] | None = None,
) -> tuple[Path | None, str | None]:
    """Build the engine and check its parity where TensorRT imports; otherwise say what to run where it does.

    `calibration_cache` serves the legacy calibrator and `layer_precisions` (the INT8 fallback's) keeps its
    layers out of INT8; `rerun` is the command to suggest without TensorRT (default: `build --onnx` of the
    artifact, on the target); `extra_metadata` goes into the sidecar."""
    from resnet_deploy.trt.compat import missing_modules

    missing = missing_modules()
    if missing:
        not_run = f"TensorRT is not installed here ({' and '.join(missing)} missing), so the engine step was not run. "
        if rerun:
            return None, (
                not_run + "Install TensorRT and pycuda here (DEVICE.md in the bundle) and run again:\n"
                f"  {shlex.join(rerun)}"
            )
        command = [
            "resnet-deploy",
            "build",
            "--precision",
            options.precision,
            "--onnx",
            str(artifact),
            *options.target_flags,
        ]
        return None, (
            not_run + "The portable artifacts are ready; on the target GPU or Jetson (with TensorRT and "
            f"pycuda) run:\n  {shlex.join(command)}"
        )
    from resnet_deploy.parity import parity_for_artifacts
    from resnet_deploy.trt.builder import build_engine, planned_engine_path
    from resnet_deploy.trt.sidecar import sidecar_path

    assert options.engine is not None  # set by BuildOptions.__post_init__
    settings = options.engine if layer_precisions is None else options.engine.replace(layer_precisions=layer_precisions)
    model_name = artifact.name.removesuffix(".onnx").removesuffix(".qdq")
    engine_path = planned_engine_path(artifact, settings, options.engines_dir, model_name=model_name)
    extra_inputs = {"calibration_cache": calibration_cache, "layer_precisions": settings.layer_precisions}
    inputs = {"onnx": artifact, **{name: path for name, path in extra_inputs.items() if path is not None}}
    stages.append(
        run_stage(
            "engine",
            [engine_path, sidecar_path(engine_path)],
            inputs,
            settings.as_dict(),
            lambda: build_engine(
                artifact,
                settings,
                options.engines_dir,
                calibration_cache=calibration_cache,
                model_name=model_name,
                extra_metadata=extra_metadata,
                log=log,
            ),
        )
    )
    report_path = options.reports_dir / f"parity-{engine_path.stem}.json"
    stages.append(
        run_stage(
            "engine parity",
            [report_path],
            {"engine": engine_path, "reference": artifact},
            {"max_drop_pp": options.max_drop_pp, "limit": options.parity_limit},
            lambda: parity_for_artifacts(
                artifact,
                [engine_path],
                report_path,
                max_drop_pp=options.max_drop_pp,
                limit=options.parity_limit,
                data_dir=options.data_dir,
            ),
        )
    )
    return engine_path, None


def _stage_output(stages: list[StageResult], name: str, index: int) -> Path | None:
    """Output `index` of the stage `name` (the int8 stage's calibration cache, the fallback's layer precisions)."""
    for stage in stages:
        if stage.name == name:
            return stage.outputs[index]
    return None
