"""`build --bundle`: the engine built on the target from a verified bundle, and its parity (the pipeline's
stages, run on the bundle's graphs)."""

from __future__ import annotations

import json
from pathlib import Path

from resnet_deploy.device.bundle import Bundle, bundle_parity, open_bundle
from resnet_deploy.errors import ResnetDeployError
from resnet_deploy.fileio import folder_lock
from resnet_deploy.onnx_io import PRECISIONS
from resnet_deploy.pipeline import BuildOptions, BuildResult, Log, engine_stage
from resnet_deploy.stages import StageResult, run_stage


def build_from_bundle(options: BuildOptions, bundle_path: str | Path, log: Log = print) -> BuildResult:
    """`build --bundle`: verify the bundle (folder or .tar.gz), check its graphs' parity on ONNX Runtime, then
    build the engine of `options.precision` from its graph (the FP32 graph and its calibration cache with
    the legacy calibrator) and check the engine's parity. Engines and reports go to the usual folders,
    never into the bundle, which must stay as its manifest says."""
    if options.precision not in PRECISIONS:
        raise ResnetDeployError(f"precision must be one of {PRECISIONS}, got {options.precision!r}")
    bundle = open_bundle(bundle_path)
    log(
        f"{bundle.folder}: {len(bundle.manifest['files'])} files match manifest.json "
        f"(model {bundle.manifest['model']['name']}, made {bundle.manifest['created']})"
    )
    with folder_lock((options.engines_dir, options.reports_dir), log):
        stages = [bundle_parity_stage(bundle, options)]
        assert options.engine is not None  # set by BuildOptions.__post_init__
        legacy, int8 = options.engine.legacy_calibrator, options.precision == "int8"
        source = bundle.onnx_for("fp32" if legacy else options.precision)
        rerun = [
            "resnet-deploy",
            "build",
            "--bundle",
            str(bundle.folder),
            "--precision",
            options.precision,
            *options.target_flags,
        ]
        metadata = {
            "bundle": {"folder": str(bundle.folder), "created": bundle.manifest["created"]},
            "class_names": bundle.class_names,
        }
        engine_path, message = engine_stage(
            source,
            options,
            stages,
            log,
            calibration_cache=bundle.calibration_cache if legacy and int8 else None,
            rerun=rerun,
            extra_metadata=metadata,
        )
    return BuildResult(stages, bundle.onnx_for(options.precision), stages[0].details, engine_path, message)


def bundle_parity_stage(bundle: Bundle, options: BuildOptions) -> StageResult:
    """The bundle's FP16 and INT8 graphs against its FP32 graph on ONNX Runtime (test split)."""
    report_path = options.reports_dir / f"bundle-parity-{bundle.folder.name}.json"
    inputs = {p: bundle.onnx_for(p) for p in PRECISIONS}
    settings = {"max_drop_pp": options.max_drop_pp, "limit": options.parity_limit}
    result = run_stage(
        "bundle parity",
        [report_path],
        inputs,
        settings,
        lambda: bundle_parity(
            bundle, report_path, max_drop_pp=options.max_drop_pp, limit=options.parity_limit, data_dir=options.data_dir
        ),
    )
    if result.details is None:
        result.details = json.loads(report_path.read_text())
    return result
