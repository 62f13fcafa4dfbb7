"""resnet_deploy/fileio.py's exact behaviour, written to kill the mutants tools/mutation.sh found surviving there:
shortened names and temporaries, the JSON text written, content hashes, refusals and their messages (each
naming the path the caller gave and the OS reason), special files (devices, FIFOs, block devices made in a
temporary folder) and stale temporaries. Milliseconds each, no model, no data set."""

from __future__ import annotations

import errno
import hashlib
import locale
import os
import re
import stat
import threading
import time
from pathlib import Path

import pytest

from resnet_deploy import fileio
from resnet_deploy.errors import ArtifactError, DataError, EnvironmentFailure, ResnetDeployError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ---- fit_name ----------------------------------------------------------------------------------------------------

def test_fit_name_keeps_a_name_of_exactly_the_limit(tmp_path):
    name = "a" * 195 + ".json"
    assert fileio.fit_name(tmp_path / name) == tmp_path / name
    assert fileio.fit_name(str(tmp_path / "b.onnx"), limit=6) == tmp_path / "b.onnx"


def test_fit_name_cuts_the_stem_and_appends_a_hash_of_the_full_name(tmp_path):
    name = "a" * 300 + ".json"
    expected = "a" * (200 - len(".json") - 13) + "-" + sha(name.encode())[:12] + ".json"
    assert fileio.fit_name(tmp_path / name) == tmp_path / expected
    assert len(expected) == fileio.FITTED_NAME_BYTES
    one_over = "a" * 196 + ".json"
    assert fileio.fit_name(tmp_path / one_over) == tmp_path / ("a" * 182 + "-" + sha(one_over.encode())[:12] + ".json")


def test_fit_name_with_a_custom_limit(tmp_path):
    name = "abcdefghijklmnopqrstuvwxyz.onnx"
    assert fileio.fit_name(tmp_path / name, limit=30) == tmp_path / ("abcdefghijkl-" + sha(name.encode())[:12] + ".onnx")


def test_fit_name_drops_a_suffix_longer_than_16_bytes(tmp_path):
    kept = "x" * 250 + "." + "y" * 15  # a 16-byte suffix is kept
    assert fileio.fit_name(tmp_path / kept).name == "x" * (200 - 16 - 13) + "-" + sha(kept.encode())[:12] + "." + "y" * 15
    dropped = "x" * 250 + "." + "y" * 16  # 17 bytes: no suffix, the stem takes its place
    assert fileio.fit_name(tmp_path / dropped).name == "x" * (200 - 13) + "-" + sha(dropped.encode())[:12]


def test_fit_name_never_splits_a_utf8_character(tmp_path):
    name = "a" + "é" * 150 + ".json"  # the cut at 182 bytes falls inside the 91st "é"
    fitted = fileio.fit_name(tmp_path / name)
    assert fitted.name == "a" + "é" * 90 + "-" + sha(name.encode())[:12] + ".json"
    assert len(os.fsencode(fitted.name)) == 199


# ---- temporaries -------------------------------------------------------------------------------------------------

TEMP = re.compile(r"(?P<prefix>.*\.)(?P<pid>\d+)-(?P<token>[0-9a-f]{8})\.tmp")


def temp_name_for(target: Path) -> str:
    with fileio.atomic_path(target) as tmp:
        return tmp.name


def test_temporary_of_a_name_at_the_limit_starts_with_the_name(tmp_path):
    name = "n" * 195 + ".json"  # 200 bytes: ".<name>." + "<pid>-<8 hex>.tmp" still fits in 255
    match = TEMP.fullmatch(temp_name_for(tmp_path / name))
    assert match and match["prefix"] == f".{name}." and match["pid"] == str(os.getpid())


def test_temporary_of_a_longer_name_uses_a_hash_of_it(tmp_path):
    name = "n" * 196 + ".json"
    match = TEMP.fullmatch(temp_name_for(tmp_path / name))
    assert match and match["prefix"] == f".{sha(name.encode())[:16]}." and match["pid"] == str(os.getpid())


