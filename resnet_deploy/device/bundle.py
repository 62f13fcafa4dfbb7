"""The device bundle: what a Jetson (or any TensorRT host) needs to build and check the engine there.

A folder and a `.tar.gz` of it, nothing else (no checkpoint, no torch):

    manifest.json                    SHA-256 and role of every file, normalization, input spec, class names,
                                     calibration, workstation parity, producing versions
    DEVICE.md                        the commands to run on the board (JetPack 6)
    labels.txt                       class names, DeepStream's classifier format (one line, `;`-separated)
    parity.json                      accuracy parity on the workstation (ONNX Runtime, test split)
    model/<stem>.onnx                the FP32 graph, reference of the engine parity
    model/<stem>.fp16.onnx           FP16 graph
    model/<stem>.int8-<m>.qdq.onnx   INT8 Q/DQ graph of the calibration method that won on validation
    model/<stem>.<m>.cache           TensorRT calibration cache of that method (TensorRT <= 10, DeepStream)
    deepstream/                      FP32 graph + Softmax, one nvinfer and one deepstream-app config per precision
    wheel/resnet_deploy-<v>-py3-none-any.whl   the project's own wheel (no torch), what DEVICE.md installs

`verify_bundle` refuses a changed, missing or unlisted file by name and returns the verified paths by
role; it and `extract_bundle` import nothing beyond the standard library, so they run without torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Callable

from resnet_deploy.errors import ArtifactError
from resnet_deploy.fileio import atomic_write_json, sha256_file

MANIFEST = "manifest.json"
FORMAT, FORMAT_VERSION = "resnet-deploy-bundle", 1
FP32, FP16, INT8, CACHE = "fp32_onnx", "fp16_onnx", "int8_onnx", "calibration_cache"
LABELS, PARITY, DEVICE_README, WHEEL = "labels", "parity_report", "device_readme", "wheel"
PRECISION_ROLES = {"fp32": FP32, "fp16": FP16, "int8": INT8}
VERSIONED_PACKAGES = ("torch", "onnx", "onnxruntime", "onnxconverter-common", "numpy")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Bundle:
    """A verified bundle folder and its manifest; paths by role for `build --bundle` and parity."""

    folder: Path
    manifest: dict[str, Any]

    def path(self, role: str) -> Path:
        for relative, entry in self.manifest["files"].items():
            if entry["role"] == role:
                return self.folder / relative
        raise ArtifactError(f"{self.folder / MANIFEST}: lists no {role} file")

    def onnx_for(self, precision: str) -> Path:
        """The graph the engine of `precision` is built from (FP32, FP16 or INT8 Q/DQ)."""
        if precision not in PRECISION_ROLES:
            raise ArtifactError(f"precision must be one of {tuple(PRECISION_ROLES)}, got {precision!r}")
        return self.path(PRECISION_ROLES[precision])

    @property
    def calibration_cache(self) -> Path:
        return self.path(CACHE)

    @property
    def class_names(self) -> list[str]:
        return list(self.manifest["class_names"])


@dataclass
class BundleResult:
    bundle: Bundle
    tarball: Path | None
    stages: list


# ---------------------------------------------------------------------------------------- verification
def _inside(folder: Path, relative: str) -> Path:
    """`folder / relative` for a manifest or tar path that stays inside `folder`, else `ArtifactError`."""
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or "\\" in relative or any(p in (".", "..") for p in parts):
        raise ArtifactError(f"{folder}: unsafe path {relative!r} (absolute, '..', '.' or backslash)")
    return folder.joinpath(*parts)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{path}: missing; {folder} is not a resnet-deploy bundle") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ArtifactError(f"{path}: unreadable manifest: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a {FORMAT} manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ArtifactError(
            f"{path}: format version {manifest.get('format_version')!r}, this resnet-deploy reads {FORMAT_VERSION}"
        )
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(e, dict) and {"sha256", "role"} <= set(e) for e in files.values()
    ):
        raise ArtifactError(f"{path}: 'files' must map each path to its sha256 and role")
    return manifest


def verify_bundle(folder: str | Path) -> Bundle:
    """Check every file against the manifest; a changed, missing, unlisted or linked file raises `ArtifactError`
    naming each of them (the CLI exits 2)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"{folder}: not a bundle folder")
    manifest = read_manifest(folder)
    problems = []
    for relative, entry in manifest["files"].items():
        path = _inside(folder, relative)
        if path.is_symlink():
            problems.append(f"{relative} is a symbolic link")
        elif not path.is_file():
            problems.append(f"{relative} is missing")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{relative} changed (its sha256 differs from the manifest)")
    expected = {MANIFEST, *manifest["files"], *manifest.get("device_outputs", [])}
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_symlink() and relative not in manifest["files"]:
            problems.append(f"{relative} is a symbolic link")
        elif path.is_file() and relative not in expected:
            problems.append(f"{relative} is not listed in the manifest")
    if problems:
        raise ArtifactError(f"{folder}: bundle verification failed: " + "; ".join(problems))
    return Bundle(folder, manifest)


def _safe_members(tar_path: Path, members: list[tarfile.TarInfo]) -> str:
    """The one top-level folder of a bundle tarball whose members are plain files and folders inside it."""
    tops = set()
    for member in members:
        if not (member.isfile() or member.isdir()):
            raise ArtifactError(f"{tar_path}: member {member.name!r} is not a plain file or folder (link or device)")
        _inside(tar_path, member.name)
        tops.add(PurePosixPath(member.name).parts[0])
    if len(tops) != 1:
        raise ArtifactError(f"{tar_path}: a bundle tarball holds one top-level folder, this one {sorted(tops)}")
    return tops.pop()


