"""Jetson fingerprint on fixture trees: an AGX Orin on JetPack 6.2 locked and unlocked, and four boards
(AGX Orin, Orin NX 8 GB, Orin Nano on JetPack 6.0, Orin Nano Super) in tests/fixtures/jetson-boards."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from resnet_deploy.device import jetson

pytestmark = pytest.mark.runtime

FIXTURES = Path(__file__).parent / "fixtures" / "jetson-orin-jp6"
BOARDS = Path(__file__).parent / "fixtures" / "jetson-boards"


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
    ("# R36 (release), REVISION: 4.7, GCID: 42132812, BOARD: generic, EABI: aarch64", "36.4.7", "6.2.1"),
    ("# R36 (release), REVISION: 4.2, GCID: 1, BOARD: generic, EABI: aarch64", "36.4.2", "6.1.1"),
    ("# R36 (release), REVISION: 5.0, GCID: 1, BOARD: generic, EABI: aarch64", "36.5.0", "6.2.2"),
    ("# R35 (release), REVISION: 6.2, GCID: 1, BOARD: t186ref, EABI: aarch64", "35.6.2", "5.1.5"),
    ("# R35 (release), REVISION: 6.4, GCID: 1, BOARD: t186ref, EABI: aarch64", "35.6.4", "5.x"),
    ("# R36 (release), REVISION: 9.0, GCID: 1, BOARD: generic, EABI: aarch64", "36.9.0", "6.x"),
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


@pytest.mark.parametrize("name, jetpack, tensorrt, mode, fastest, dla, throttling, emc_below", [
    ("agx-orin-64gb-jp6.2.1", "6.2.1", "10.3", "MAXN", {"id": 0, "name": "MAXN"}, 2, False, False),
    ("orin-nx-8gb-jp6.1", "6.1", "10.3", "15W", {"id": 0, "name": "MAXN"}, 1, False, True),
    ("orin-nano-8gb-jp6.0", "6.0", "8.6", "15W", {"id": 0, "name": "15W"}, 0, True, None),
    ("orin-nano-super-jp6.2", "6.2", "10.3", "25W", {"id": 2, "name": "MAXN_SUPER"}, 0, False, False),
])
def test_each_board_fixture(name, jetpack, tensorrt, mode, fastest, dla, throttling, emc_below):
    """JetPack and its TensorRT, the running mode, the fastest mode by name (never a fixed number), the DLA
    cores, and throttling from the thermal zones and the EMC clock."""
    board = jetson.fingerprint(BOARDS / name)["jetson"]
    assert (board["jetpack"], board["tensorrt"], board["power_mode"]["name"]) == (jetpack, tensorrt, mode)
    assert jetson.fastest_power_mode(BOARDS / name) == fastest
    assert board["dla_cores"] == dla
    assert any(z["throttling"] for z in board["thermal"]) == throttling and len(board["thermal"]) == 3
    assert (board["emc"]["below_max"] if board["emc"] else None) == emc_below
    notes = " ".join(jetson.warnings({"jetson": board}))
    assert ("thermally throttling" in notes) == throttling and ("EMC" in notes) == bool(emc_below)


def test_tensorrt_8_6_of_jetpack_6_0_is_refused_naming_both():
    from resnet_deploy.errors import EnvironmentFailure

    with pytest.raises(EnvironmentFailure) as refused:
        jetson.require_supported_tensorrt("8.6.2.3", BOARDS / "orin-nano-8gb-jp6.0")
    message = str(refused.value)
    assert "TensorRT 8.6.2.3" in message and "JetPack 6.0" in message and "JetPack 6.1" in message
    assert "\n" not in message
    jetson.require_supported_tensorrt("10.3.0.30", BOARDS / "orin-nx-8gb-jp6.1")
    jetson.require_supported_tensorrt("10.16.1")


def test_fastest_mode_needs_an_nvpmodel_conf(tmp_path):
    from resnet_deploy.errors import EnvironmentFailure

    with pytest.raises(EnvironmentFailure, match="nvpmodel.conf"):
        jetson.fastest_power_mode(tmp_path)


def test_every_tensorrt_import_refuses_8_6_before_building_or_loading(monkeypatch, capsys):
    """build, infer and the Jetson check all import TensorRT through compat.import_tensorrt."""
    import types

    from resnet_deploy.errors import EnvironmentFailure
    from resnet_deploy.trt.compat import import_tensorrt

    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="8.6.2.3"))
    with pytest.raises(EnvironmentFailure, match=r"TensorRT 8\.6\.2\.3 is installed; .*JetPack 6\.1"):
        import_tensorrt("building an engine")
    assert jetson.main(["check"]) == 3
    assert "TensorRT 8.6.2.3 is installed" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "tensorrt", types.SimpleNamespace(__version__="10.3.0.30"))
    assert import_tensorrt("building an engine").__version__ == "10.3.0.30"