def test_temporary_gets_mode_0666_under_a_zero_umask(tmp_path):
    previous = os.umask(0)
    try:
        with fileio.atomic_path(tmp_path / "a.json") as tmp:
            assert stat.S_IMODE(tmp.stat().st_mode) == 0o666
    finally:
        os.umask(previous)


def test_a_taken_temporary_name_is_skipped(tmp_path, monkeypatch):
    taken = tmp_path / f".a.json.{os.getpid()}-00000000.tmp"
    taken.write_text("another writer's")
    tokens = iter(["00000000", "11111111"])
    monkeypatch.setattr(fileio.secrets, "token_hex", lambda n: next(tokens) if n == 4 else "bad")
    with fileio.atomic_path(tmp_path / "a.json") as tmp:
        assert tmp.name == f".a.json.{os.getpid()}-11111111.tmp"
        tmp.write_text("mine")
    assert taken.read_text() == "another writer's" and (tmp_path / "a.json").read_text() == "mine"


def test_stale_temporaries_probe_with_signal_0_and_keep_other_users_writers(tmp_path, monkeypatch):
    gone, other_user, vanished = 999_991, 999_992, 999_993
    for pid in (gone, other_user, vanished):
        (tmp_path / f".a.json.{pid}-00000000.tmp").write_text("x")
    signals = []

    def kill(pid, sig):
        signals.append(sig)
        if pid == other_user:
            raise PermissionError(errno.EPERM, "Operation not permitted")
        if pid == vanished:  # another run removes it first
            (tmp_path / f".a.json.{pid}-00000000.tmp").unlink()
        raise ProcessLookupError(errno.ESRCH, "No such process")

    monkeypatch.setattr(fileio.os, "kill", kill)
    removed = fileio.remove_stale_temporaries(tmp_path / "a.json")
    assert sorted(p.name for p in removed) == [f".a.json.{gone}-00000000.tmp", f".a.json.{vanished}-00000000.tmp"]
    assert [p.name for p in tmp_path.iterdir()] == [f".a.json.{other_user}-00000000.tmp"]
    assert signals == [0, 0, 0]


# ---- JSON, text, hashes ------------------------------------------------------------------------------------------

def test_atomic_write_json_text_is_indented_in_insertion_order_with_a_newline(tmp_path):
    target = tmp_path / "r.json"
    assert fileio.atomic_write_json(target, {"b": 1, "a": [Path("x/y"), None]}) == target
    assert target.read_text() == '{\n  "b": 1,\n  "a": [\n    "x/y",\n    null\n  ]\n}\n'
    assert fileio.atomic_write_json(str(target), "é") == target and target.read_bytes() == b'"\\u00e9"\n'


def test_atomic_write_text_is_utf8(tmp_path):
    fileio.atomic_write_text(tmp_path / "t.txt", "é")
    assert (tmp_path / "t.txt").read_bytes() == b"\xc3\xa9"


def test_read_text_decodes_utf8_whatever_the_locale(tmp_path):
    (tmp_path / "t.txt").write_bytes("résumé".encode())
    previous = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # the locale's encoding is now ASCII
    try:
        assert fileio.read_text(tmp_path / "t.txt", "notes") == "résumé"
    finally:
        locale.setlocale(locale.LC_CTYPE, previous)


def test_read_text_refusals_name_the_file(tmp_path):
    with pytest.raises(ArtifactError) as folder:
        fileio.read_text(tmp_path, "report")
    assert str(folder.value) == f"{tmp_path}: is a folder, not a report"
    (tmp_path / "f").write_text("x")
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.read_text(tmp_path / "f" / "r.json", "report")
    assert str(failure.value) == f"{tmp_path / 'f' / 'r.json'}: cannot read: Not a directory"
    assert failure.value.exit_code == 3


def test_read_json_raises_the_callers_error(tmp_path):
    with pytest.raises(DataError, match="missing.json: labels not found"):
        fileio.read_json(tmp_path / "missing.json", "labels", DataError)
    (tmp_path / "x.json").write_text('{"a": [1, 2.5]}')
    assert fileio.read_json(tmp_path / "x.json", "labels") == {"a": [1, 2.5]}


