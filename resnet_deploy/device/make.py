"""Making the device bundle: the portable artifacts from the pipeline's stages, the folder, its manifest and
its `.tar.gz` (see `device.bundle` for the layout and its verification)."""

from __future__ import annotations

import json
import platform
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

from resnet_deploy import __version__
from resnet_deploy.device.bundle import (
    CACHE,
    DEVICE_README,
    FORMAT,
    FORMAT_VERSION,
    FP16,
    FP32,
    INT8,
    LABELS,
    MANIFEST,
    PARITY,
    PRECISION_ROLES,
    VERSIONED_PACKAGES,
    WHEEL,
    BundleResult,
    Log,
    install_folder,
    verify_bundle,
)
from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_path, atomic_write_json, atomic_write_text, sha256_file


def producing_versions() -> dict[str, str]:
    from importlib import metadata

    versions = {"resnet-deploy": __version__, "python": platform.python_version()}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def portable_artifacts(options, log: Log) -> tuple[list, dict[str, Path], Path, Path]:
    """Run (or reuse) the export, FP16, INT8 and parity stages.

    Returns (stages, paths by role, calibration summary, source: the checkpoint or the given FP32 ONNX)."""
    from resnet_deploy import pipeline
    from resnet_deploy.parity import precision_of_artifact

    stages = []
    if options.onnx:
        fp32 = reference = Path(options.onnx)
        if precision_of_artifact(fp32) != "fp32":
            raise ArtifactError(
                f"{fp32}: a bundle starts from the FP32 ONNX, this is a {precision_of_artifact(fp32)} graph"
            )
    else:
        reference = pipeline.ensure_checkpoint(options, log)
        stages.append(pipeline.export_stage(reference, options))
        fp32 = stages[-1].outputs[0]
    fp16_stage = pipeline.precision_stage(fp32, options, "fp16")
    assert fp16_stage is not None  # None only for fp32
    stages.append(fp16_stage)
    stages.append(pipeline.int8_stage(fp32, options))
    (fp16,), (qdq, cache, summary) = stages[-2].outputs, stages[-1].outputs
    compared = [p for p in (fp32, fp16, qdq) if p != reference]
    # "bundle" names the parity report apart from the ones `build --precision` writes.
    stages.append(pipeline.parity_stage(reference, compared, options, tag="bundle"))
    report = stages[-1].outputs[0]
    return stages, {FP32: fp32, FP16: fp16, INT8: qdq, CACHE: cache, PARITY: report}, summary, reference


def _model_description(fp32: Path) -> dict[str, Any]:
    from resnet_deploy.export import manifest_path
    from resnet_deploy.onnx_info import describe_onnx

    info = describe_onnx(fp32)
    export_manifest = manifest_path(fp32)
    config = json.loads(export_manifest.read_text()).get("model") if export_manifest.is_file() else None
    spec = [
        {**t, "shape": [d if isinstance(d, int) else -1 for d in t["shape"]]} for t in info["inputs"] + info["outputs"]
    ]
    return {
        "name": fp32.stem,
        "config": config,
        "opset": info["opset"],
        "inputs": spec[: len(info["inputs"])],
        "outputs": spec[len(info["inputs"]) :],
    }


def _parity_summary(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "split": report["dataset"]["split"],
        "images": report["dataset"]["count"],
        "reference": {
            "name": report["reference"]["name"],
            "backend": report["reference"]["backend"],
            "top1": report["reference"]["top1"],
        },
        "artifacts": {
            a["label"]: {
                "precision": a["precision"],
                "top1": a["top1"],
                "agreement": a["agreement"],
                "passed": all(g["passed"] for g in a["gates"]),
            }
            for a in report["artifacts"]
        },
        "passed": report["passed"],
    }


def _stage_files(staging: Path, artifacts: dict[str, Path], stem: str, deepstream_settings) -> dict[str, str]:
    """Copy and write every file into `staging`; returns role by relative path."""
    from resnet_deploy import data
    from resnet_deploy.device import deepstream
    from resnet_deploy.device.wheel import build_wheel

    roles = {}
    for role, source in artifacts.items():
        relative = "parity.json" if role == PARITY else f"model/{source.name}"
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, staging / relative)
        roles[relative] = role
    atomic_write_text(staging / "labels.txt", deepstream.labels_text(data.CLASS_NAMES))
    roles["labels.txt"] = LABELS
    (staging / "deepstream").mkdir()
    written = deepstream.write_deepstream_files(
        staging / "deepstream",
        stem,
        artifacts[FP32],
        f"../model/{artifacts[CACHE].name}",
        "../labels.txt",
        data.MEAN,
        data.STD,
        (1, 28, 28),
        deepstream_settings,
    )
    roles.update({path.relative_to(staging).as_posix(): role for role, path in written.items()})
    wheel = build_wheel(staging / "wheel")
    roles[wheel.relative_to(staging).as_posix()] = WHEEL
    return roles


