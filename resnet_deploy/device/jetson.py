"""Jetson board fingerprint for benchmarks: L4T release and JetPack, model, nvpmodel power mode, locked clocks.

Everything is read from plain files under a root (default `/`), so a fixture tree can stand in for
a board and nothing needs root or the `nvpmodel` / `jetson_clocks` binaries:
- `/etc/nv_tegra_release`, first line `# R36 (release), REVISION: 4.3, GCID: ...` -> L4T 36.4.3.
  JetPack by exact L4T release from NVIDIA's JetPack archive (https://developer.nvidia.com/embedded/jetpack-archive,
  https://docs.nvidia.com/jetson/archives; the same table as jetson-stats' `jtop/core/jetson_variables.py`);
  an L4T release not in the table is reported by its major version only (L4T 35.1 was JetPack 5.0.2 and
  35.2.1 was 5.1: a guessed minor would be wrong).
- `/proc/device-tree/model`, NUL-terminated (`NVIDIA Jetson AGX Orin Developer Kit`).
- nvpmodel: the current mode is what `nvpmodel` writes to `/var/lib/nvpmodel/status` (`pmode:0000`);
  its name and the boot default come from `/etc/nvpmodel.conf` (`< POWER_MODEL ID=0 NAME=MAXN >`,
  `< PM_CONFIG DEFAULT=2 >`, per the file header NVIDIA ships). Without a status file nvpmodel runs
  the default.
- clocks: `jetson_clocks` locks each clock to the maximum the power mode allows by raising its
  minimum to its maximum (`jetson_clocks --show` prints `MinFreq=MaxFreq=CurrentFreq`). Read from
  the kernel's cpufreq policies (`/sys/devices/system/cpu/cpufreq/policy*/scaling_{min,max,cur}_freq`,
  kHz; `cpu*/cpufreq` links to them) and the GPU's devfreq device (`/sys/class/devfreq/<gpu>/{min,max,cur}_freq`,
  Hz; on Orin `17000000.gpu` under JetPack 6, `17000000.ga10b` under JetPack 5).
- throttling: the kernel's thermal zones (`/sys/class/thermal/thermal_zone*/{type,temp}`, millidegrees C,
  with the lowest `passive` trip point from `trip_point_*_{type,temp}`) and the memory (EMC) clock, which
  `jetson_clocks` locks through the BPMP's debugfs (`/sys/kernel/debug/bpmp/debug/clk/emc/{rate,max_rate}`,
  Hz; root only, so unreadable for most users).
- DLA cores: the device tree's `nvdla<N>@...` nodes whose `status` is `okay` (AGX Orin 2, Orin NX 8 GB 1,
  Orin Nano none).
- the fastest power mode is chosen by name from nvpmodel.conf, never by number: MAXN_SUPER (JetPack 6.2
  "Super" boards), else MAXN, else the highest wattage in the names (Orin Nano before 6.2: `15W`; its mode 0).

TensorRT and DeepStream per JetPack (JetPack release notes): 6.0 has TensorRT 8.6.2 and DeepStream 7.0;
6.1 and 6.2.x have TensorRT 10.3 and DeepStream 7.1. resnet-deploy needs TensorRT 10.3 (the `TRT-100300`
calibration cache, strongly typed networks): `require_supported_tensorrt` refuses 8.6 naming JetPack 6.1.
These tables and trees were checked against fixture trees only, never on a board.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping

from resnet_deploy.errors import EnvironmentFailure, ResnetDeployError

L4T_RELEASE = "etc/nv_tegra_release"
DEVICE_TREE_MODEL = "proc/device-tree/model"
NVPMODEL_STATUS = "var/lib/nvpmodel/status"
NVPMODEL_CONF = "etc/nvpmodel.conf"
CPUFREQ_POLICIES = "sys/devices/system/cpu/cpufreq"
DEVFREQ = "sys/class/devfreq"
GPU_DEVFREQ_NAMES = ("gpu", "ga10b", "gv11b")
THERMAL = "sys/class/thermal"
EMC_CLOCK = "sys/kernel/debug/bpmp/debug/clk/emc"
DEVICE_TREE = "proc/device-tree"

# NVIDIA's JetPack archive, as jetson-containers' and jetson-stats' tables read it. 35.6.3 and 35.6.4 are
# not in them: reported as "5.x" rather than guessed.
JETPACK_FOR_L4T = {
    "35.1.0": "5.0.2",
    "35.2.1": "5.1",
    "35.3.1": "5.1.1",
    "35.4.1": "5.1.2",
    "35.5.0": "5.1.3",
    "35.6.0": "5.1.4",
    "35.6.1": "5.1.5",
    "35.6.2": "5.1.5",
    "36.0.0": "6.0 EA",
    "36.2.0": "6.0 DP",
    "36.3.0": "6.0",
    "36.4.0": "6.1",
    "36.4.2": "6.1.1",
    "36.4.3": "6.2",
    "36.4.4": "6.2.1",
    "36.4.7": "6.2.1",
    "36.5.0": "6.2.2",
    "36.5.2": "6.2.3",
}
TENSORRT_FOR_JETPACK_MINOR = {"5.0": "8.4", "5.1": "8.5", "6.0": "8.6", "6.1": "10.3", "6.2": "10.3"}
DEEPSTREAM_FOR_JETPACK_MINOR = {"5.1": "6.3", "6.0": "7.0", "6.1": "7.1", "6.2": "7.1"}
JETPACK_MAJOR_FOR_L4T = {"32": "4", "35": "5", "36": "6", "38": "7"}
_L4T_LINE = re.compile(r"#\s*R(\d+)\s*\(release\),\s*REVISION:\s*(\d+(?:\.\d+)*)")
_POWER_MODEL = re.compile(r"^\s*<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=([^\s>]+)\s*>", re.MULTILINE)
_PM_DEFAULT = re.compile(r"^\s*<\s*PM_CONFIG\s+DEFAULT=(\d+)\s*>", re.MULTILINE)
_WATTS = re.compile(r"(\d+)W")
_PMODE = re.compile(r"pmode:\s*(\d+)")


def _read(root: Path, relative: str) -> str | None:
    try:
        return (root / relative).read_text(errors="replace").strip("\x00\n ")
    except OSError:
        return None


def l4t_release(root: Path) -> str | None:
    """`36.4.3` from the first line of /etc/nv_tegra_release, or None."""
    text = _read(root, L4T_RELEASE)
    match = _L4T_LINE.search(text or "")
    if not match:
        return None
    revision = (match.group(2).split(".") + ["0", "0"])[:2]
    return ".".join([match.group(1), *revision])


def jetpack_for(l4t: str) -> str | None:
    """JetPack of an exact L4T release, or `6.x` for an L4T 36 release the table does not list."""
    if l4t in JETPACK_FOR_L4T:
        return JETPACK_FOR_L4T[l4t]
    major = JETPACK_MAJOR_FOR_L4T.get(l4t.split(".")[0])
    return f"{major}.x" if major else None


def versions_for_jetpack(jetpack: str | None) -> dict[str, str | None]:
    """TensorRT and DeepStream that JetPack `jetpack` (`6.2.1`, `6.0`) ships, by its minor release."""
    minor = ".".join((jetpack or "").split()[0].split(".")[:2]) if jetpack else ""
    return {"tensorrt": TENSORRT_FOR_JETPACK_MINOR.get(minor), "deepstream": DEEPSTREAM_FOR_JETPACK_MINOR.get(minor)}


def require_supported_tensorrt(version: str, root: str | Path | None = None) -> None:
    """`trt.compat.require_supported_version`, naming the board's JetPack and L4T when known."""
    from resnet_deploy.trt.compat import require_supported_version

    require_supported_version(version, board_words(root))


