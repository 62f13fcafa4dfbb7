"""Download from a local HTTP server on 127.0.0.1 (never the network)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from pathlib import Path

import pytest

from resnet_deploy.download import download_fashion_mnist
from resnet_deploy.errors import DataError

pytestmark = pytest.mark.runtime


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        """Keep the request log out of stderr, which one test checks."""


@pytest.fixture
def mirror(tmp_path, data_dir):
    served = tmp_path / "served"
    served.mkdir()
    for path in Path(data_dir).glob("*.gz"):
        shutil.copy(path, served / path.name)
    handler = functools.partial(QuietHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}/"
    server.shutdown()
    server.server_close()


def test_download_writes_verified_files(mirror, tmp_path):
    _, url = mirror
    target = download_fashion_mnist(tmp_path / "cache", base_url=url, progress=False)
    names = sorted(p.name for p in target.iterdir())
    assert names == ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                     "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]


def test_wrong_file_is_refused_and_nothing_is_left_behind(mirror, tmp_path):
    served, url = mirror
    (served / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not the labels")
    target = tmp_path / "cache"
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz: checksum mismatch"):
        download_fashion_mnist(target, base_url=url, progress=False)
    assert not (target / "t10k-labels-idx1-ubyte.gz").exists()
    assert not [p for p in target.iterdir() if p.name.endswith(".tmp")]


def test_unreachable_mirror_is_a_data_error_naming_the_url(tmp_path):
    url = "http://127.0.0.1:9/"
    with pytest.raises(DataError, match=f"{url}train-images-idx3-ubyte.gz: download failed"):
        download_fashion_mnist(tmp_path, base_url=url, progress=False, timeout=2)


def test_missing_file_on_the_mirror_is_a_data_error_naming_the_url(mirror, tmp_path):
    served, url = mirror
    (served / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"{url}train-labels-idx1-ubyte.gz: download failed: HTTP 404"):
        download_fashion_mnist(tmp_path / "cache", base_url=url, progress=False)
    assert not (tmp_path / "cache" / "train-labels-idx1-ubyte.gz").exists()


def test_progress_bar_stays_off_when_stderr_is_not_a_terminal(mirror, tmp_path, capsys):
    _, url = mirror
    download_fashion_mnist(tmp_path / "cache", base_url=url, progress=True)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_find_data_dir_downloads_into_the_cache_when_nothing_is_local(mirror, tmp_path, monkeypatch):
    from resnet_deploy import data

    _, url = mirror
    monkeypatch.setattr(data, "DEBIAN_DIR", tmp_path / "none")
    monkeypatch.delenv("RESNET_DEPLOY_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("RESNET_DEPLOY_MIRROR", url)
    assert data.find_data_dir() == tmp_path / "xdg" / "resnet-deploy" / "fashion-mnist"


def test_download_needs_nothing_from_data():
    """data -> download, never back: importing the downloader loads no dataset code."""
    import subprocess
    import sys

    code = "import sys, resnet_deploy.download; print('resnet_deploy.data' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"
