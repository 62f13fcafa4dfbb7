"""Mutation testing, one module at a time, with mutmut 3 (called by tools/mutation.sh).

Each module is mutated in its own copy of the tree (mutants-work/<slug>/), with [tool.mutmut]'s shared settings
plus `only_mutate` = that module and the pytest selection below, so a run is bounded by the few tests that cover
the module. Results go to benchmarks/results/mutation/<slug>.json; the report benchmarks/results/mutation.md is
rebuilt from every JSON there plus the justifications in tools/mutation_survivors.toml.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "mutants-work"
RESULTS = REPO / "benchmarks" / "results" / "mutation"
REPORT = REPO / "benchmarks" / "results" / "mutation.md"
SURVIVORS = REPO / "tools" / "mutation_survivors.toml"

# Module -> the pytest selection that covers it (fast tests only: no session fixture that trains a model).
MODULES: dict[str, list[str]] = {
    "resnet_deploy/quantize/cache.py": [
        "tests/test_cache.py", "tests/test_mutation_kills_cache.py", "-k", "not round_trip_of_real"],
    "resnet_deploy/parity.py": ["tests/test_mutation_kills_parity.py"],
    "resnet_deploy/quantize/calibrate.py": ["tests/test_mutation_kills_calibrate.py"],
    "resnet_deploy/quantize/int8.py": ["tests/test_mutation_kills_int8.py"],
    "resnet_deploy/trt/compat.py": ["tests/test_mutation_kills_compat.py"],
    "resnet_deploy/trt/sidecar.py": ["tests/test_sidecar.py", "tests/test_mutation_kills_sidecar.py", "-k",
                                     "not (inspect or infer or mismatched or sidecar_fields)"],
    "resnet_deploy/cli/__init__.py": ["tests/test_mutation_kills_exit_codes.py"],
    "resnet_deploy/errors.py": ["tests/test_mutation_kills_exit_codes.py"],
    "resnet_deploy/fileio.py": ["tests/test_fileio.py", "tests/test_mutation_kills_fileio.py"],
    "resnet_deploy/quantize/qdq.py": ["tests/test_mutation_kills_qdq.py"],
    # bench: not the tests that build an ONNX or read .ci/gates, README.md or benchmarks/ (not in the mutmut copy).
    "resnet_deploy/bench.py": ["tests/test_mutation_kills_bench.py", "tests/test_bench.py", "tests/test_latency_gate.py",
                               "-k", "not (real_onnx or plots or exit_codes_against or unlocked_jetson or cuda_graph "
                               "or slowed_3x or ci_limit or readme_installs or own_looser)"],
    "resnet_deploy/trt/builder.py": ["tests/test_mutation_kills_builder.py"],
    "resnet_deploy/trt/runner.py": ["tests/test_mutation_kills_runner.py"],
    "resnet_deploy/device/bundle.py": ["tests/test_mutation_kills_bundle.py"],
}
STATUSES = ("killed", "survived", "timeout", "no tests", "suspicious", "segfault", "skipped", "not checked")


def slug(module: str) -> str:
    """`resnet_deploy/quantize/cache.py` -> `quantize.cache`; `resnet_deploy/cli/__init__.py` -> `cli`."""
    return module.removeprefix("resnet_deploy/").removesuffix(".py").removesuffix("/__init__").replace("/", ".")


def toml_value(value: object) -> str:
    """A str, bool, number or list of those as TOML (JSON's spelling is TOML's for these)."""
    return json.dumps(value)


def module_pyproject(module: str) -> str:
    """The repository's pyproject.toml with [tool.mutmut] narrowed to one module and its tests."""
    text = (REPO / "pyproject.toml").read_text()
    shared = tomllib.loads(text)["tool"]["mutmut"]
    settings = {**shared, "only_mutate": [module], "pytest_add_cli_args_test_selection": MODULES[module]}
    body = re.sub(r"(?ms)^\[tool\.mutmut\]\n.*?(?=^\[|\Z)", "", text)
    return body + "\n[tool.mutmut]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in settings.items())


