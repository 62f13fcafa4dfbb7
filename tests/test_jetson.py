"""Jetson fingerprint on fixture trees that mimic an AGX Orin on JetPack 6.2, locked and unlocked."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from resnet_deploy import jetson

pytestmark = pytest.mark.runtime

FIXTURES = Path(__file__).parent / "fixtures" / "jetson-orin-jp6"


@pytest.fixture
def board(tmp_path) -> Path:
    """A writable copy of the locked board."""
    return Path(shutil.copytree(FIXTURES / "locked", tmp_path / "root"))


def test_locked_orin_on_jetpack_6_2():
    board = jetson.fingerprint(FIXTURES / "locked")["jetson"]
    assert board["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert (board["l4t"], board["jetpack"]) == ("36.4.3", "6.2")
    assert board["power_mode"] == {"id": 0, "name": "MAXN", "default_id": 2, "source": "/var/lib/nvpmodel/status"}
    clocks = board["clocks"]
    assert clocks["locked"] is True and clocks["unlocked"] == [] and clocks["below_max"] == []
    assert [d["name"] for d in clocks["domains"]] == ["cpu0-3", "cpu4-7", "cpu8-11", "gpu 17000000.gpu"]
    assert clocks["domains"][-1] == {"name": "gpu 17000000.gpu", "unit": "Hz", "min": 1300500000,
                                     "max": 1300500000, "cur": 1300500000}
    assert jetson.warnings({"jetson": board}) == []


def test_unlocked_orin_warns_that_latency_varies():
    fingerprint = jetson.fingerprint(FIXTURES / "unlocked")
    board = fingerprint["jetson"]
    assert board["power_mode"]["id"] == 2 and board["power_mode"]["name"] == "MODE_30W"
    assert board["clocks"]["locked"] is False
    assert board["clocks"]["unlocked"] == ["cpu0-3", "cpu4-7", "cpu8-11", "gpu 17000000.gpu"]
    (warning,) = jetson.warnings(fingerprint)
    assert "not locked" in warning and "gpu 17000000.gpu" in warning and "sudo jetson_clocks" in warning


@pytest.mark.parametrize("first_line, l4t, jetpack", [
    ("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64", "36.4.3", "6.2"),
    ("# R36 (release), REVISION: 4.4, GCID: 41062509, BOARD: generic, EABI: aarch64", "36.4.4", "6.2.1"),
    ("# R36 (release), REVISION: 4.0, GCID: 37537400, BOARD: generic, EABI: aarch64", "36.4.0", "6.1"),
    ("# R36 (release), REVISION: 3.0, GCID: 36191598, BOARD: generic, EABI: aarch64", "36.3.0", "6.0"),
    ("# R35 (release), REVISION: 5.0, GCID: 35550185, BOARD: t186ref, EABI: aarch64", "35.5.0", "5.1.3"),
    ("# R35 (release), REVISION: 2.1, GCID: 32413640, BOARD: t186ref, EABI: aarch64", "35.2.1", "5.1"),
    ("# R36 (release), REVISION: 4.7, GCID: 42132812, BOARD: generic, EABI: aarch64", "36.4.7", "6.x"),
    ("# R36 (release), REVISION: 4, GCID: 1", "36.4.0", "6.1"),
])
def test_l4t_release_maps_to_jetpack(board, first_line, l4t, jetpack):
    (board / "etc/nv_tegra_release").write_text(first_line + "\n# KERNEL_VARIANT: oot\n")
    found = jetson.fingerprint(board)["jetson"]
    assert (found["l4t"], found["jetpack"]) == (l4t, jetpack)


def test_unreadable_release_and_missing_power_state_are_reported(board):
    (board / "etc/nv_tegra_release").write_text("not a release line\n")
    (board / "var/lib/nvpmodel/status").unlink()
    (board / "etc/nvpmodel.conf").unlink()
    fingerprint = jetson.fingerprint(board)
    assert fingerprint["jetson"]["l4t"] is None and fingerprint["jetson"]["jetpack"] is None
    assert fingerprint["jetson"]["power_mode"] is None
    warnings = jetson.warnings(fingerprint)
    assert any("L4T release unknown" in w for w in warnings) and any("power mode unknown" in w for w in warnings)


def test_without_a_status_file_nvpmodel_runs_the_default_mode(board):
    (board / "var/lib/nvpmodel/status").unlink()
    mode = jetson.fingerprint(board)["jetson"]["power_mode"]
    assert (mode["id"], mode["name"]) == (2, "MODE_30W") and "default" in mode["source"]


def test_a_single_unpinned_clock_unlocks_the_board(board):
    (board / "sys/class/devfreq/17000000.gpu/min_freq").write_text("306000000\n")
    clocks = jetson.fingerprint(board)["jetson"]["clocks"]
    assert clocks["locked"] is False and clocks["unlocked"] == ["gpu 17000000.gpu"]


def test_locked_clock_below_its_maximum_is_flagged_as_throttling(board):
    (board / "sys/devices/system/cpu/cpufreq/policy4/scaling_cur_freq").write_text("1420800\n")
    fingerprint = jetson.fingerprint(board)
    assert fingerprint["jetson"]["clocks"]["locked"] is True
    assert fingerprint["jetson"]["clocks"]["below_max"] == ["cpu4-7"]
    (warning,) = jetson.warnings(fingerprint)
    assert "below their maximum (cpu4-7)" in warning


def test_jetpack_5_gpu_name_and_missing_gpu(board):
    devfreq = board / "sys/class/devfreq"
    (devfreq / "17000000.gpu").rename(devfreq / "17000000.ga10b")
    assert jetson.fingerprint(board)["jetson"]["clocks"]["domains"][-1]["name"] == "gpu 17000000.ga10b"
    shutil.rmtree(devfreq / "17000000.ga10b")
    fingerprint = jetson.fingerprint(board)
    assert fingerprint["jetson"]["clocks"]["locked"] is None
    assert any("could not be read" in w for w in jetson.warnings(fingerprint))


def test_not_a_jetson(tmp_path):
    (tmp_path / "proc/device-tree").mkdir(parents=True)
    (tmp_path / "proc/device-tree/model").write_text("Raspberry Pi 5 Model B Rev 1.0\x00")
    assert jetson.fingerprint(tmp_path) == {} and jetson.fingerprint(tmp_path / "empty") == {}
    assert jetson.warnings({}) == [] and jetson.warnings({"cpu": "x86"}) == []
