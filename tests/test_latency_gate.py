"""The latency gate: speedup ratios from one interleaved run, tight enough that a 1.5x slowdown fails.

The arithmetic is pinned with injected timings just inside and just outside the limit that
`.ci/gates` uses. On real timings a runner slowed 3x (it runs each batch three times) must fail
and an unslowed one pass; only ratios of runners measured side by side are asserted, never an
absolute time, so a busy machine cannot flip the result. The committed CI baseline must have been
recorded with the versions the README installs, else its absolute check never runs.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from resnet_deploy import bench
from resnet_deploy.bench import apply_baseline_gate, check_baseline, fingerprint, machine_difference
from resnet_deploy.cli import main
from resnet_deploy.errors import GateFailed
from resnet_deploy.runners.base import BaseRunner

REPO = Path(__file__).resolve().parents[1]
CI_BASELINE = REPO / "benchmarks" / "baselines" / "ci-bench.json"


def ci_max_regression() -> float:
    """The --max-regression of the latency gate in .ci/gates."""
    (value,) = re.findall(r"--max-regression (\d+(?:\.\d+)?)", (REPO / ".ci" / "gates").read_text())
    return float(value)


def report_with(speedup: float, median_ms: float, machine: dict | None = None) -> dict:
    entries = {"ref": {"speedup_vs_reference": 1.0, "latency_ms": {"median": 1.0}},
               "cand": {"speedup_vs_reference": speedup, "latency_ms": {"median": median_ms}}}
    return {"reference": "ref", "results": {"1": entries}, "fingerprint": machine or fingerprint()}


def baseline_of(speedup: float, median_ms: float, machine: dict | None = None) -> dict:
    return {"reference": "ref", "fingerprint": machine or fingerprint(),
            "speedup_vs_reference": {"1": {"ref": 1.0, "cand": speedup}},
            "median_ms": {"1": {"ref": 1.0, "cand": median_ms}}}


def verdicts(report: dict, baseline: dict, pct: float) -> dict[str, bool]:
    return {c["metric"]: c["passed"] for c in check_baseline(report, baseline, pct) if c["label"] == "cand"}


def test_the_ci_limit_fails_a_1_5x_slowdown():
    pct = ci_max_regression()
    assert pct < 100 / 3, "a 1.5x slowdown is a 33.3% loss of speedup; the CI limit must be below it"
    baseline = baseline_of(2.0, 3.0)
    assert verdicts(report_with(2.0 / 1.5, 3.0 * 1.5), baseline, pct) == {"speedup_vs_reference": False,
                                                                          "median_ms": False}
    assert verdicts(report_with(2.0 / 1.1, 3.0 * 1.1), baseline, pct) == {"speedup_vs_reference": True,
                                                                          "median_ms": True}


@pytest.mark.parametrize("pct", [25.0, 20.0])
def test_ratio_and_median_limits_just_inside_and_just_outside(pct):
    """speedup >= baseline * (1 - pct/100) and median <= baseline / (1 - pct/100), with equality passing."""
    keep = 1 - pct / 100
    baseline = baseline_of(2.0, 3.0)
    assert verdicts(report_with(2.0 * keep, 3.0 / keep), baseline, pct) == {"speedup_vs_reference": True,
                                                                            "median_ms": True}
    assert verdicts(report_with(2.0 * keep * (1 - 1e-9), 3.0 / keep * (1 + 1e-9)), baseline, pct) == {
        "speedup_vs_reference": False, "median_ms": False}
    assert verdicts(report_with(2.0 * keep * (1 + 1e-9), 3.0 / keep * (1 - 1e-9)), baseline, pct) == {
        "speedup_vs_reference": True, "median_ms": True}


def test_machine_difference_names_what_differs():
    here = fingerprint()
    assert machine_difference(here, json.loads(json.dumps(here))) is None
    older = {**here, "versions": {**here["versions"], "numpy": "0.1"}}
    assert machine_difference(here, older) == f"numpy {here['versions']['numpy']} here, 0.1 in the baseline"
    assert machine_difference(here, {**here, "cores": 999}) == f"cores {here['cores']!r} here, 999 in the baseline"


def test_a_skipped_absolute_check_is_a_note_locally_and_under_ci_a_failure_unless_the_cpu_differs(tmp_path,
                                                                                                    monkeypatch):
    path = tmp_path / "baseline.json"
    other = {**fingerprint(), "isa": ["another ISA"]}
    path.write_text(json.dumps(baseline_of(2.0, 3.0, other)))
    monkeypatch.delenv("CI", raising=False)
    report = report_with(2.0, 30.0)  # 10x slower in absolute terms, but on another machine: not compared
    report["machine_warnings"] = []
    apply_baseline_gate(report, path, 25)
    assert report["baseline"]["absolute_skipped"] == (f"isa {report['fingerprint']['isa']!r} here, ['another ISA'] "
                                                      "in the baseline")
    (note,) = report["machine_warnings"]
    assert note.startswith(f"absolute medians not compared with {path}: isa ")
    monkeypatch.setenv("CI", "true")
    apply_baseline_gate(report_with(2.0, 30.0), path, 25)  # a CI runner with another CPU: speedups gated only
    older = {**fingerprint(), "versions": {**fingerprint()["versions"], "onnxruntime": "0.1"}}
    path.write_text(json.dumps(baseline_of(2.0, 3.0, older)))
    with pytest.raises(GateFailed, match="absolute medians not compared .* CI=true needs every check to run"):
        apply_baseline_gate(report_with(2.0, 30.0), path, 25)
    path.write_text(json.dumps(baseline_of(2.0, 3.0)))
    apply_baseline_gate(report_with(2.0, 3.0), path, 25)  # same machine under CI: both checks run and pass


def test_the_ci_baseline_was_recorded_with_what_the_readme_installs():
    """`pip install torch==2.13.0 -e ".[torch,dev,serve]"`: the serve extra pins numpy<2; torch is pinned."""
    from packaging.requirements import Requirement
    from packaging.version import Version

    if sys.version_info >= (3, 11):
        import tomllib
    else:
        pytest.skip("reads pyproject.toml with tomllib (Python 3.11+)")
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    numpy_pin = next(Requirement(r) for r in extras["serve"] if Requirement(r).name == "numpy")
    readme_torch = re.search(r"torch==([\d.]+)", (REPO / "README.md").read_text()).group(1)
    recorded = json.loads(CI_BASELINE.read_text())["fingerprint"]
    assert recorded["isa"], "the baseline must say which ISA extensions its CPU had"
    versions = recorded["versions"]
    assert Version(versions["numpy"]) in numpy_pin.specifier, f"numpy {versions['numpy']} is not {numpy_pin}"
    assert Version(versions["torch"]).base_version == readme_torch


# ---- real timings: a runner slowed on purpose ---------------------------------------------------------


class SlowedRunner(BaseRunner):
    """Another runner doing each inference `factor` times: `factor` times its work, whatever the machine's load."""

    def __init__(self, inner: BaseRunner, factor: int):
        super().__init__(inner.name)
        self.inner, self.factor, self.backend = inner, factor, inner.backend

    def _activate(self):
        self.inner.activate()

    def _deactivate(self):
        self.inner.deactivate()

    def _input_metadata(self):
        return self.inner.input_metadata()

    def bytes_per_image(self):
        return self.inner.bytes_per_image()

    def _infer(self, feed):
        for _ in range(self.factor):
            outputs = self.inner.infer(feed)
        return outputs


