"""The device bundle's verification and unpacking pinned exactly (whole messages, which file is named, what is
left on disk), written to kill the mutants tools/mutation.sh finds in resnet_deploy/device/bundle.py. The bundles
here are small placeholder files under a real manifest (bundle.py never parses the graphs): milliseconds, no
trained model."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest

from resnet_deploy import data
from resnet_deploy.device import bundle as bundle_module
from resnet_deploy.device.bundle import (
    Bundle,
    bundle_parity,
    class_names_for,
    extract_bundle,
    install_folder,
    open_bundle,
    read_manifest,
    verify_bundle,
)
from resnet_deploy.device.make import producing_versions, write_tarball
from resnet_deploy.errors import ArtifactError

CONTENTS = {  # relative path -> (role, bytes), the roles spelled as the manifest format fixes them
    "DEVICE.md": ("device_readme", b"# run this on the board\n"),
    "labels.txt": ("labels", b"a;b;c\n"),
    "model/tiny.onnx": ("fp32_onnx", b"fp32 graph"),
    "model/tiny.fp16.onnx": ("fp16_onnx", b"fp16 graph"),
    "model/tiny.int8-max.qdq.onnx": ("int8_onnx", b"int8 graph"),
    "model/tiny.max.cache": ("calibration_cache", b"TRT-8600-EntropyCalibration2\n"),
    "parity.json": ("parity_report", json.dumps({"artifacts": [{"label": "tiny.fp16.onnx", "top1": 0.81},
                                                              {"label": "tiny.int8-max.qdq.onnx", "top1": 0.8}]}
                                                ).encode()),
    "wheel/resnet_deploy-1.0-py3-none-any.whl": ("wheel", b"PK wheel"),
}
CLASSES = ["a", "b", "c"]


def sha(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def manifest_for(contents: dict[str, tuple[str, bytes]], **extra) -> dict:
    return {"format": "resnet-deploy-bundle", "format_version": 1, "class_names": CLASSES,
            "files": {rel: {"role": role, "sha256": sha(content), "bytes": len(content)}
                      for rel, (role, content) in contents.items()},
            "device_outputs": ["deepstream/tiny_b1_gpu0_int8.engine"], **extra}


def make_folder(parent: Path, name: str = "tiny", contents=None, **extra) -> Path:
    """A bundle folder: the placeholder files and a manifest that lists them with their checksums."""
    contents = CONTENTS if contents is None else contents
    folder = parent / name
    folder.mkdir(parents=True)
    for relative, (_, content) in contents.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_bytes(content)
    (folder / "manifest.json").write_text(json.dumps(manifest_for(contents, **extra)))
    return folder


def refusal(call, *args) -> str:
    with pytest.raises(ArtifactError) as error:
        call(*args)
    return str(error.value)


def tarball(path: Path, members: list[tuple[str, bytes | None]]) -> Path:
    """A gzip tarball of (name, content) members in this order; content None makes a folder member."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members:
            info = tarfile.TarInfo(name)
            if content is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return path


def bundle_members(top: str = "tiny", contents=None) -> list[tuple[str, bytes | None]]:
    contents = CONTENTS if contents is None else contents
    manifest = json.dumps(manifest_for(contents)).encode()
    return [(f"{top}/manifest.json", manifest)] + [(f"{top}/{rel}", content) for rel, (_, content) in contents.items()]


class ReplaceSpy:
    """Records every os.replace(source, destination) and performs it."""

    def __init__(self, monkeypatch):
        self.calls: list[tuple[Path, Path]] = []
        real = os.replace

        def replace(source, destination):
            self.calls.append((Path(source), Path(destination)))
            real(source, destination)

        monkeypatch.setattr(os, "replace", replace)


# ---- Bundle ------------------------------------------------------------------------------------------

def test_paths_by_role_and_precision(tmp_path):
    folder = make_folder(tmp_path)
    bundle = verify_bundle(folder)
    assert bundle == Bundle(folder, json.loads((folder / "manifest.json").read_text()))
    assert bundle.onnx_for("fp32") == folder / "model/tiny.onnx"
    assert bundle.onnx_for("fp16") == folder / "model/tiny.fp16.onnx"
    assert bundle.onnx_for("int8") == folder / "model/tiny.int8-max.qdq.onnx"
    assert bundle.calibration_cache == folder / "model/tiny.max.cache"
    assert bundle.path(bundle_module.LABELS) == folder / "labels.txt"
    assert bundle.path(bundle_module.PARITY) == folder / "parity.json"
    assert bundle.path(bundle_module.DEVICE_README) == folder / "DEVICE.md"
    assert bundle.path(bundle_module.WHEEL) == folder / "wheel/resnet_deploy-1.0-py3-none-any.whl"
    assert bundle.class_names == CLASSES and bundle.class_names is not bundle.manifest["class_names"]


