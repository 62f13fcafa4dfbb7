"""The device bundle: contents and manifest, tarball round trip, refusing tampered or unsafe bundles by name,
and verification plus parity without torch."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from resnet_deploy.device.bundle import MANIFEST, extract_bundle, open_bundle, verify_bundle
from resnet_deploy.device.make import make_bundle
from resnet_deploy.cli import main
from resnet_deploy.errors import ArtifactError
from resnet_deploy.onnx_info import describe_onnx
from resnet_deploy.pipeline import BuildOptions
from resnet_deploy.quantize.cache import read_calibration_cache

pytestmark = pytest.mark.runtime

ROLES = {"fp32_onnx", "fp16_onnx", "int8_onnx", "calibration_cache", "labels", "parity_report", "device_readme",
         "deepstream_onnx", "deepstream_config_fp32", "deepstream_config_fp16", "deepstream_config_int8",
         "deepstream_app_fp32", "deepstream_app_fp16", "deepstream_app_int8", "wheel"}
CHECKOUT = Path(__file__).resolve().parent.parent


def run_cli(*args) -> int:
    with pytest.raises(SystemExit) as exit_info:
        main([str(a) for a in args])
    return exit_info.value.code


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bundle-work")


@pytest.fixture(scope="module")
def made(workdir, trained_onnx):
    """`resnet-deploy bundle --onnx` on the trained tiny model, run from a scratch working folder."""
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)
        code = run_cli("bundle", "--onnx", trained_onnx, "--out", "out/tiny", "--calibration-method", "max",
                       "--calibration-count", "64")
    assert code == 0
    return workdir / "out" / "tiny"


@pytest.fixture
def copy(made, tmp_path) -> Path:
    return Path(shutil.copytree(made, tmp_path / "tiny"))


def test_bundle_holds_what_the_device_needs_and_nothing_else(made):
    bundle = verify_bundle(made)
    files = bundle.manifest["files"]
    assert {entry["role"] for entry in files.values()} == ROLES and len(files) == len(ROLES)
    on_disk = {p.relative_to(made).as_posix() for p in made.rglob("*") if p.is_file()}
    assert on_disk == set(files) | {MANIFEST}
    assert not any(name.endswith((".pt", ".pth", ".engine")) for name in on_disk)
    for relative, entry in files.items():
        content = (made / relative).read_bytes()
        assert entry["sha256"] == hashlib.sha256(content).hexdigest() and entry["bytes"] == len(content)
    for precision in ("fp32", "fp16", "int8"):
        described = describe_onnx(bundle.onnx_for(precision))["precision"]
        assert described.startswith(precision) and bundle.manifest["precisions"][precision] in files
    header, scales = read_calibration_cache(bundle.calibration_cache)
    assert bundle.manifest["calibration"]["cache_header"] == f"TRT-{header.version_code}-{header.algorithm}" and scales
    assert bundle.manifest["calibration"]["method"] == "max" and bundle.manifest["calibration"]["split"] == "train"
    assert bundle.manifest["model"]["inputs"] == [{"name": "input", "dtype": "float32", "shape": [-1, 1, 28, 28]}]
    assert bundle.manifest["normalization"]["mean"] == 0.286 and len(bundle.class_names) == 10
    assert {"resnet-deploy", "python", "onnx", "onnxruntime", "numpy"} <= set(bundle.manifest["versions"])
    assert bundle.manifest["parity"]["passed"] and bundle.manifest["parity"]["images"] == 10000
    readme = bundle.path("device_readme").read_text()
    wheel = bundle.path("wheel")
    for command in ("python3 -m venv --system-site-packages", "verify-bundle ~/tiny.tar.gz --parity",
                    "build --bundle ~/tiny --precision int8", "python3-libnvinfer", "deepstream_app_tiny_int8.txt",
                    f'pip install "$HOME/resnet-deploy-wheel/{wheel.name}[images]"', files[f"wheel/{wheel.name}"]["sha256"],
                    "--stronglyTyped", "--noTF32", "JetPack 6.1 and 6.2"):
        assert command in readme


def test_the_bundle_carries_a_torch_free_wheel_of_the_project(made):
    from resnet_deploy.device.wheel import required_dependencies

    wheel = verify_bundle(made).path("wheel")
    assert wheel.name.startswith("resnet_deploy-") and wheel.name.endswith("-py3-none-any.whl")
    required = required_dependencies(wheel)
    assert {"numpy", "onnx", "onnxruntime", "click"} <= set(required) and "torch" not in required
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "resnet_deploy/cli/__init__.py" in names and "resnet_deploy/device/bundle.py" in names
    assert not any(n.startswith("tests/") for n in names)


def test_tarball_unpacks_to_the_same_verified_bundle(made, tmp_path):
    tarball = made.with_name("tiny.tar.gz")
    with tarfile.open(tarball) as tar:
        assert all(m.name.startswith("tiny/") and (m.isfile() or m.isdir()) and m.uid == 0 for m in tar.getmembers())
    unpacked = extract_bundle(tarball, tmp_path)
    assert unpacked.folder == tmp_path / "tiny" and unpacked.manifest == verify_bundle(made).manifest
    again = open_bundle(shutil.copyfile(tarball, tmp_path / "tiny.tar.gz"))  # replaces the earlier unpacked copy
    assert again.folder == tmp_path / "tiny" and not list(tmp_path.glob(".tiny*"))


@pytest.mark.parametrize("tamper, message", [
    (lambda root: (root / "model/tiny.int8-max.qdq.onnx").write_bytes(
        (root / "model/tiny.int8-max.qdq.onnx").read_bytes()[:-1] + b"\0"), "model/tiny.int8-max.qdq.onnx changed"),
    (lambda root: (root / "labels.txt").unlink(), "labels.txt is missing"),
    (lambda root: (root / "model/extra.onnx").write_bytes(b"x"), "model/extra.onnx is not listed"),
    (lambda root: (root / "notes.txt").symlink_to(root / "labels.txt"), "notes.txt is a symbolic link"),
    (lambda root: (root / "deepstream/tiny.deepstream.onnx_b8_gpu0_int8.engine").write_bytes(b"plan"),
     "deepstream/tiny.deepstream.onnx_b8_gpu0_int8.engine is not listed"),
])
def test_a_tampered_bundle_is_refused_naming_the_file_and_the_cli_exits_2(copy, tamper, message, capsys):
    tamper(copy)
    with pytest.raises(ArtifactError, match=message):
        verify_bundle(copy)
    assert run_cli("verify-bundle", copy) == 2
    err = capsys.readouterr().err
    assert message in " ".join(err.split()) and "Traceback" not in err


def test_engines_deepstream_writes_on_the_device_are_accepted(copy):
    (copy / "deepstream/tiny.deepstream.onnx_b1_gpu0_int8.engine").write_bytes(b"plan")
    (copy / "deepstream/tiny.deepstream.onnx_b1_dla0_fp16.engine").write_bytes(b"plan")
    assert verify_bundle(copy).folder == copy


@pytest.mark.parametrize("edit, message", [
    (lambda m: "{not json", "unreadable manifest"),
    (lambda m: json.dumps({**m, "format": "other"}), "not a resnet-deploy-bundle manifest"),
    (lambda m: json.dumps({**m, "format_version": 99}), "format version 99"),
    (lambda m: json.dumps({**m, "files": {"../outside.onnx": {"sha256": "0", "role": "fp32_onnx"}}}), "unsafe path"),
    (lambda m: json.dumps({**m, "files": {"/etc/passwd": {"sha256": "0", "role": "fp32_onnx"}}}), "unsafe path"),
    (lambda m: json.dumps({**m, "files": ["labels.txt"]}), "'files' must map"),
])
def test_a_malformed_manifest_is_refused(copy, edit, message):
    manifest_path = copy / MANIFEST
    manifest_path.write_text(edit(json.loads(manifest_path.read_text())))
    with pytest.raises(ArtifactError, match=message):
        verify_bundle(copy)


def test_missing_manifest_and_missing_folder(tmp_path):
    with pytest.raises(ArtifactError, match="not a bundle folder"):
        verify_bundle(tmp_path / "nothing")
    with pytest.raises(ArtifactError, match="manifest.json: missing"):
        verify_bundle(tmp_path)


def _tarball(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for info, content in members:
            info.size = len(content or b"")
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    return path


def _member(name: str, kind=tarfile.REGTYPE, linkname: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


@pytest.mark.parametrize("members, message", [
    ([(_member("tiny/../evil.txt"), b"x")], "unsafe path"),
    ([(_member("/tmp/evil.txt"), b"x")], "unsafe path"),
    ([(_member("tiny/link", tarfile.SYMTYPE, "/etc/passwd"), None)], "not a plain file or folder"),
    ([(_member("tiny/hard", tarfile.LNKTYPE, "tiny/labels.txt"), None)], "not a plain file or folder"),
    ([(_member("tiny/labels.txt"), b"a"), (_member("other/x"), b"b")], "one top-level folder"),
])
def test_unsafe_tarballs_are_refused_before_anything_is_written(tmp_path, members, message):
    tarball = _tarball(tmp_path / "bad.tar.gz", members)
    with pytest.raises(ArtifactError, match=message):
        extract_bundle(tarball, tmp_path / "out")
    assert not (tmp_path / "evil.txt").exists() and not list((tmp_path / "out").glob("*"))


def test_a_tarball_of_a_tampered_bundle_leaves_nothing_behind(copy, tmp_path):
    (copy / "labels.txt").write_text("changed\n")
    from resnet_deploy.device.make import write_tarball

    tarball = write_tarball(copy, tmp_path / "tiny.tar.gz")
    with pytest.raises(ArtifactError, match="labels.txt changed"):
        extract_bundle(tarball, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []
    (tmp_path / "corrupt.tar.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(ArtifactError, match="corrupt.tar.gz: not a readable bundle tarball"):
        extract_bundle(tmp_path / "corrupt.tar.gz")


def test_a_folder_that_is_not_a_bundle_is_never_replaced(workdir, trained_onnx, monkeypatch):
    monkeypatch.chdir(workdir)
    precious = workdir / "mine"
    precious.mkdir()
    (precious / "thesis.txt").write_text("keep me")
    options = BuildOptions(onnx=trained_onnx, calibration_method="max", calibration_count=64)
    with pytest.raises(ArtifactError, match="mine: exists and is not a bundle"):
        make_bundle(options, precious, log=lambda _: None)
    assert (precious / "thesis.txt").read_text() == "keep me"
    assert [p.name for p in workdir.iterdir() if p.name.startswith(".mine")] == []


def test_verification_and_onnxruntime_parity_need_no_torch(made, tmp_path, data_dir):
    """The device path with torch made unimportable: the CLI verifies the bundle and runs parity on it."""
    code = ("import sys; sys.modules['torch'] = None; from resnet_deploy.cli import main; "
            f"main(['verify-bundle', {str(made.with_name('tiny.tar.gz'))!r}, '--parity', '--limit', '500', "
            f"'--json', {str(tmp_path / 'parity.json')!r}, '--data-dir', {str(data_dir)!r}])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "files match manifest.json" in result.stdout
    report = json.loads((tmp_path / "parity.json").read_text())
    assert report["passed"] and report["dataset"]["count"] == 500
    assert [a["precision"] for a in report["artifacts"]] == ["fp16", "int8"]
    assert all(a["workstation_top1"] is not None for a in report["artifacts"])


@pytest.mark.slow
def test_bundle_from_a_checkpoint_uses_the_pytorch_reference(tmp_path, trained_checkpoint, data_dir):
    options = BuildOptions(checkpoint=trained_checkpoint, artifacts_dir=tmp_path / "artifacts",
                           calibration_dir=tmp_path / "calibration", reports_dir=tmp_path / "reports",
                           calibration_method="max", calibration_count=64, parity_limit=1000, data_dir=data_dir)
    result = make_bundle(options, tmp_path / "bundle", tarball=False, log=lambda _: None)
    manifest = result.bundle.manifest
    assert result.tarball is None and [s.name for s in result.stages] == ["export", "fp16", "int8", "parity"]
    assert manifest["parity"]["reference"]["backend"] == "torch" and manifest["parity"]["images"] == 1000
    assert manifest["source"]["sha256"] == hashlib.sha256(trained_checkpoint.read_bytes()).hexdigest()
    assert manifest["model"]["config"]["width"] == 0.125 and "torch" in manifest["versions"]


# ---- `build --bundle` on the device ------------------------------------------------------------------

def test_build_from_the_bundle_without_tensorrt_verifies_checks_parity_and_says_the_engine_needs_it(
        made, tmp_path, monkeypatch, no_tensorrt, capsys):
    monkeypatch.chdir(tmp_path)
    tarball = shutil.copyfile(made.with_name("tiny.tar.gz"), tmp_path / "tiny.tar.gz")
    assert run_cli("build", "--bundle", tarball, "--precision", "int8", "--limit", "500") == 0
    out = " ".join(capsys.readouterr().out.split())
    assert f"{tmp_path / 'tiny'}: {len(ROLES)} files match manifest.json" in out
    assert "the engine step was not run" in out and "Install TensorRT and pycuda here" in out
    assert f"resnet-deploy build --bundle {tmp_path / 'tiny'} --precision int8" in out
    report = json.loads((tmp_path / "reports" / "bundle-parity-tiny.json").read_text())
    assert report["passed"] and report["dataset"]["count"] == 500
    assert [a["precision"] for a in report["artifacts"]] == ["fp16", "int8"]
    assert verify_bundle(tmp_path / "tiny").folder == tmp_path / "tiny", "nothing was written into the bundle"
    assert run_cli("build", "--bundle", tmp_path / "tiny", "--precision", "int8", "--limit", "500", "--strict") == 1
    out, err = capsys.readouterr()
    assert err.strip() == "gate failed: --strict: the engine step needs TensorRT, which is not installed here"
    assert "bundle parity │ reused" in out


def test_build_from_a_tampered_bundle_exits_2_naming_the_file(copy, tmp_path, monkeypatch, no_tensorrt, capsys):
    monkeypatch.chdir(tmp_path)
    qdq = copy / "model" / "tiny.int8-max.qdq.onnx"
    qdq.write_bytes(qdq.read_bytes() + b"\0")
    assert run_cli("build", "--bundle", copy, "--precision", "int8") == 2
    err = capsys.readouterr().err
    assert "model/tiny.int8-max.qdq.onnx changed" in " ".join(err.split()) and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "reports").exists(), "nothing ran before the verification"


def test_build_from_a_bundle_refuses_options_the_bundle_fixes(made, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_cli("build", "--bundle", made, "--calibration-count", "8", "--onnx", "x.onnx") == 2
    err = capsys.readouterr().err
    assert "--bundle brings its own graphs and calibration; drop --onnx, --calibration-count" in err


@pytest.mark.parametrize("legacy", [False, True])
def test_build_from_the_bundle_builds_and_checks_the_engine_on_fake_tensorrt(made, copy, tmp_path, monkeypatch,
                                                                             legacy):
    """On (fake) TensorRT 10.3 the engine comes from the bundle's Q/DQ graph, or with --legacy-calibrator from
    its FP32 graph and calibration cache; engine parity runs; the sidecar carries the bundle's class names."""
    from tests import fakes

    rec, _ = fakes.install(monkeypatch, "10.3")
    monkeypatch.chdir(tmp_path)
    args = ["build", "--bundle", copy, "--precision", "int8", "--limit", "300", "--max-batch", "64", "--strict"]
    assert run_cli(*args, *(["--legacy-calibrator"] if legacy else [])) == 0
    (engine,) = (tmp_path / "engines").glob("*.engine")
    sidecar = json.loads(engine.with_suffix(".json").read_text())
    source = "model/tiny.onnx" if legacy else "model/tiny.int8-max.qdq.onnx"
    assert sidecar["source_onnx"] == str(copy / source) and sidecar["precision"] == "int8"
    assert sidecar["class_names"] == verify_bundle(copy).class_names
    assert sidecar["bundle"]["folder"] == str(copy)
    assert ("legacy-calib" in engine.name) == legacy
    parity = json.loads((tmp_path / "reports" / f"parity-{engine.stem}.json").read_text())
    assert parity["passed"] and parity["artifacts"][0]["backend"] == "tensorrt"
    assert parity["reference"]["name"] == source.split("/")[1]
    assert not [c for c in rec.calls if c[:2] == ("Builder", "calibration cache ignored")]
    assert verify_bundle(copy).folder == copy, "engines and reports stay out of the bundle"


