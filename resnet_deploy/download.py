"""Download Fashion-MNIST from the official mirror: progress bar, atomic writes, checksums.

Each `.gz` is checked against the official MD5 before it is renamed into place, so nothing
half-written or altered is left behind; `data.load_split` checks the decoded content against the
official MD5 of the uncompressed files on every load. This module needs nothing from `data`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Callable

from resnet_deploy.errors import DataError
from resnet_deploy.fileio import atomic_path

OFFICIAL_MIRROR = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
GZ_MD5 = {
    "train-images-idx3-ubyte": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte": "bb300cfdad3c16e7a12a480ee83cd310",
}
CHUNK = 1 << 16


class DownloadFailed(DataError):
    """The mirror could not be reached, or served something other than the official files."""


def mirror_url(base_url: str | None = None) -> str:
    """`base_url`, else $RESNET_DEPLOY_MIRROR, else the official mirror."""
    return base_url or os.environ.get("RESNET_DEPLOY_MIRROR") or OFFICIAL_MIRROR


def download_fashion_mnist(
    target_dir: str | Path, base_url: str | None = None, progress: bool = True, timeout: float = 60.0
) -> Path:
    """Fetch the four files into `target_dir` (skipping ones already there) and verify them.

    The mirror is `base_url`, else $RESNET_DEPLOY_MIRROR, else the official one. The progress bar
    is shown only when `progress` is set and stderr is a terminal (never in logs).
    """
    target_dir = Path(target_dir)
    base_url = mirror_url(base_url)
    show = progress and sys.stderr.isatty()
    for name, md5 in GZ_MD5.items():
        path = target_dir / f"{name}.gz"
        if not path.is_file():
            _fetch(base_url.rstrip("/") + f"/{name}.gz", path, md5, show, timeout)
    return target_dir


def _fetch(url: str, path: Path, expected_md5: str, show: bool, timeout: float) -> None:
    digest = hashlib.md5()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(path) as tmp:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tmp.open("wb") as out, _progress(show, path.name, total) as advance:
                for chunk in iter(lambda: response.read(CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    advance(len(chunk))
            if digest.hexdigest() != expected_md5:
                raise DownloadFailed(
                    f"{url}: checksum mismatch: md5 {digest.hexdigest()}, expected {expected_md5}; nothing was written"
                )
    except urllib.error.HTTPError as exc:
        raise DownloadFailed(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:  # atomic_path reports write failures
        raise DownloadFailed(f"{url}: download failed: {getattr(exc, 'reason', exc)}") from exc


class _progress:
    """A rich progress bar when `show`, else a no-op; yields a function that advances it."""

    def __init__(self, show: bool, label: str, total: int | None) -> None:
        self.show, self.label, self.total = show, label, total

    def __enter__(self) -> Callable[[int], None]:
        if not self.show:
            return lambda n: None
        from rich.console import Console
        from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

        self.bar = Progress(
            *Progress.get_default_columns(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        self.bar.start()
        task = self.bar.add_task(f"download {self.label}", total=self.total)
        return lambda n: self.bar.advance(task, n)

    def __exit__(self, *exc_info) -> None:
        if self.show:
            self.bar.stop()