def test_an_unknown_precision_or_a_role_the_manifest_lacks_is_refused_by_name(tmp_path):
    bundle = verify_bundle(make_folder(tmp_path, contents={"labels.txt": ("labels", b"x")}))
    assert refusal(bundle.onnx_for, "int4") == "precision must be one of ('fp32', 'fp16', 'int8'), got 'int4'"
    assert refusal(bundle.onnx_for, "fp32") == f"{tmp_path / 'tiny' / 'manifest.json'}: lists no fp32_onnx file"
    assert refusal(lambda: bundle.calibration_cache) == (
        f"{tmp_path / 'tiny' / 'manifest.json'}: lists no calibration_cache file")


def test_the_first_file_of_a_role_is_the_one_used(tmp_path):
    contents = {"model/a.onnx": ("fp32_onnx", b"a"), "model/b.onnx": ("fp32_onnx", b"b")}
    assert verify_bundle(make_folder(tmp_path, contents=contents)).onnx_for("fp32") == tmp_path / "tiny/model/a.onnx"


# ---- manifest ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("{not json", "unreadable manifest: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    (b"\xff\xfe{}", "unreadable manifest: 'utf-8' codec can't decode byte 0xff in position 0: invalid start byte"),
    ("[1, 2]", "not a resnet-deploy-bundle manifest"),
    ('{"format": "other", "format_version": 1, "files": {}}', "not a resnet-deploy-bundle manifest"),
    ('{"format_version": 1, "files": {}}', "not a resnet-deploy-bundle manifest"),
    ('{"format": "resnet-deploy-bundle", "format_version": 2, "files": {}}',
     "format version 2, this resnet-deploy reads 1"),
    ('{"format": "resnet-deploy-bundle", "format_version": "1", "files": {}}',
     "format version '1', this resnet-deploy reads 1"),
    ('{"format": "resnet-deploy-bundle", "files": {}}', "format version None, this resnet-deploy reads 1"),
    ('{"format": "resnet-deploy-bundle", "format_version": 1}', "'files' must map each path to its sha256 and role"),
    ('{"format": "resnet-deploy-bundle", "format_version": 1, "files": ["a"]}',
     "'files' must map each path to its sha256 and role"),
    ('{"format": "resnet-deploy-bundle", "format_version": 1, "files": {"a": "0"}}',
     "'files' must map each path to its sha256 and role"),
    ('{"format": "resnet-deploy-bundle", "format_version": 1, "files": {"a": {"sha256": "0"}}}',
     "'files' must map each path to its sha256 and role"),
    ('{"format": "resnet-deploy-bundle", "format_version": 1, "files": {"a": {"role": "labels"}}}',
     "'files' must map each path to its sha256 and role"),
    ('{"format": "resnet-deploy-bundle", "format_version": 1, '
     '"files": {"a": {"sha256": "0", "role": "labels"}, "b": {"sha256": "0"}}}',
     "'files' must map each path to its sha256 and role"),
])
def test_a_malformed_manifest_is_refused_in_full(tmp_path, text, message):
    path = tmp_path / "manifest.json"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    assert refusal(read_manifest, tmp_path) == f"{path}: {message}"


def test_a_missing_or_unreadable_manifest(tmp_path):
    assert refusal(read_manifest, tmp_path) == (
        f"{tmp_path / 'manifest.json'}: missing; {tmp_path} is not a resnet-deploy bundle")
    (tmp_path / "manifest.json").mkdir()
    assert refusal(read_manifest, tmp_path).startswith(f"{tmp_path / 'manifest.json'}: unreadable manifest: [Errno")


def test_entries_need_exactly_sha256_and_role(tmp_path):
    manifest = {"format": "resnet-deploy-bundle", "format_version": 1,
                "files": {"a": {"sha256": "0", "role": "labels"}, "b": {"sha256": "0", "role": "x", "bytes": 3}}}
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    assert read_manifest(tmp_path) == manifest