def prepare(module: str) -> Path:
    """A fresh copy of the package and tests for one module's run."""
    work = WORK / slug(module)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("resnet_deploy", "tests"):
        shutil.copytree(REPO / name, work / name, ignore=ignore)
    (work / "pyproject.toml").write_text(module_pyproject(module))
    return work


def mutmut(work: Path, *args: str, timeout: float | None = None) -> str:
    """Run mutmut in a module's copy, at low priority; its stdout. On `timeout` its whole process group
    (the fork server and the mutant being tested included) is killed and TimeoutExpired raised."""
    cmd = ["nice", "-n", "10", sys.executable, "-m", "mutmut", *args]
    with subprocess.Popen(cmd, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                          start_new_session=True) as process:
        try:
            return process.communicate(timeout=timeout)[0]
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            raise


def run_module(module: str, children: int, timeout: float) -> dict:
    """Mutate one module; counts per status, each survivor's diff, and the wall time."""
    work = prepare(module)
    start = time.monotonic()
    try:
        mutmut(work, "run", "--max-children", str(children), timeout=timeout)
        finished = True
    except subprocess.TimeoutExpired:
        finished = False
    seconds = round(time.monotonic() - start, 1)
    statuses = dict(re.findall(r"^\s+(\S+): (.+)$", mutmut(work, "results", "--all", "true"), re.M))
    counts = {s: sum(1 for v in statuses.values() if v == s) for s in STATUSES}
    survivors = {name: mutmut(work, "show", name).split("\n", 1)[-1].strip()
                 for name, status in statuses.items() if status not in ("killed", "timeout")}
    return {"module": module, "tests": MODULES[module], "generated": len(statuses), "counts": counts,
            "survivors": survivors, "statuses": {n: statuses[n] for n in survivors},
            "seconds": seconds, "finished": finished, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def recheck(result: dict) -> dict:
    """Run each survivor of a finished module again with the current tests (copied into its mutmut tree);
    one now killed moves from `survivors` to `killed_on_recheck`. Faster than a new run after adding tests."""
    mutants = WORK / slug(result["module"]) / "mutants"
    shutil.rmtree(mutants / "tests")
    shutil.copytree(REPO / "tests", mutants / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    for name in list(result["survivors"]):
        env = {**os.environ, "MUTANT_UNDER_TEST": name}
        cmd = ["nice", "-n", "10", sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
               *result["tests"]]
        if subprocess.run(cmd, cwd=mutants, env=env, capture_output=True).returncode != 0:
            result.setdefault("killed_on_recheck", {})[name] = result["survivors"].pop(name)
            result["counts"]["killed"] += 1
            result["counts"][result["statuses"].pop(name)] -= 1
    return result


def changed_lines(diff: str) -> str:
    """A mutant's diff reduced to its - and + lines."""
    lines = [ln for ln in diff.splitlines() if ln[:1] in "+-" and not ln.startswith(("+++", "---"))]
    return "\n".join(lines)


def render(results: list[dict], notes: dict[str, str]) -> str:
    """benchmarks/results/mutation.md from the per-module results."""
    out = ["# Mutation testing", "",
           "Produced by `bash tools/mutation.sh [module ...]` (mutmut 3, one module at a time with the tests in",
           "`tools/mutation.py`'s MODULES; `nice -n 10`, 1 child process, on the 2-core build machine shared with",
           "other jobs, so times are upper bounds). Killed includes timeouts (a mutant that hangs the tests).",
           "Survivors are listed below each with a reason from `tools/mutation_survivors.toml`.", "",
           "| module | tests | generated | killed | timeout | survived | other | killed % | time (s) |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    total_s = 0.0
    for r in results:
        c = r["counts"]
        dead = c["killed"] + c["timeout"]
        other = r["generated"] - dead - c["survived"]
        pct = 100 * dead / r["generated"] if r["generated"] else 0.0
        tests = " ".join(r["tests"]).replace("|", "\\|")
        flag = "" if r["finished"] else " (cut)"
        out.append(f"| `{r['module']}` | `{tests}` | {r['generated']} | {c['killed']} | {c['timeout']} | "
                   f"{c['survived']} | {other} | {pct:.1f} | {r['seconds']:.0f}{flag} |")
        total_s += r["seconds"]
    rechecked = [f"`{n.rsplit('.', 1)[-1]}` ({r['module']})" for r in results for n in r.get("killed_on_recheck", {})]
    out += ["", f"Total: {total_s / 60:.1f} min for {len(results)} modules.", "",
            "Killed on a recheck (`--recheck`: the run's survivors against tests added after it, each in a fresh "
            "pytest process, so code run at import is mutated too; counted as killed above): " + (", ".join(rechecked) or "none") + ".", "",
            "Not run: " + (", ".join(f"`{m}`" for m in MODULES if m not in {r['module'] for r in results})
                           or "none") + ".", ""]
    for r in results:
        if not r["survivors"]:
            continue
        out += [f"## Survivors in `{r['module']}`", ""]
        for name, diff in r["survivors"].items():
            why = notes.get(name, "NOT YET JUSTIFIED")
            out += [f"- `{name.rsplit('.', 1)[-1]}` ({r['statuses'][name]}): {why}", "",
                    "  ```diff", *("  " + ln for ln in changed_lines(diff).splitlines()), "  ```", ""]
    return "\n".join(out)


def write_report() -> None:
    """Rebuild mutation.md from every module's JSON."""
    order = {m: i for i, m in enumerate(MODULES)}
    results = [json.loads(p.read_text()) for p in RESULTS.glob("*.json")]
    results.sort(key=lambda r: order.get(r["module"], len(order)))
    notes = tomllib.loads(SURVIVORS.read_text()) if SURVIVORS.exists() else {}
    findings = notes.pop("findings", "")
    REPORT.write_text(render(results, notes) + ("\n## Notes\n\n" + findings if findings else "") + "\n")


def summary_line(r: dict) -> str:
    c = r["counts"]
    return (f"{r['module']}: generated {r['generated']} killed {c['killed']} survived {c['survived']} "
            f"timeout {c['timeout']} other {r['generated'] - c['killed'] - c['survived'] - c['timeout']} "
            f"in {r['seconds']:.0f} s{'' if r['finished'] else ' (cut by the time limit)'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="module paths or slugs (default: all, in MODULES' order)")
    parser.add_argument("--children", type=int, default=1, help="parallel mutant runs (default 1)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per module before it is cut")
    parser.add_argument("--report-only", action="store_true", help="only rebuild mutation.md")
    parser.add_argument("--recheck", action="store_true",
                        help="run the last run's survivors again with the current tests instead of a new run")
    args = parser.parse_args()
    by_slug = {slug(m): m for m in MODULES}
    unknown = [m for m in args.modules if m not in MODULES and m not in by_slug]
    if unknown:
        parser.error(f"unknown module(s) {', '.join(unknown)}; known: {', '.join(by_slug)}")
    modules = [by_slug.get(m, m) for m in args.modules] or list(MODULES)
    os.environ.setdefault("RESNET_DEPLOY_DATA", str(REPO.parent / "shared" / "data" / "fashion-mnist"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    for module in [] if args.report_only else modules:
        if args.recheck:
            result = recheck(json.loads((RESULTS / f"{slug(module)}.json").read_text()))
        else:
            result = run_module(module, args.children, args.timeout)
        if result["generated"] and not result["counts"]["killed"] + result["counts"]["timeout"]:
            # mutmut marks every mutant "not checked" when the selection fails on the unmutated code
            print(f"{module}: no mutant killed; does `pytest {' '.join(MODULES[module])}` pass in "
                  f"mutants-work/{slug(module)}/ (files outside resnet_deploy/ and tests/ are not copied)? "
                  "Result not recorded.", file=sys.stderr)
            return 1
        (RESULTS / f"{slug(module)}.json").write_text(json.dumps(result, indent=1) + "\n")
        print(summary_line(result), flush=True)
    write_report()
    return 0


if __name__ == "__main__":
    sys.exit(main())