def board_words(root: str | Path | None = None) -> str:
    """' (JetPack 6.0, L4T 36.3.0)' on a Jetson whose release is known, else ''."""
    board = fingerprint(root).get("jetson") or {}
    return f" (JetPack {board['jetpack']}, L4T {board['l4t']})" if board.get("jetpack") else ""


def power_modes(root: Path) -> dict[int, str]:
    """Every nvpmodel mode of this board, id -> name, from /etc/nvpmodel.conf."""
    return {int(i): name for i, name in _POWER_MODEL.findall(_read(root, NVPMODEL_CONF) or "")}


def fastest_power_mode(root: str | Path | None = None) -> dict[str, Any]:
    """The mode to benchmark in, by name: MAXN_SUPER, else MAXN, else the most watts; `EnvironmentFailure`
    when nvpmodel.conf lists no mode."""
    root = Path(ROOT if root is None else root)
    modes = power_modes(root)
    if not modes:
        raise EnvironmentFailure(f"{root / NVPMODEL_CONF}: missing or lists no POWER_MODEL; is this a Jetson?")

    def rank(item: tuple[int, str]) -> tuple[int, int]:
        name = item[1].upper()
        watts = max((int(w) for w in _WATTS.findall(name)), default=0)
        return (2 if name == "MAXN_SUPER" else 1 if name == "MAXN" else 0, watts)

    mode_id, name = max(modes.items(), key=rank)
    return {"id": mode_id, "name": name}


