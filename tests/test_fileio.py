"""Atomic writes: umask, leftovers of killed writers, failures named with their path; JSON reading; folder locks."""

from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import threading
import time

import pytest

from resnet_deploy import fileio
from resnet_deploy.errors import ArtifactError, EnvironmentFailure, ResnetDeployError


def dead_pid() -> int:
    finished = subprocess.Popen([sys.executable, "-c", "pass"])
    finished.wait()
    return finished.pid


def test_atomic_write_replaces_the_target_only_when_complete(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with fileio.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer failed")
    assert target.read_text() == "old" and sorted(tmp_path.iterdir()) == [target]
    fileio.atomic_write_text(target, "new")
    assert target.read_text() == "new" and sorted(tmp_path.iterdir()) == [target]


def test_temporary_is_named_after_the_process_and_gets_the_umask(tmp_path):
    previous = os.umask(0o027)
    try:
        with fileio.atomic_path(tmp_path / "a.json") as tmp:
            assert tmp.name.startswith(f".a.json.{os.getpid()}-") and tmp.name.endswith(".tmp")
            assert tmp.stat().st_mode & 0o777 == 0o640
    finally:
        os.umask(previous)


def test_only_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "a.json"
    dead = tmp_path / f".a.json.{dead_pid()}-00000000.tmp"
    alive = tmp_path / f".a.json.{os.getpid()}-11111111.tmp"
    other_file = tmp_path / f".a.json.json.{dead_pid()}-22222222.tmp"
    foreign = tmp_path / ".a.json.notapid.tmp"
    for path in (dead, alive, other_file, foreign):
        path.write_text("x")
    assert fileio.remove_stale_temporaries(target) == [dead]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (alive, other_file, foreign))


def test_failures_name_the_target_and_the_os_reason(tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(EnvironmentFailure, match="a-file is a file, not a folder"):
        fileio.atomic_write_text(tmp_path / "a-file" / "sub" / "out.txt", "x")
    (tmp_path / "folder.txt").mkdir()
    with pytest.raises(EnvironmentFailure, match="folder.txt: cannot write: it is a folder"):
        fileio.atomic_write_text(tmp_path / "folder.txt", "x")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(EnvironmentFailure, match="out.txt: cannot write: No space left on device") as failure:
        fileio.atomic_write_text(tmp_path / "out.txt", "x")
    assert failure.value.exit_code == 3 and not list(tmp_path.glob(".out.txt.*"))


def test_check_writable_refuses_before_anything_is_created(tmp_path, monkeypatch):
    fileio.check_writable(tmp_path / "new" / "deeper" / "out.json")
    assert not (tmp_path / "new").exists()
    (tmp_path / "plots").write_text("x")
    with pytest.raises(EnvironmentFailure, match=r"latency.png: cannot write: .*plots is a file, not a folder"):
        fileio.check_writable(tmp_path / "plots" / "latency.png")
    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(EnvironmentFailure, match="no write permission in"):
        fileio.check_writable(tmp_path / "new" / "out.json")


@pytest.mark.parametrize("content, message", [(b"\xff\xfe", "is not UTF-8 text"), (b"{", "is not valid JSON"),
                                              (b"[" * 100_000, "is nested too deeply")], ids=["binary", "broken", "deep"])
def test_read_json_refuses_with_the_callers_error(tmp_path, content, message):
    (tmp_path / "x.json").write_bytes(content)
    with pytest.raises(ArtifactError, match=f"x.json: report {message}"):
        fileio.read_json(tmp_path / "x.json", "report")
    with pytest.raises(ArtifactError, match="missing.json: report not found"):
        fileio.read_json(tmp_path / "missing.json", "report")


def test_folder_lock_makes_a_second_holder_wait(tmp_path):
    events = []

    def second():
        with fileio.folder_lock([tmp_path / "b", tmp_path / "a"], log=lambda message: events.append("waiting")):
            events.append("second")

    with fileio.folder_lock([tmp_path / "a"], log=events.append):
        thread = threading.Thread(target=second)
        thread.start()
        time.sleep(0.5)
        events.append("first done")
    thread.join(10)
    assert events == ["waiting", "first done", "second"]


# ---- Issue 18: special targets are never replaced; inputs are protected; long names fit ------------------------

def test_symlink_is_written_through_at_its_target(tmp_path):
    target = tmp_path / "real" / "report.json"
    target.parent.mkdir()
    target.write_text("old")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    fileio.atomic_write_text(link, "new")
    assert link.is_symlink() and target.read_text() == "new"
    assert sorted(p.name for p in target.parent.iterdir()) == ["report.json"]


def test_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "link.json"
    link.symlink_to(tmp_path / "later" / "made.json")
    fileio.atomic_write_text(link, "x")
    assert link.is_symlink() and (tmp_path / "later" / "made.json").read_text() == "x"


def test_character_device_is_written_into_not_replaced():
    before = os.lstat("/dev/null")
    fileio.atomic_write_text("/dev/null", "discarded")
    after = os.lstat("/dev/null")
    assert stat.S_ISCHR(after.st_mode) and (after.st_ino, after.st_rdev) == (before.st_ino, before.st_rdev)


def test_fifo_gets_the_content_once_complete_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ResnetDeployError, match="no process reads"):
        fileio.atomic_write_text(fifo, "nobody listens")
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    for _ in range(200):  # wait until the reader has opened its end
        try:
            fileio.atomic_write_text(fifo, "hello")
            break
        except ResnetDeployError:
            time.sleep(0.05)
    reader.join(timeout=30)
    assert received == ["hello"] and stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_socket_is_refused(tmp_path):
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(ResnetDeployError, match="is a socket"):
            fileio.atomic_write_text(path, "x")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_protected_inputs_refuse_writes_by_any_name(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"model")
    other = tmp_path / "other-name"
    os.link(model, other)
    with fileio.protected_inputs([("--onnx", model)]):
        for target in (model, other):
            with pytest.raises(ResnetDeployError, match=r"input of this command \(--onnx"):
                fileio.atomic_write_text(target, "report")
            with pytest.raises(ResnetDeployError, match="input of this command"):
                fileio.check_writable(target)
        fileio.atomic_write_text(tmp_path / "fine.json", "{}")
    assert model.read_bytes() == b"model"
    fileio.atomic_write_text(other, "allowed after the command")


def test_fit_name_keeps_short_names_and_shortens_long_ones(tmp_path):
    assert fileio.fit_name(tmp_path / "a.json") == tmp_path / "a.json"
    long = tmp_path / ("é" * 150 + ".json")
    fitted = fileio.fit_name(long)
    assert len(os.fsencode(fitted.name)) <= fileio.FITTED_NAME_BYTES and fitted.suffix == ".json"
    assert fitted != fileio.fit_name(tmp_path / ("é" * 151 + ".json"))
    fileio.atomic_write_text(fitted, "x")
    assert fitted.read_text() == "x"


def test_names_near_the_limit_get_short_temporaries_and_too_long_ones_exit_2(tmp_path):
    near = tmp_path / ("n" * 250 + ".json")
    fileio.atomic_write_text(near, "x")
    assert near.read_text() == "x"
    with pytest.raises(ResnetDeployError, match="more than the 255"):
        fileio.atomic_write_text(tmp_path / ("n" * 260 + ".json"), "x")