# ---- verify_bundle -----------------------------------------------------------------------------------

def test_a_bundle_verifies_with_or_without_device_outputs(tmp_path):
    folder = make_folder(tmp_path)
    (folder / "deepstream").mkdir()
    (folder / "deepstream/tiny_b1_gpu0_int8.engine").write_bytes(b"built on the board")
    assert verify_bundle(str(folder)).folder == folder
    bare = make_folder(tmp_path / "bare", contents={"labels.txt": ("labels", b"x")})
    manifest = json.loads((bare / "manifest.json").read_text())
    del manifest["device_outputs"]
    (bare / "manifest.json").write_text(json.dumps(manifest))
    (bare / "empty-folder").mkdir()
    assert verify_bundle(bare).manifest == manifest


def test_not_a_folder(tmp_path):
    assert refusal(verify_bundle, tmp_path / "nothing") == f"{tmp_path / 'nothing'}: not a bundle folder"
    (tmp_path / "file").write_text("x")
    assert refusal(verify_bundle, tmp_path / "file") == f"{tmp_path / 'file'}: not a bundle folder"


def test_every_problem_is_named_in_one_message(tmp_path):
    """A changed, a missing, a linked listed file, a listed folder, an unlisted file and an unlisted link: each
    named once, the listed ones in manifest order, then the rest sorted."""
    folder = make_folder(tmp_path)
    (folder / "labels.txt").write_bytes(b"a;b;X\n")
    (folder / "model/tiny.fp16.onnx").unlink()
    (folder / "parity.json").unlink()
    (folder / "parity.json").symlink_to(folder / "DEVICE.md")
    shutil.rmtree(folder / "wheel")
    (folder / "wheel/resnet_deploy-1.0-py3-none-any.whl").mkdir(parents=True)
    (folder / "model/extra.onnx").write_bytes(b"x")
    (folder / "notes.txt").symlink_to(folder / "DEVICE.md")
    (folder / "zz").symlink_to(folder / "model")
    (folder / "deepstream").mkdir()
    (folder / "deepstream/tiny_b8_gpu0_int8.engine").write_bytes(b"plan")
    assert refusal(verify_bundle, folder) == (
        f"{folder}: bundle verification failed: labels.txt changed (its sha256 differs from the manifest); "
        "model/tiny.fp16.onnx is missing; parity.json is a symbolic link; "
        "wheel/resnet_deploy-1.0-py3-none-any.whl is missing; "
        "deepstream/tiny_b8_gpu0_int8.engine is not listed in the manifest; "
        "model/extra.onnx is not listed in the manifest; notes.txt is a symbolic link; zz is a symbolic link")


@pytest.mark.parametrize("relative", ["../outside.onnx", "/etc/passwd", "model\\tiny.onnx", "model/../x", ".", "",
                                      "model/.."])
def test_a_manifest_path_outside_the_folder_is_refused(tmp_path, relative):
    folder = make_folder(tmp_path)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["files"][relative] = {"sha256": "0", "role": "fp32_onnx"}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    assert refusal(verify_bundle, folder) == (
        f"{folder}: unsafe path {relative!r} (absolute, '..', '.' or backslash)")


def test_a_safe_relative_path_resolves_inside(tmp_path):
    assert bundle_module._inside(tmp_path, "a/b.onnx") == tmp_path / "a" / "b.onnx"
    assert bundle_module._inside(tmp_path, "a//b.onnx") == tmp_path / "a" / "b.onnx"


# ---- extract_bundle ----------------------------------------------------------------------------------

def test_a_written_tarball_holds_normalized_members_and_unpacks_to_the_same_bundle(tmp_path, monkeypatch):
    folder = make_folder(tmp_path / "src")
    tar_path = write_tarball(folder, tmp_path / "tiny.tar.gz")
    with tarfile.open(tar_path) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == sorted(["tiny/manifest.json", "tiny/model", "tiny/wheel"] + [f"tiny/{r}" for r in CONTENTS])
    assert all((m.uid, m.gid, m.uname, m.gname) == (0, 0, "", "") for m in members.values())
    assert {m.mode for m in members.values() if m.isdir()} == {0o755}
    assert {m.mode for m in members.values() if m.isfile()} == {0o644}
    spy = ReplaceSpy(monkeypatch)
    out = tmp_path / "a" / "b"
    unpacked = extract_bundle(str(tar_path), str(out))
    assert unpacked == verify_bundle(out / "tiny") and unpacked.manifest == verify_bundle(folder).manifest
    assert {p.relative_to(out).as_posix() for p in out.rglob("*")} == {
        "tiny", "tiny/manifest.json", "tiny/model", "tiny/wheel", *(f"tiny/{r}" for r in CONTENTS)}
    ((source, destination),) = spy.calls
    assert destination == out / "tiny" and source.name == "tiny" and source.parent.parent == out
    assert re.fullmatch(r"\.tiny\..+", source.parent.name), "staged beside the target under a hidden name"


