"""Files: atomic writes, early checks of output paths, JSON reading, folder locks, content hashes.

Every artifact is written to a temporary file beside its target and renamed onto it only when
complete, so no stage leaves a half-written file. The temporary file is created with mode 0666 and
the process umask (what `open()` would give the target), named after the writing process, and a
temporary left by a killed process is removed by the next write of the same target. A failed read
or write raises `EnvironmentFailure` naming the target and the OS reason.

Special targets are never replaced: a symlink is written through (atomically, at its final target),
a character device or FIFO is written directly once the content is complete, and a block device or
socket is refused. While a command runs, its inputs are protected (`protected_inputs`): a write
over one of them, by any name (same device and inode), is refused as bad input (exit 2).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import os
import secrets
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from resnet_deploy.errors import ArtifactError, EnvironmentFailure, ResnetDeployError

TEMP_SUFFIX = ".tmp"
LOCK_NAME = ".resnet-deploy.lock"
# Most file systems allow 255 bytes per name; a temporary adds ".", ".<pid>-<8 hex>.tmp" to its target's.
NAME_MAX = 255
FITTED_NAME_BYTES = 200
# (st_dev, st_ino) of the running command's inputs -> how to name them (`protected_inputs`).
_protected: dict[tuple[int, int], str] = {}


def _temp_prefix(path: Path) -> str:
    if len(os.fsencode(path.name)) > FITTED_NAME_BYTES:
        return f".{hashlib.sha256(os.fsencode(path.name)).hexdigest()[:16]}."
    return f".{path.name}."


def fit_name(path: str | os.PathLike, limit: int = FITTED_NAME_BYTES) -> Path:
    """`path` with its file name shortened (stem cut, a hash of the full name appended) to at most
    `limit` bytes, so it and its temporaries fit in a file system's 255-byte name limit."""
    path = Path(path)
    name = os.fsencode(path.name)
    if len(name) <= limit:
        return path
    suffix = path.suffix if len(os.fsencode(path.suffix)) <= 16 else ""
    tag = "-" + hashlib.sha256(name).hexdigest()[:12]
    stem = name[: limit - len(os.fsencode(suffix)) - len(tag)].decode("utf-8", "ignore")
    return path.with_name(stem + tag + suffix)


def _file_key(path: str | os.PathLike) -> tuple[int, int] | None:
    """(device, inode) of what `path` names after symlinks, or None when nothing is there."""
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


@contextlib.contextmanager
def protected_inputs(inputs: Iterable[tuple[str, str | os.PathLike]]) -> Iterator[None]:
    """While the block runs, refuse every write over one of `inputs` ((label, path) pairs) under any name."""
    added = {}
    for label, path in inputs:
        key = _file_key(path)
        if key is not None and key not in _protected:
            added[key] = f"{label} {path}" if label else str(path)
    _protected.update(added)
    try:
        yield
    finally:
        for key in added:
            _protected.pop(key, None)


def check_not_input(path: str | os.PathLike) -> None:
    """Refuse (bad input, exit 2) to write `path` when it is one of the running command's inputs."""
    key = _file_key(path)
    if key is not None and key in _protected:
        raise ResnetDeployError(f"{path}: refusing to write over an input of this command ({_protected[key]})")


def write_target(path: str | os.PathLike) -> Path:
    """Where a write of `path` lands: the final target of a symlink (its folders need not exist), else `path`."""
    path = Path(path)
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _special_kind(path: Path) -> str | None:
    """ "character device" or "FIFO" for targets written directly; None for a regular or absent file.
    A block device or socket raises `ResnetDeployError`: nothing is written to them."""
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "write", path) from exc
    if stat.S_ISCHR(mode):
        return "character device"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISBLK(mode) or stat.S_ISSOCK(mode):
        kind = "block device" if stat.S_ISBLK(mode) else "socket"
        raise ResnetDeployError(f"{path}: is a {kind}; refusing to write a file to it")
    return None


def _process_alive(pid: int) -> bool:
    if os.name != "posix":
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temporaries(path: Path) -> list[Path]:
    """Delete the temporaries of `path` whose writing process no longer runs (it was killed mid-write)."""
    prefix = _temp_prefix(path)
    removed = []
    for candidate in path.parent.glob(glob.escape(prefix) + "*" + TEMP_SUFFIX):
        pid = candidate.name[len(prefix) : -len(TEMP_SUFFIX)].split("-")[0]
        if pid.isdigit() and not _process_alive(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _blocking_file(folder: Path) -> Path | None:
    """The nearest existing ancestor of `folder` (itself included) when it is not a folder."""
    existing = next((p for p in (folder, *folder.parents) if os.path.lexists(p)), None)
    return existing if existing is not None and not existing.is_dir() else None


def ensure_folder(folder: str | os.PathLike, target: str | os.PathLike | None = None) -> Path:
    """Create `folder` (and parents); a file in the way or an OS refusal raises `EnvironmentFailure`."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        blocker = _blocking_file(folder)
        reason = f"{blocker} is a file, not a folder" if blocker else (exc.strerror or str(exc))
        raise EnvironmentFailure(f"{target or folder}: cannot write: {reason}") from exc
    return folder


def require_file(path: str | os.PathLike, what: str = "file", error: type[ResnetDeployError] = ArtifactError) -> Path:
    """`path` if it is a file; a missing path or a folder raises `error` (bad input) naming it."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path}: {f'is a folder, not a {what}' if path.is_dir() else f'{what} not found'}")
    return path