def power_mode(root: Path) -> dict[str, Any] | None:
    """The current nvpmodel mode: id, name (from nvpmodel.conf), the boot default, where the id came from."""
    conf = _read(root, NVPMODEL_CONF) or ""
    names = power_modes(root)
    default = _PM_DEFAULT.search(conf)
    default_id = int(default.group(1)) if default else None
    status = _PMODE.search(_read(root, NVPMODEL_STATUS) or "")
    if status:
        mode_id, source = int(status.group(1)), NVPMODEL_STATUS
    elif default_id is not None:
        mode_id, source = default_id, f"{NVPMODEL_CONF} default (no {NVPMODEL_STATUS})"
    else:
        return None
    return {"id": mode_id, "name": names.get(mode_id), "default_id": default_id, "source": "/" + source}


def _frequencies(folder: Path, prefix: str) -> dict[str, int] | None:
    values = {}
    for kind in ("min", "max", "cur"):
        text = _read(folder, f"{prefix}{kind}_freq")
        if text is None or not text.isdigit():
            return None
        values[kind] = int(text)
    return values


def _cpu_names(related_cpus: str | None) -> str | None:
    """`0 1 2 3` -> `cpu0-3` (a cpufreq policy's cores)."""
    cpus = [int(c) for c in (related_cpus or "").split() if c.isdigit()]
    if not cpus:
        return None
    contiguous = cpus == list(range(cpus[0], cpus[0] + len(cpus)))
    return f"cpu{cpus[0]}-{cpus[-1]}" if contiguous and len(cpus) > 1 else "cpu" + ",".join(map(str, cpus))


def clock_domains(root: Path) -> list[dict[str, Any]]:
    """Each CPU cluster (cpufreq policy, kHz) and the GPU (devfreq, Hz) with min, max and current frequency."""
    domains = []
    for policy in sorted((root / CPUFREQ_POLICIES).glob("policy*"), key=lambda p: int(p.name[6:] or 0)):
        freqs = _frequencies(policy, "scaling_")
        if freqs:
            domains.append({"name": _cpu_names(_read(policy, "related_cpus")) or policy.name, "unit": "kHz", **freqs})
    for device in sorted((root / DEVFREQ).glob("*")):
        if any(key in device.name for key in GPU_DEVFREQ_NAMES) and (freqs := _frequencies(device, "")):
            domains.append({"name": f"gpu {device.name}", "unit": "Hz", **freqs})
    return domains


def clock_state(root: Path) -> dict[str, Any]:
    """locked: every clock pinned at its maximum (min == max), as `jetson_clocks` leaves them; None if unreadable."""
    domains = clock_domains(root)
    unlocked = [d["name"] for d in domains if d["min"] < d["max"]]
    below_max = [d["name"] for d in domains if d["min"] >= d["max"] and d["cur"] < d["max"]]
    has_gpu = any(d["name"].startswith("gpu") for d in domains)
    locked = (not unlocked) if domains and has_gpu else None
    return {"locked": locked, "unlocked": unlocked, "below_max": below_max, "domains": domains}


def thermal_zones(root: Path) -> list[dict[str, Any]]:
    """Each thermal zone: name, temperature and its lowest passive trip point (degrees C), throttling when at or
    above it."""
    zones = []
    for zone in sorted((root / THERMAL).glob("thermal_zone*"), key=lambda p: int(p.name[12:] or 0)):
        temp = _read(zone, "temp")
        if temp is None or not temp.lstrip("-").isdigit():
            continue
        trips = [
            int(_read(zone, f"trip_point_{t.name.split('_')[2]}_temp") or 0) / 1000
            for t in zone.glob("trip_point_*_type")
            if _read(zone, t.name) == "passive"
        ]
        passive = min(trips) if trips else None
        celsius = int(temp) / 1000
        zones.append(
            {
                "name": _read(zone, "type") or zone.name,
                "celsius": celsius,
                "passive_trip": passive,
                "throttling": passive is not None and celsius >= passive,
            }
        )
    return zones


def emc_clock(root: Path) -> dict[str, Any] | None:
    """The memory controller clock (Hz) from the BPMP debugfs: rate, max_rate and whether it runs below it."""
    rate, top = _read(root, f"{EMC_CLOCK}/rate"), _read(root, f"{EMC_CLOCK}/max_rate")
    if not (rate and top and rate.isdigit() and top.isdigit()):
        return None
    return {"rate": int(rate), "max_rate": int(top), "below_max": int(rate) < int(top)}