def _file_entry(staging: Path, relative: str, role: str) -> dict[str, Any]:
    path = staging / relative
    return {"role": role, "sha256": sha256_file(path), "bytes": path.stat().st_size}


def _manifest(
    staging: Path, roles: dict[str, str], artifacts: dict[str, Path], summary: Path, source: Path, deepstream_settings
) -> dict[str, Any]:
    from resnet_deploy import data
    from resnet_deploy.device import deepstream
    from resnet_deploy.quantize.cache import read_calibration_cache

    calibration = json.loads(summary.read_text())
    header, _ = read_calibration_cache(artifacts[CACHE])
    scale, offset = deepstream.preprocessing(data.MEAN, data.STD, deepstream_settings.video_range)
    limited_scale, limited_offset = deepstream.preprocessing(data.MEAN, data.STD, "limited")
    ds_onnx = next(r for r, role in roles.items() if role == "deepstream_onnx")
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "model": _model_description(artifacts[FP32]),
        "normalization": {
            "mean": data.MEAN,
            "std": data.STD,
            "formula": "(x / 255 - mean) / std, x uint8 gray",
            "polarity": "light object on a dark background",
            "deepstream": {
                "net-scale-factor": scale,
                "offsets": offset,
                "video_range": deepstream_settings.video_range,
                "limited_range": {"net-scale-factor": limited_scale, "offsets": limited_offset},
            },
        },
        "class_names": list(data.CLASS_NAMES),
        "precisions": {p: next(r for r, role in roles.items() if role == PRECISION_ROLES[p]) for p in PRECISION_ROLES},
        "calibration": {
            "method": calibration["best_method"],
            **calibration["calibration"],
            "tensorrt_version": calibration["trt_cache_version"],
            "cache_header": f"TRT-{header.version_code}-{header.algorithm}",
        },
        "parity": _parity_summary(json.loads(artifacts[PARITY].read_text())),
        "source": {"path": str(source), "sha256": sha256_file(source)},
        "versions": producing_versions(),
        "deepstream_version": deepstream.DEEPSTREAM_VERSION,
        "files": {relative: _file_entry(staging, relative, role) for relative, role in sorted(roles.items())},
        "device_outputs": [
            f"deepstream/{name}"
            for precision in deepstream.NETWORK_MODES
            for name in deepstream.device_engine_names(Path(ds_onnx).name, precision, deepstream_settings)
        ],
    }


def write_tarball(folder: Path, tar_path: Path) -> Path:
    """`folder` as `<folder name>/...` in a gzip tarball, written atomically, owners and modes normalized."""
    with atomic_path(tar_path) as tmp, tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            info = tar.gettarinfo(str(path), arcname=f"{folder.name}/{path.relative_to(folder).as_posix()}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o755 if path.is_dir() else 0o644
            if path.is_file():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    return tar_path


def make_bundle(
    options, out_dir: str | Path | None = None, *, tarball: bool = True, deepstream_settings=None, log: Log = print
) -> BundleResult:
    """Build (or reuse) the portable artifacts for `options` (a `pipeline.BuildOptions`) and write the bundle
    folder (default `bundles/<model>`) and its `.tar.gz` beside it; the folder is verified before it is moved
    into place, so a failure leaves no partial bundle."""
    from resnet_deploy.device.deepstream import DeepStreamSettings
    from resnet_deploy.device.readme import device_readme

    deepstream_settings = deepstream_settings or DeepStreamSettings()
    stages, artifacts, summary, source = portable_artifacts(options, log)
    stem = artifacts[FP32].stem
    out_dir = Path(out_dir) if out_dir else Path("bundles") / stem
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        roles = _stage_files(staging, artifacts, stem, deepstream_settings)
        manifest = _manifest(staging, roles, artifacts, summary, source, deepstream_settings)
        wheel = next(r for r, role in roles.items() if role == WHEEL)
        readme = device_readme(out_dir.name, manifest, wheel, manifest["files"][wheel]["sha256"])
        atomic_write_text(staging / "DEVICE.md", readme)
        manifest["files"] = dict(
            sorted({**manifest["files"], "DEVICE.md": _file_entry(staging, "DEVICE.md", DEVICE_README)}.items())
        )
        atomic_write_json(staging / MANIFEST, manifest)
        verify_bundle(staging)
        install_folder(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    bundle = verify_bundle(out_dir)
    tar_path = write_tarball(out_dir, out_dir.with_name(out_dir.name + ".tar.gz")) if tarball else None
    return BundleResult(bundle, tar_path, stages)
