"""Every test has a time limit: a hang ends the run with a stack dump instead of blocking CI.

The hanging tests run in a pytest subprocess under this repository's pyproject.toml, with only the
limits shortened.
"""

import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HANGS = """\
import ctypes, time
def test_sleeps():
    time.sleep(300)
def test_holds_the_gil():
    ctypes.PyDLL(None).sleep(300)  # native code that never releases the GIL
"""


def run_hanging(tmp_path: Path, name: str, *overrides: str) -> tuple[int, str, float]:
    """Exit status, output and seconds of the repository's pytest config on one hanging test."""
    (tmp_path / "test_hangs.py").write_text(HANGS)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", str(ROOT / "pyproject.toml"),
               "--rootdir", str(tmp_path), str(tmp_path / "test_hangs.py"), "-k", name, *overrides]
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=150, cwd=tmp_path, check=False)
    return done.returncode, done.stdout + done.stderr, time.monotonic() - started


def test_the_configuration_limits_every_test(pytestconfig):
    timeout = float(pytestconfig.getini("timeout"))
    assert 0 < timeout <= 900
    assert pytestconfig.getini("timeout_method") == "thread"
    assert timeout < float(pytestconfig.getini("faulthandler_timeout")) <= timeout + 60
    assert pytestconfig.getini("faulthandler_exit_on_timeout") is True


def test_a_hang_is_cut_with_a_stack_dump(tmp_path):
    code, output, seconds = run_hanging(tmp_path, "sleeps", "-o", "timeout=2")
    assert code != 0, output
    assert "+ Timeout +" in output, output
    assert 'test_hangs.py", line 3, in test_sleeps' in output, output
    assert seconds < 100


def test_a_hang_holding_the_gil_is_cut_by_faulthandler(tmp_path):
    code, output, seconds = run_hanging(tmp_path, "holds_the_gil", "-o", "timeout=2", "-o", "faulthandler_timeout=4")
    assert code != 0, output
    assert "Timeout (0:00:04)!" in output, output
    assert 'test_hangs.py", line 5 in test_holds_the_gil' in output, output
    assert seconds < 100