def slow_down(monkeypatch, name: str, factor: int) -> None:
    """`bench` loads the artifact called `name` as a SlowedRunner."""
    from resnet_deploy import runners

    real = runners.load_runner

    def load(artifact, *args, **kwargs):
        runner = real(artifact, *args, **kwargs)
        return SlowedRunner(runner, factor) if Path(artifact).name == name else runner

    monkeypatch.setattr(runners, "load_runner", load)


@pytest.mark.slow
def test_bench_fails_a_runner_slowed_3x_and_passes_it_unslowed(untrained_onnx, tmp_path, data_dir, monkeypatch,
                                                               capsys):
    """Three copies of one graph: the reference, a control and a candidate. Absolute medians are left
    out (the baseline names another CPU) so only the ratios from each run decide."""
    graphs = [tmp_path / f"{name}.onnx" for name in ("reference", "control", "candidate")]
    for graph in graphs:
        graph.write_bytes(untrained_onnx.read_bytes())
    baseline, report_path = tmp_path / "baseline.json", tmp_path / "bench.json"
    args = ["bench", *graphs, "--batch-sizes", "8", "--threads", "1", "--duration-s", "1.2", "--warmup-ms", "50",
            "--rounds", "12", "--data-dir", data_dir, "--json", report_path, "--baseline", baseline,
            "--max-regression", ci_max_regression()]
    monkeypatch.delenv("CI", raising=False)

    def bench_exit(*extra) -> int:
        with pytest.raises(SystemExit) as exit_info:
            main([str(a) for a in [*args, *extra]])
        return exit_info.value.code

    assert bench_exit("--update-baseline") == 0
    recorded = json.loads(baseline.read_text())
    recorded["fingerprint"]["cpu"] = "another CPU"
    baseline.write_text(json.dumps(recorded))
    capsys.readouterr()
    assert bench_exit() == 0
    assert "absolute medians not compared" in " ".join(capsys.readouterr().out.split())
    slow_down(monkeypatch, "candidate.onnx", 3)
    assert bench_exit() == 1
    checks = {c["label"]: c for c in json.loads(report_path.read_text())["baseline"]["checks"]}
    assert checks["control.onnx"]["passed"] and not checks["candidate.onnx"]["passed"]
    assert checks["candidate.onnx"]["measured"] < 0.5 * checks["candidate.onnx"]["baseline"]
    assert {c["metric"] for c in checks.values()} == {"speedup_vs_reference"}