def test_verify_bundle_never_deletes_files_it_did_not_write(made, tmp_path, capsys):
    """An older unpacked folder beside the tarball with the user's notes in it: exit 2 naming them, nothing
    changed; the same folder holding only the bundle's own files is replaced or kept."""
    tarball = shutil.copyfile(made.with_name("tiny.tar.gz"), tmp_path / "tiny.tar.gz")
    older = Path(shutil.copytree(made, tmp_path / "tiny"))
    (older / "notes.txt").write_text("my notes")
    (older / "photos").mkdir()
    (older / "photos" / "cat.png").write_bytes(b"png")
    (older / "labels.txt").write_text("edited\n")
    before = {p: p.read_bytes() for p in older.rglob("*") if p.is_file()}
    assert run_cli("verify-bundle", tarball) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "notes.txt" in err and "photos/" in err and "labels.txt" in err and "Traceback" not in err
    assert {p: p.read_bytes() for p in older.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tiny")] == []
    for extra in ("notes.txt", "photos/cat.png", "photos"):
        (older / extra).unlink() if (older / extra).is_file() else (older / extra).rmdir()
    (older / "labels.txt").write_bytes((made / "labels.txt").read_bytes())
    assert run_cli("verify-bundle", tarball) == 0
    assert verify_bundle(older).manifest == verify_bundle(made).manifest


def test_an_older_bundle_with_only_its_own_files_is_replaced(made, copy, tmp_path):
    manifest = json.loads((copy / MANIFEST).read_text())
    manifest["created"] = "2000-01-01T00:00:00Z"  # another bundle of the same name
    (copy / MANIFEST).write_text(json.dumps(manifest))
    target = Path(shutil.move(copy, tmp_path / "out" / "tiny"))
    unpacked = extract_bundle(made.with_name("tiny.tar.gz"), tmp_path / "out")
    assert unpacked.folder == target and unpacked.manifest["created"] != "2000-01-01T00:00:00Z"


def _tarball_with_device_md(made: Path, tmp_path: Path, edit) -> Path:
    from resnet_deploy.device.make import _file_entry, write_tarball

    folder = Path(shutil.copytree(made, tmp_path / "src" / "tiny"))
    readme = folder / "DEVICE.md"
    readme.write_text(edit(readme.read_text()))
    manifest = json.loads((folder / MANIFEST).read_text())
    manifest["files"]["DEVICE.md"] = _file_entry(folder, "DEVICE.md", "device_readme")
    (folder / MANIFEST).write_text(json.dumps(manifest))
    return write_tarball(folder, tmp_path / "tiny.tar.gz")


@pytest.mark.parametrize("edit, named", [
    (lambda text: text.replace("deepstream/deepstream_app_tiny_int8.txt", "deepstream/deepstream_app_tiny_int4.txt"),
     "tiny/deepstream/deepstream_app_tiny_int4.txt"),
    (lambda text: text.replace("tiny/wheel/resnet_deploy-", "tiny/wheel/resnet-deploy-"), "tiny/wheel/resnet-deploy-"),
])
def test_the_device_rehearsal_fails_when_device_md_names_a_file_the_bundle_lacks(made, tmp_path, edit, named):
    """.ci/rehearsal follows DEVICE.md from the tarball alone; a line naming a missing bundle file fails it
    before any line runs (here: a device-only DeepStream line, and the wheel the install step unpacks)."""
    if not shutil.which("bash"):
        pytest.skip("needs bash")
    tarball = _tarball_with_device_md(made, tmp_path, edit)
    result = subprocess.run(["bash", str(CHECKOUT / ".ci" / "rehearsal"), str(tarball)], capture_output=True,
                            text=True, timeout=300, check=False)
    if "SKIPPED, no Python 3.10" in result.stdout:
        pytest.skip("no Python 3.10 for the rehearsal")
    assert result.returncode != 0
    assert named in result.stderr and "which the bundle does not have" in result.stderr


def test_device_md_blocks_become_one_script_with_device_only_lines_checked(made, tmp_path):
    """The rehearsal's reading of DEVICE.md: every ```sh line in order, device-only lines behind device_line."""
    script = tmp_path / "device.sh"
    subprocess.run([sys.executable, str(CHECKOUT / ".ci" / "device_md.py"), str(made.with_name("tiny.tar.gz")),
                    str(script)], check=True)
    text = script.read_text()
    runs = [line for line in text.splitlines() if not line.startswith(("current=", "echo ", "device_line "))]
    device = [line for line in text.splitlines() if line.startswith("device_line ")]
    assert runs[:2] == ["cd ~", "mkdir -p ~/resnet-deploy-wheel"] and runs[-1].startswith("cd ~")
    assert any("verify-bundle ~/tiny.tar.gz --parity" in line for line in runs)
    assert any("trtexec" in line for line in device) and any("nvpmodel" in line for line in device)
    assert not any("sudo" in line or "trtexec" in line for line in runs)
    subprocess.run(["bash", "-n", str(script)], check=True)