def dla_cores(root: Path) -> int:
    """DLA cores the device tree enables (`nvdla<N>@...` nodes with status `okay`)."""
    return sum(1 for node in (root / DEVICE_TREE).glob("**/nvdla*@*") if _read(node, "status") == "okay")


def is_jetson(root: Path) -> bool:
    return (root / L4T_RELEASE).is_file() or "jetson" in (_read(root, DEVICE_TREE_MODEL) or "").lower()


ROOT = Path("/")  # where the board's files are read (tests point it at a fixture tree)


def fingerprint(root: str | Path | None = None) -> dict[str, Any]:
    """`{"jetson": {...}}` to merge into `bench.fingerprint()`, or `{}` when `root` (default `ROOT`) is not a Jetson."""
    root = Path(ROOT if root is None else root)
    if not is_jetson(root):
        return {}
    l4t = l4t_release(root)
    jetpack = jetpack_for(l4t) if l4t else None
    return {
        "jetson": {
            "model": _read(root, DEVICE_TREE_MODEL),
            "l4t": l4t,
            "jetpack": jetpack,
            **versions_for_jetpack(jetpack),
            "power_mode": power_mode(root),
            "clocks": clock_state(root),
            "thermal": thermal_zones(root),
            "emc": emc_clock(root),
            "dla_cores": dla_cores(root),
        }
    }


def comparable(fingerprint_dict: Mapping[str, Any]) -> dict[str, Any] | None:
    """What absolute latencies on a Jetson depend on and stays put between runs: board, L4T, power mode and
    whether the clocks are locked (not the current frequencies); None off a Jetson."""
    board = fingerprint_dict.get("jetson")
    if not board:
        return None
    mode = board.get("power_mode") or {}
    return {
        "model": board.get("model"),
        "l4t": board.get("l4t"),
        "power_mode": mode.get("id"),
        "clocks_locked": (board.get("clocks") or {}).get("locked"),
    }


def warnings(fingerprint_dict: dict[str, Any]) -> list[str]:
    """What makes latency on this board vary run to run, for `bench` to print beside its results."""
    board = fingerprint_dict.get("jetson")
    if not board:
        return []
    notes = []
    clocks = board["clocks"]
    if clocks["locked"] is None:
        notes.append("Jetson clocks could not be read (cpufreq / GPU devfreq): whether they are locked is unknown")
    elif not clocks["locked"]:
        notes.append(
            f"Jetson clocks are not locked ({', '.join(clocks['unlocked'])} scale with load): latency "
            "varies run to run; run `sudo jetson_clocks` before benchmarking"
        )
    if clocks["below_max"]:
        notes.append(
            f"Jetson clocks locked but running below their maximum ({', '.join(clocks['below_max'])}): "
            "thermal throttling?"
        )
    hot = [
        f"{z['name']} {z['celsius']:.1f} C (passive trip {z['passive_trip']:.1f} C)"
        for z in board.get("thermal", [])
        if z["throttling"]
    ]
    if hot:
        notes.append(f"Jetson is thermally throttling: {', '.join(hot)}; latency is not comparable")
    emc = board.get("emc")
    if emc and emc["below_max"]:
        notes.append(
            f"Jetson memory clock (EMC) at {emc['rate'] / 1e6:.0f} of {emc['max_rate'] / 1e6:.0f} MHz: "
            "not locked by jetson_clocks, or throttled"
        )
    mode = board["power_mode"]
    if mode is None:
        notes.append("nvpmodel power mode unknown (no /var/lib/nvpmodel/status or /etc/nvpmodel.conf)")
    if board["l4t"] is None:
        notes.append("L4T release unknown (/etc/nv_tegra_release missing or unreadable)")
    return notes


def main(argv: list[str] | None = None) -> int:
    """`python -m resnet_deploy.device.jetson check`: one line on the installed TensorRT (exit 3 when unsupported or
    missing); `fastest-mode`: the nvpmodel id of the fastest mode, for `sudo nvpmodel -m`."""
    import sys

    command = (argv if argv is not None else sys.argv[1:]) or ["check"]
    try:
        if command[0] == "fastest-mode":
            print(fastest_power_mode()["id"])
            return 0
        from resnet_deploy.trt.compat import import_tensorrt

        trt = import_tensorrt("the Jetson check", where=board_words())
        print(f"TensorRT {trt.__version__}: supported")
        return 0
    except ResnetDeployError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