def _foreign_files(target: Path) -> list[str]:
    """What in an existing bundle folder its own manifest did not write: unlisted or changed files, links,
    folders that hold no listed file (the user's notes, photos, edited configs, engines built there)."""
    manifest = read_manifest(target)
    files = manifest["files"]
    folders = {p.as_posix() for r in files for p in PurePosixPath(r).parents}
    foreign = []
    for path in sorted(target.rglob("*")):
        relative = path.relative_to(target).as_posix()
        if path.is_symlink() or not (path.is_dir() or path.is_file()):
            foreign.append(relative)
        elif path.is_dir():
            if relative not in folders:
                foreign.append(relative + "/")
        elif relative != MANIFEST and (relative not in files or sha256_file(path) != files[relative]["sha256"]):
            foreign.append(relative)
    return foreign


def install_folder(staged: Path, target: Path) -> None:
    """Move a complete folder onto `target`, replacing an older bundle there only when every file in it is
    one that bundle's manifest lists, unchanged: nothing a user wrote is ever deleted."""
    if target.exists() and not (target / MANIFEST).is_file():
        raise ArtifactError(f"{target}: exists and is not a bundle; refusing to replace it")
    if not target.exists():
        os.replace(staged, target)
        return
    foreign = _foreign_files(target)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
        raise ArtifactError(
            f"{target}: holds files its bundle did not write ({shown}); refusing to replace it "
            "(nothing was changed): move them or the folder away"
        )
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
    os.replace(target, old / target.name)
    os.replace(staged, target)
    shutil.rmtree(old)


def _same_bundle(staged: Path, target: Path) -> bool:
    """`target` already holds this very bundle (same manifest) and verifies: nothing to replace."""
    try:
        return (target / MANIFEST).read_bytes() == (staged / MANIFEST).read_bytes() and bool(verify_bundle(target))
    except (OSError, ArtifactError):
        return False


def extract_bundle(tar_path: str | Path, parent: str | Path | None = None) -> Bundle:
    """Unpack a bundle tarball into `parent` (default: beside it) and verify it.

    Every member must be a plain file or folder under one top-level folder (no absolute path, no
    '..', no link, no device); the contents are written by this code, not by `tarfile.extract`, and
    the folder appears under its final name only once complete and verified.
    """
    tar_path = Path(tar_path)
    parent = Path(parent) if parent is not None else tar_path.parent
    try:
        with tarfile.open(tar_path, "r:gz") as tar:
            members = tar.getmembers()
            top = _safe_members(tar_path, members)
            parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{top}.", dir=parent))
            try:
                for member in members:
                    destination = _inside(staging, member.name)
                    if member.isdir():
                        destination.mkdir(parents=True, exist_ok=True)
                        continue
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    source = tar.extractfile(member)
                    assert source is not None  # _safe_members lets only plain files and folders through
                    with source, open(destination, "xb") as sink:
                        shutil.copyfileobj(source, sink)
                verify_bundle(staging / top)
                if not _same_bundle(staging / top, parent / top):
                    install_folder(staging / top, parent / top)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{tar_path}: not a readable bundle tarball: {exc}") from exc
    return verify_bundle(parent / top)


def open_bundle(path: str | Path) -> Bundle:
    """A verified bundle from its folder or its `.tar.gz` (extracted beside it)."""
    path = Path(path)
    return extract_bundle(path) if path.is_file() and path.name.endswith(".tar.gz") else verify_bundle(path)


def class_names_for(artifact: str | Path) -> tuple[list[str], str]:
    """(class names, where they came from) for an artifact: those of the bundle it lies in, or (an engine that
    `build --bundle` made) was built from; else Fashion-MNIST's."""
    from resnet_deploy import data
    from resnet_deploy.fileio import read_json

    artifact = Path(artifact)
    sidecar = artifact.with_suffix(".json")
    if artifact.suffix in (".engine", ".plan") and sidecar.is_file():
        recorded = read_json(sidecar, "engine sidecar")
        if isinstance(recorded, dict) and recorded.get("class_names"):
            return list(recorded["class_names"]), f"bundle {recorded.get('bundle', {}).get('folder', '?')}"
    for folder in artifact.resolve().parents:
        if (folder / MANIFEST).is_file():
            try:
                return list(read_manifest(folder)["class_names"]), f"bundle {folder}"
            except (ArtifactError, KeyError, TypeError):
                continue  # another tool's manifest.json
    return list(data.CLASS_NAMES), "Fashion-MNIST"


def bundle_parity(
    bundle: Bundle,
    report_path: str | Path,
    *,
    max_drop_pp: float = 0.5,
    limit: int = 0,
    data_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Parity of the bundle's FP16 and INT8 graphs against its FP32 graph on ONNX Runtime (test split), with
    each artifact's workstation top-1 beside it; raises `GateFailed` like `parity_for_artifacts`."""
    from resnet_deploy.parity import parity_for_artifacts

    recorded = {a["label"]: a["top1"] for a in json.loads(bundle.path(PARITY).read_text())["artifacts"]}
    report = parity_for_artifacts(
        bundle.onnx_for("fp32"),
        [bundle.onnx_for("fp16"), bundle.onnx_for("int8")],
        report_path,
        backend="onnxruntime",
        max_drop_pp=max_drop_pp,
        limit=limit,
        data_dir=data_dir,
    )
    for entry in report["artifacts"]:
        entry["workstation_top1"] = recorded.get(entry["label"])
    atomic_write_json(report_path, report)
    return report