def test_by_default_the_tarball_unpacks_beside_itself(tmp_path):
    tar_path = write_tarball(make_folder(tmp_path / "src"), tmp_path / "here" / "tiny.tar.gz")
    assert extract_bundle(tar_path).folder == tmp_path / "here" / "tiny"
    assert sorted(p.name for p in (tmp_path / "here").iterdir()) == ["tiny", "tiny.tar.gz"]


def test_members_in_any_order_without_folder_entries(tmp_path):
    """Files before their folders, folders nested without their parents' entries, files with no folder entry."""
    members = sorted(bundle_members(), key=lambda m: m[0] != "tiny/model/tiny.onnx")
    assert members[0][0] == "tiny/model/tiny.onnx"
    members += [("tiny/model", None), ("tiny/extra/deep", None), ("tiny", None)]
    out = tmp_path / "out"
    out.mkdir()
    bundle = extract_bundle(tarball(tmp_path / "t.tar.gz", members), out)
    assert bundle.folder == out / "tiny" and (out / "tiny/extra/deep").is_dir()
    assert (out / "tiny/model/tiny.onnx").read_bytes() == b"fp32 graph"


def test_a_duplicate_member_is_refused(tmp_path):
    members = bundle_members() + [("tiny/labels.txt", b"a;b;c\n")]
    out = tmp_path / "out"
    message = refusal(extract_bundle, tarball(tmp_path / "t.tar.gz", members), out)
    assert message.startswith(f"{tmp_path / 't.tar.gz'}: not a readable bundle tarball: [Errno 17] File exists")
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("members, message", [
    ([("tiny/../evil.txt", b"x")], "unsafe path 'tiny/../evil.txt' (absolute, '..', '.' or backslash)"),
    ([("/tmp/evil.txt", b"x")], "unsafe path '/tmp/evil.txt' (absolute, '..', '.' or backslash)"),
    ([("tiny/a", b"x"), ("other/b", b"y"), ("more", None)],
     "a bundle tarball holds one top-level folder, this one ['more', 'other', 'tiny']"),
    ([], "a bundle tarball holds one top-level folder, this one []"),
])
def test_unsafe_tarballs_are_refused_before_anything_is_written(tmp_path, members, message):
    tar_path = tarball(tmp_path / "bad.tar.gz", members)
    assert refusal(extract_bundle, tar_path, tmp_path / "out") == f"{tar_path}: {message}"
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


@pytest.mark.parametrize("kind, what", [(tarfile.SYMTYPE, "link"), (tarfile.LNKTYPE, "hard link"),
                                        (tarfile.FIFOTYPE, "fifo"), (tarfile.CHRTYPE, "device")])
def test_links_and_devices_in_a_tarball_are_refused(tmp_path, kind, what):
    path = tmp_path / "bad.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, content in bundle_members():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
        info = tarfile.TarInfo("tiny/x")
        info.type, info.linkname = kind, "tiny/labels.txt"
        tar.addfile(info)
    assert refusal(extract_bundle, path, tmp_path / "out") == (
        f"{path}: member 'tiny/x' is not a plain file or folder (link or device)"), what
    assert not (tmp_path / "out").exists()


def test_a_tampered_tarball_leaves_nothing_behind(tmp_path):
    members = [(n, b"a;b;X\n" if n == "tiny/labels.txt" else c) for n, c in bundle_members()]
    out = tmp_path / "out"
    message = refusal(extract_bundle, tarball(tmp_path / "t.tar.gz", members), out)
    assert re.fullmatch(re.escape(f"{out}/.tiny.") + r"[^/]+/tiny: bundle verification failed: labels\.txt changed "
                        r"\(its sha256 differs from the manifest\)", message), message
    assert list(out.iterdir()) == []