def test_skipped_checks_report_reason_in_json(tmp_path, monkeypatch):
    """The report records whether and why the absolute check was left out."""
    monkeypatch.delenv("CI", raising=False)
    path = tmp_path / "baseline.json"
    recorded = baseline_of(2.0, 3.0)
    del recorded["median_ms"]
    path.write_text(json.dumps(recorded))
    report = report_with(2.0, 3.0)
    apply_baseline_gate(report, path, 25)
    assert report["baseline"]["absolute_skipped"] == "the baseline records no medians"
    assert report["baseline"]["same_machine"] and bench.running_in_ci() is False


def test_speedup_is_the_median_of_ratios_measured_side_by_side():
    """A burst of load that slows both runners in a round, or one runner in one round, does not move it."""
    assert bench.speedup([1.0, 1.0, 5.0], [0.5, 2.5, 2.5]) == 2.0
    assert bench.speedup([2.0, 2.0], [2.0, 2.0]) == 1.0


def ci_max_median_regression() -> float:
    """The --max-median-regression of the latency gate in .ci/gates."""
    (value,) = re.findall(r"--max-median-regression (\d+(?:\.\d+)?)", (REPO / ".ci" / "gates").read_text())
    return float(value)


def test_absolute_medians_have_their_own_looser_limit_and_speedups_keep_theirs():
    """Medians of one machine moved 1.45x between two idle runs here (0.141 vs 0.204 ms at batch 1), the
    ratios of one interleaved run far less: .ci/gates lets a median move up to 2x, a speedup 25%."""
    pct, median_pct = ci_max_regression(), ci_max_median_regression()
    baseline = baseline_of(2.0, 3.0)
    checks = check_baseline(report_with(2.0, 3.0 * 1.45), baseline, pct, median_pct)
    assert {c["metric"]: c["passed"] for c in checks if c["label"] == "cand"} == {
        "speedup_vs_reference": True, "median_ms": True}
    checks = check_baseline(report_with(2.0 / 1.5, 3.0 * 2.1), baseline, pct, median_pct)
    assert {c["metric"]: c["passed"] for c in checks if c["label"] == "cand"} == {
        "speedup_vs_reference": False, "median_ms": False}
    assert verdicts(report_with(2.0, 3.0 * 1.45), baseline, pct)["median_ms"] is False  # without it: 25% for both


def test_the_median_limit_is_named_in_the_failure(tmp_path):
    path = tmp_path / "baseline.json"
    path.write_text(json.dumps(baseline_of(2.0, 3.0)))
    with pytest.raises(GateFailed, match=r"median_ms .* \(allowed 25%, medians 50%\)"):
        apply_baseline_gate(report_with(2.0, 3.0 * 2.5), path, 25, max_median_regression_pct=50)