def check_writable(*paths: str | os.PathLike) -> None:
    """Refuse, before any work, output files that cannot be written: an input of the running command
    or a block device or socket (exit 2), a folder in the place of one, a file where one of their
    folders should be, or a folder this process may not write (exit 3). Symlinks are checked at
    their final target; a character device or FIFO needs only write permission."""
    for path in map(Path, paths):
        if len(os.fsencode(path.name)) > NAME_MAX:
            raise ResnetDeployError(
                f"{path}: cannot write: the file name is {len(os.fsencode(path.name))} bytes, "
                f"more than the {NAME_MAX} a file system allows"
            )
        check_not_input(path)
        _check_writable(write_target(path))


def _check_writable(path: Path) -> None:
    if _special_kind(path) is not None:
        if not os.access(path, os.W_OK):
            raise EnvironmentFailure(f"{path}: cannot write: permission denied")
        return
    if path.is_dir():
        raise EnvironmentFailure(f"{path}: cannot write: it is a folder, not a file")
    blocker = _blocking_file(path.parent)
    if blocker is not None:
        raise EnvironmentFailure(f"{path}: cannot write: {blocker} is a file, not a folder")
    existing = next(p for p in (path.parent, *path.parent.parents) if os.path.lexists(p))
    if not os.access(existing, os.W_OK | os.X_OK):
        raise EnvironmentFailure(f"{path}: cannot write: no write permission in {existing}")


def _create_temp(path: Path) -> Path:
    """A new empty file beside `path`, named after this process; mode 0666 minus the umask."""
    while True:
        tmp = path.with_name(f"{_temp_prefix(path)}{os.getpid()}-{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            return tmp
        except FileExistsError:
            continue


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A symlink is written through to its final target; a character device or FIFO receives the
    temporary's content directly once the block succeeds (never replaced)."""
    path = Path(path)
    check_writable(path)
    path = write_target(path)
    if _special_kind(path) is not None:
        with _streamed_path(path) as tmp:
            yield tmp
        return
    ensure_folder(path.parent, path)
    try:
        remove_stale_temporaries(path)
        tmp = _create_temp(path)
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "write", path) from exc
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        about_target = exc.filename is None or Path(exc.filename) in (tmp, path)
        raise EnvironmentFailure.from_os_error(
            exc, "write" if about_target else "use", path if about_target else None
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _streamed_path(path: Path) -> Iterator[Path]:
    """A private temporary whose content is copied into the device or FIFO `path` if the block succeeds."""
    handle, name = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=TEMP_SUFFIX)
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        _copy_into(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _copy_into(source: Path, special: Path) -> None:
    """Write `source`'s bytes into `special`; a FIFO nobody reads is refused instead of waiting forever."""
    try:
        fd = os.open(special, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise ResnetDeployError(f"{special}: is a FIFO that no process reads; nothing was written") from exc
        raise EnvironmentFailure.from_os_error(exc, "write", special) from exc
    try:
        os.set_blocking(fd, True)
        with open(source, "rb") as reader, os.fdopen(fd, "wb", closefd=False) as writer:
            shutil.copyfileobj(reader, writer)
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "write", special) from exc
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_text(path: str | os.PathLike, what: str, error: type[ResnetDeployError] = ArtifactError) -> str:
    """The UTF-8 text of `path`. A missing file, a folder or binary content raise `error` (bad
    input); another OS failure (permission, I/O) raises `EnvironmentFailure`."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise error(f"{path}: {what} is not UTF-8 text (byte {exc.start} is 0x{exc.object[exc.start]:02x})") from exc
    except FileNotFoundError as exc:
        raise error(f"{path}: {what} not found") from exc
    except IsADirectoryError as exc:
        raise error(f"{path}: is a folder, not a {what}") from exc
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "read", path) from exc


def read_json(path: str | os.PathLike, what: str, error: type[ResnetDeployError] = ArtifactError) -> Any:
    """The parsed JSON of `path`; binary or malformed content raises `error` naming the file."""
    text = read_text(path, what, error)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise error(f"{path}: {what} is not valid JSON: {exc}") from exc
    except RecursionError as exc:
        raise error(f"{path}: {what} is nested too deeply to be one") from exc


@contextlib.contextmanager
def folder_lock(folders: Iterable[str | os.PathLike], log: Callable[[str], None] = print) -> Iterator[None]:
    """Hold an exclusive lock on each folder (created if needed) so two runs never write one at once.

    A second run waits, saying so, until the first one ends. Locks are taken in sorted order, so two
    runs over overlapping folders cannot deadlock.
    """
    from filelock import FileLock, Timeout

    paths = sorted({ensure_folder(folder).resolve() for folder in folders})
    with contextlib.ExitStack() as stack:
        for folder in paths:
            lock = FileLock(str(folder / LOCK_NAME))
            try:
                stack.enter_context(lock.acquire(timeout=0))
            except Timeout:
                log(f"waiting for another resnet-deploy run that is writing {folder} ...")
                stack.enter_context(lock.acquire())
            except OSError as exc:
                raise EnvironmentFailure.from_os_error(exc, "lock", folder / LOCK_NAME) from exc
        yield


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(chunk_size), b""):
                digest.update(chunk)
    except OSError as exc:
        raise EnvironmentFailure.from_os_error(exc, "read", path) from exc
    return digest.hexdigest()