@pytest.mark.parametrize("content", [b"\x1f\x8b not gzip", b"", b"plain text, not a tarball"])
def test_an_unreadable_tarball_is_refused_by_name(tmp_path, content):
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(content)
    assert refusal(extract_bundle, path, tmp_path / "out").startswith(f"{path}: not a readable bundle tarball: ")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("mode", ["w", "w:bz2", "w:xz"])
def test_only_a_gzip_tarball_is_a_bundle_tarball(tmp_path, mode):
    path = tmp_path / "tiny.tar.gz"
    with tarfile.open(path, mode) as tar:
        for name, content in bundle_members():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    assert refusal(extract_bundle, path, tmp_path / "out") == (
        f"{path}: not a readable bundle tarball: not a gzip file")
    assert not (tmp_path / "out").exists()


def test_a_truncated_or_missing_tarball_is_refused_by_name(tmp_path):
    whole = write_tarball(make_folder(tmp_path / "src"), tmp_path / "whole.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(whole[: len(whole) // 2])
    for name in ("cut.tar.gz", "missing.tar.gz"):
        message = refusal(extract_bundle, tmp_path / name, tmp_path / "out")
        assert message.startswith(f"{tmp_path / name}: not a readable bundle tarball: ")
    assert not (tmp_path / "out").exists()


# ---- replacing an existing folder --------------------------------------------------------------------

def test_the_same_bundle_already_unpacked_is_kept_as_it_is(tmp_path, monkeypatch):
    tar_path = write_tarball(make_folder(tmp_path / "src"), tmp_path / "tiny.tar.gz")
    first = extract_bundle(tar_path, tmp_path / "out")
    inode = first.folder.stat().st_ino
    spy = ReplaceSpy(monkeypatch)
    again = extract_bundle(tar_path, tmp_path / "out")
    assert again == first and again.folder.stat().st_ino == inode and spy.calls == []
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny"]


def test_an_older_bundle_of_only_its_own_files_is_replaced_beside_itself(tmp_path, monkeypatch):
    older = make_folder(tmp_path / "out", created="2000")
    tar_path = write_tarball(make_folder(tmp_path / "src", created="2026"), tmp_path / "tiny.tar.gz")
    spy = ReplaceSpy(monkeypatch)
    unpacked = extract_bundle(tar_path, tmp_path / "out")
    assert unpacked.folder == older and unpacked.manifest["created"] == "2026"
    (aside, staged) = spy.calls
    assert aside[0] == older and aside[1].name == "tiny" and aside[1].parent.parent == tmp_path / "out"
    assert re.fullmatch(r"\.tiny\.old-.+", aside[1].parent.name)
    assert staged[1] == older and re.fullmatch(r"\.tiny\..+", staged[0].parent.name)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny"]


def test_the_same_manifest_over_a_changed_folder_is_not_kept(tmp_path):
    """The manifests match byte for byte but the unpacked folder's labels were edited: the user's edit is
    refused by name, never silently kept as verified nor overwritten."""
    tar_path = write_tarball(make_folder(tmp_path / "src"), tmp_path / "tiny.tar.gz")
    target = make_folder(tmp_path / "out")
    (target / "labels.txt").write_bytes(b"edited")
    message = refusal(extract_bundle, tar_path, tmp_path / "out")
    assert message == (f"{target}: holds files its bundle did not write (labels.txt); refusing to replace it "
                       "(nothing was changed): move them or the folder away")
    assert (target / "labels.txt").read_bytes() == b"edited"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["tiny"]


def test_user_files_are_never_deleted_and_are_named(tmp_path):
    target = make_folder(tmp_path / "out", created="2000")
    (target / "notes.txt").write_text("mine")
    (target / "photos").mkdir()
    (target / "photos" / "cat.png").write_bytes(b"png")
    (target / "model" / "mine").mkdir()
    (target / "link").symlink_to(target / "labels.txt")
    (target / "deepstream").mkdir()
    (target / "deepstream/tiny_b1_gpu0_int8.engine").write_bytes(b"built on the board")
    os.mkfifo(target / "pipe")
    (target / "model/tiny.onnx").write_bytes(b"edited")
    before = sorted(p.relative_to(target).as_posix() for p in target.rglob("*"))
    staged = make_folder(tmp_path / "staging", created="2026")
    message = refusal(install_folder, staged, target)
    assert message == (f"{target}: holds files its bundle did not write (deepstream/, "
                       "deepstream/tiny_b1_gpu0_int8.engine, link, model/mine/, model/tiny.onnx, notes.txt, photos/, "
                       "photos/cat.png and 1 more); refusing to replace it (nothing was changed): move them or the "
                       "folder away")
    assert sorted(p.relative_to(target).as_posix() for p in target.rglob("*")) == before
    assert (target / "notes.txt").read_text() == "mine" and verify_bundle(staged).folder == staged


def test_links_in_an_older_bundle_are_foreign_even_to_identical_content(tmp_path):
    """A listed file replaced by a link to an identical copy, a link to a folder and a dangling link: each named
    as it is (no trailing '/' for the linked folder), none followed."""
    outside = tmp_path / "outside"
    (outside / "shots").mkdir(parents=True)
    (outside / "labels.txt").write_bytes(CONTENTS["labels.txt"][1])
    target = make_folder(tmp_path / "out", created="2000")
    (target / "labels.txt").unlink()
    (target / "labels.txt").symlink_to(outside / "labels.txt")
    (target / "shots").symlink_to(outside / "shots")
    (target / "dangling").symlink_to(tmp_path / "nowhere")
    staged = make_folder(tmp_path / "staging", created="2026")
    assert refusal(install_folder, staged, target) == (
        f"{target}: holds files its bundle did not write (dangling, labels.txt, shots); refusing to replace it "
        "(nothing was changed): move them or the folder away")
    assert (outside / "labels.txt").read_bytes() == CONTENTS["labels.txt"][1] and (outside / "shots").is_dir()


@pytest.mark.parametrize("count, shown", [
    (8, "u0, u1, u2, u3, u4, u5, u6, u7"),
    (9, "u0, u1, u2, u3, u4, u5, u6, u7 and 1 more"),
    (11, "u0, u1, u10, u2, u3, u4, u5, u6 and 3 more"),
])
def test_at_most_eight_foreign_files_are_named(tmp_path, count, shown):
    target = make_folder(tmp_path / "out", contents={"labels.txt": ("labels", b"x")})
    for i in range(count):
        (target / f"u{i}").write_text("mine")
    staged = make_folder(tmp_path / "staging", contents={"labels.txt": ("labels", b"y")})
    assert refusal(install_folder, staged, target) == (
        f"{target}: holds files its bundle did not write ({shown}); refusing to replace it (nothing was changed): "
        "move them or the folder away")


@pytest.mark.parametrize("make_target", [
    lambda t: (t.mkdir(), (t / "thesis.txt").write_text("keep me")),
    lambda t: t.write_text("a file"),
    lambda t: (t.mkdir(), (t / "manifest.json").mkdir()),
])
def test_a_target_that_is_not_a_bundle_is_never_replaced(tmp_path, make_target):
    target = tmp_path / "tiny"
    make_target(target)
    staged = make_folder(tmp_path / "staging")
    assert refusal(install_folder, staged, target) == f"{target}: exists and is not a bundle; refusing to replace it"
    assert staged.is_dir() and sorted(os.listdir(tmp_path)) == ["staging", "tiny"]


def test_a_target_with_a_malformed_manifest_is_never_replaced(tmp_path):
    target = tmp_path / "tiny"
    target.mkdir()
    (target / "manifest.json").write_text("{}")
    staged = make_folder(tmp_path / "staging")
    assert refusal(install_folder, staged, target) == f"{target / 'manifest.json'}: not a resnet-deploy-bundle manifest"
    assert os.listdir(target) == ["manifest.json"]


def test_install_moves_onto_a_new_target(tmp_path):
    staged = make_folder(tmp_path / "staging")
    install_folder(staged, tmp_path / "tiny")
    assert not staged.exists() and verify_bundle(tmp_path / "tiny").folder == tmp_path / "tiny"


# ---- open_bundle, class names, versions --------------------------------------------------------------

def test_open_bundle_unpacks_only_a_tar_gz_file(tmp_path):
    folder = make_folder(tmp_path / "src")
    assert open_bundle(str(folder)).folder == folder
    tar_path = write_tarball(folder, tmp_path / "tiny.tar.gz")
    assert open_bundle(tar_path).folder == tmp_path / "tiny"
    odd = make_folder(tmp_path, name="odd.tar.gz")
    assert open_bundle(odd).folder == odd
    shutil.copyfile(tar_path, tmp_path / "tiny.tgz")
    assert refusal(open_bundle, tmp_path / "tiny.tgz") == f"{tmp_path / 'tiny.tgz'}: not a bundle folder"


def test_class_names_come_from_the_engine_sidecar_then_the_bundle_then_fashion_mnist(tmp_path):
    engines = tmp_path / "engines"
    engines.mkdir()
    for suffix in (".engine", ".plan"):
        (engines / f"m{suffix}").write_bytes(b"plan")
    (engines / "m.json").write_text(json.dumps({"class_names": ["x", "y"], "bundle": {"folder": "/b/tiny"}}))
    assert class_names_for(engines / "m.engine") == (["x", "y"], "bundle /b/tiny")
    assert class_names_for(str(engines / "m.plan")) == (["x", "y"], "bundle /b/tiny")
    (engines / "m.json").write_text(json.dumps({"class_names": ["x"]}))
    assert class_names_for(engines / "m.engine") == (["x"], "bundle ?")
    fashion = (list(data.CLASS_NAMES), "Fashion-MNIST")
    for sidecar in ({"class_names": []}, ["x"], {"bundle": {"folder": "/b"}}):
        (engines / "m.json").write_text(json.dumps(sidecar))
        assert class_names_for(engines / "m.engine") == fashion
    (engines / "m.json").write_text("{broken")
    with pytest.raises(ArtifactError, match=r"m\.json: engine sidecar is not valid JSON"):
        class_names_for(engines / "m.engine")
    (engines / "m.onnx").write_bytes(b"graph")
    assert class_names_for(engines / "m.onnx") == fashion, "a graph's .json is not an engine sidecar"
    folder = make_folder(tmp_path)
    (folder / "model/tiny.engine").write_bytes(b"plan")
    assert class_names_for(folder / "model/tiny.onnx") == (CLASSES, f"bundle {folder}")
    assert class_names_for(folder / "model/tiny.engine") == (CLASSES, f"bundle {folder}")


@pytest.mark.parametrize("inner", [{"format": "other"}, {"format": "resnet-deploy-bundle", "format_version": 1,
                                                         "files": {}}, {"format": "resnet-deploy-bundle",
                                                                        "format_version": 1, "files": {},
                                                                        "class_names": 3}])
def test_another_tools_manifest_is_skipped_for_the_bundle_above_it(tmp_path, inner):
    folder = make_folder(tmp_path)
    (folder / "model/manifest.json").write_text(json.dumps(inner))
    assert class_names_for(folder / "model/tiny.onnx") == (CLASSES, f"bundle {folder}")


def test_the_manifest_records_the_versions_of_the_producing_packages():
    from importlib import metadata

    versions = producing_versions()
    assert set(versions) == {"resnet-deploy", "python", "torch", "onnx", "onnxruntime", "onnxconverter-common", "numpy"}
    assert versions["onnxconverter-common"] == metadata.version("onnxconverter-common")


# ---- bundle_parity -----------------------------------------------------------------------------------

def test_bundle_parity_runs_the_bundles_graphs_on_onnxruntime_and_records_workstation_top1(tmp_path, monkeypatch):
    from resnet_deploy import parity

    calls = []

    def fake(reference, candidates, report_path, **options):
        calls.append((reference, candidates, report_path, options))
        return {"passed": True, "artifacts": [{"label": "tiny.fp16.onnx"}, {"label": "tiny.int8-max.qdq.onnx"},
                                              {"label": "unknown.onnx"}]}

    monkeypatch.setattr(parity, "parity_for_artifacts", fake)
    bundle = verify_bundle(make_folder(tmp_path))
    report_path = tmp_path / "reports" / "parity.json"
    report = bundle_parity(bundle, report_path)
    folder = bundle.folder
    assert calls == [(folder / "model/tiny.onnx", [folder / "model/tiny.fp16.onnx",
                                                   folder / "model/tiny.int8-max.qdq.onnx"], report_path,
                      {"backend": "onnxruntime", "max_drop_pp": 0.5, "limit": 0, "data_dir": None})]
    assert [a["workstation_top1"] for a in report["artifacts"]] == [0.81, 0.8, None]
    assert json.loads(report_path.read_text()) == report
    bundle_parity(bundle, report_path, max_drop_pp=1.5, limit=300, data_dir=tmp_path)
    assert calls[1][3] == {"backend": "onnxruntime", "max_drop_pp": 1.5, "limit": 300, "data_dir": tmp_path}