def test_sha256_of_a_file_read_in_chunks(tmp_path):
    data = bytes(range(256)) * 4099
    (tmp_path / "blob").write_bytes(data)
    assert fileio.sha256_file(tmp_path / "blob") == sha(data)
    assert fileio.sha256_file(str(tmp_path / "blob"), chunk_size=1000) == sha(data)
    assert fileio.sha256_bytes(data) == sha(data)
    (tmp_path / "empty").write_bytes(b"")
    assert fileio.sha256_file(tmp_path / "empty") == sha(b"")


def test_sha256_of_a_missing_file_is_an_environment_failure(tmp_path):
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.sha256_file(tmp_path / "gone.onnx")
    assert str(failure.value) == f"{tmp_path / 'gone.onnx'}: cannot read: No such file or directory"


def test_require_file(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    assert fileio.require_file(str(tmp_path / "m.onnx")) == tmp_path / "m.onnx"
    with pytest.raises(ArtifactError) as missing:
        fileio.require_file(tmp_path / "n.onnx", "ONNX file")
    assert str(missing.value) == f"{tmp_path / 'n.onnx'}: ONNX file not found"
    with pytest.raises(DataError) as folder:
        fileio.require_file(tmp_path, "checkpoint", DataError)
    assert str(folder.value) == f"{tmp_path}: is a folder, not a checkpoint"
    with pytest.raises(ArtifactError, match=": file not found$"):
        fileio.require_file(tmp_path / "n.onnx")


# ---- folders and writability ---------------------------------------------------------------------------------

def test_ensure_folder_creates_parents(tmp_path):
    assert fileio.ensure_folder(tmp_path / "a" / "b" / "c") == tmp_path / "a" / "b" / "c"
    assert (tmp_path / "a" / "b" / "c").is_dir()


def test_ensure_folder_names_the_file_in_the_way_and_the_target(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.ensure_folder(tmp_path / "f" / "sub")
    assert str(failure.value) == f"{tmp_path / 'f' / 'sub'}: cannot write: {tmp_path / 'f'} is a file, not a folder"
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.ensure_folder(tmp_path / "f" / "sub", tmp_path / "f" / "sub" / "out.json")
    assert str(failure.value).startswith(f"{tmp_path / 'f' / 'sub' / 'out.json'}: cannot write: ")


@pytest.mark.parametrize("error, reason", [(OSError(errno.EACCES, "Permission denied"), "Permission denied"),
                                           (OSError("quota exceeded"), "quota exceeded")])
def test_ensure_folder_gives_the_os_reason(tmp_path, monkeypatch, error, reason):
    def refuse(self, *args, **kwargs):
        raise error

    monkeypatch.setattr(Path, "mkdir", refuse)
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.ensure_folder(tmp_path / "new")
    assert str(failure.value) == f"{tmp_path / 'new'}: cannot write: {reason}"


def test_name_length_limit_is_255_bytes(tmp_path):
    fileio.check_writable(tmp_path / ("n" * 250 + ".json"))
    with pytest.raises(ResnetDeployError) as failure:
        fileio.check_writable(tmp_path / ("n" * 251 + ".json"))
    assert str(failure.value) == (f"{tmp_path / ('n' * 251 + '.json')}: cannot write: the file name is 256 bytes, "
                                  "more than the 255 a file system allows")
    assert failure.value.exit_code == 2


def test_messages_name_the_path_as_given_not_its_resolved_folder(tmp_path):
    (tmp_path / "real" / "out.json").mkdir(parents=True)
    (tmp_path / "link").symlink_to(tmp_path / "real")
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.check_writable(tmp_path / "link" / "out.json")
    assert str(failure.value) == f"{tmp_path / 'link' / 'out.json'}: cannot write: it is a folder, not a file"


def test_folder_needs_write_and_search_permission(tmp_path, monkeypatch):
    asked = []

    def access(path, mode):
        asked.append(mode)
        return not mode & os.X_OK  # a folder with write but no search permission

    monkeypatch.setattr(fileio.os, "access", access)
    with pytest.raises(EnvironmentFailure, match=f"out.json: cannot write: no write permission in {tmp_path}$"):
        fileio.check_writable(tmp_path / "out.json")
    assert asked == [os.W_OK | os.X_OK]


def test_device_without_write_permission_is_refused(monkeypatch):
    monkeypatch.setattr(fileio.os, "access", lambda path, mode: not (str(path) == "/dev/null" and mode == os.W_OK))
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.check_writable("/dev/null")
    assert str(failure.value) == "/dev/null: cannot write: permission denied"


def test_symlink_loop_is_an_environment_failure(tmp_path):
    loop = tmp_path / "loop.json"
    loop.symlink_to(loop)
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.atomic_write_text(loop, "x")
    assert str(failure.value) == f"{loop}: cannot write: Too many levels of symbolic links"
    assert loop.is_symlink()


def test_block_device_is_refused(tmp_path):
    node = tmp_path / "disk"
    try:
        os.mknod(node, stat.S_IFBLK | 0o600, os.makedev(7, 200))
    except PermissionError:
        pytest.skip("no CAP_MKNOD to make a block device node")
    with pytest.raises(ResnetDeployError) as failure:
        fileio.check_writable(node)
    assert str(failure.value) == f"{node}: is a block device; refusing to write a file to it"
    assert failure.value.exit_code == 2 and stat.S_ISBLK(os.lstat(node).st_mode)


def test_socket_message(tmp_path):
    import socket

    path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        with pytest.raises(ResnetDeployError) as failure:
            fileio.check_writable(path)
    assert str(failure.value) == f"{path}: is a socket; refusing to write a file to it"


# ---- protected inputs --------------------------------------------------------------------------------------------

def test_protected_input_message_names_the_option(tmp_path):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"m")
    with fileio.protected_inputs([("--onnx", model), ("", tmp_path / "absent")]):
        with pytest.raises(ResnetDeployError) as failure:
            fileio.check_not_input(model)
        fileio.check_not_input(tmp_path / "absent")
        fileio.check_not_input(tmp_path / "other")
    assert str(failure.value) == f"{model}: refusing to write over an input of this command (--onnx {model})"
    assert type(failure.value) is ResnetDeployError


# ---- devices and FIFOs -------------------------------------------------------------------------------------------

def test_fifo_nobody_reads_is_bad_input_and_nothing_is_left(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(ResnetDeployError) as failure:
        fileio.atomic_write_text(fifo, "x")
    assert str(failure.value) == f"{fifo}: is a FIFO that no process reads; nothing was written"
    assert failure.value.exit_code == 2 and sorted(tmp_path.iterdir()) == [fifo]


def test_large_content_reaches_a_fifo_reader_that_starts_late(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    payload = os.urandom(1 << 20)  # far more than a pipe holds: the writer must wait for the reader
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    errors = []

    def write():
        try:
            fileio.atomic_write_bytes(fifo, payload)
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.2)
    os.set_blocking(reader, True)
    chunks = []
    while chunk := os.read(reader, 1 << 16):
        chunks.append(chunk)
    os.close(reader)
    writer.join(10)
    assert errors == [] and b"".join(chunks) == payload


def test_character_device_write_failure_is_an_environment_failure():
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    open_fds = len(os.listdir("/proc/self/fd"))
    with pytest.raises(EnvironmentFailure) as failure:
        fileio.atomic_write_text("/dev/full", "x")
    assert str(failure.value) == "/dev/full: cannot write: No space left on device"
    fileio.atomic_write_text("/dev/null", "x" * 100)
    assert len(os.listdir("/proc/self/fd")) == open_fds


def test_special_file_gone_before_the_copy_is_an_environment_failure(tmp_path):
    source = tmp_path / "content"
    source.write_bytes(b"x")
    with pytest.raises(EnvironmentFailure) as failure:
        fileio._copy_into(source, tmp_path / "removed-fifo")
    assert str(failure.value) == f"{tmp_path / 'removed-fifo'}: cannot write: No such file or directory"
