"""The package reads as the data flow, with no import cycle: every `resnet_deploy` import (function-level ones
included) is an edge of a graph that must be acyclic, and each module imports alone."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import resnet_deploy

PACKAGE = Path(resnet_deploy.__file__).parent


def module_files() -> dict[str, Path]:
    """Dotted module name -> file, for every module of the package."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ["resnet_deploy", *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name `module` imports anywhere in its file (absolute or relative)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (a module's own parent packages excluded: Python runs them
    first anyway, and `from resnet_deploy import __version__` is not a dependency on a sibling)."""
    modules = module_files()
    graph = {}
    for module, path in modules.items():
        owners = {_owner(name, modules) for name in imported_names(module, path) if name.startswith("resnet_deploy")}
        graph[module] = {o for o in owners if o and o != module and not module.startswith(o + ".")}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str]:
    """One cycle as [a, b, ..., a], or [] when the graph is acyclic (depth-first search, colours)."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return []

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return []


def test_the_package_has_no_import_cycle():
    assert find_cycle(import_graph()) == []


def test_the_cycle_check_finds_a_cycle_through_function_level_imports():
    graph = import_graph()
    assert "resnet_deploy.pipeline" in graph["resnet_deploy.device.make"]  # device calls the pipeline...
    graph["resnet_deploy.pipeline"].add("resnet_deploy.device.make")  # ...so the reverse edge closes a cycle
    cycle = find_cycle(graph)
    assert cycle[0] == cycle[-1] and {"resnet_deploy.pipeline", "resnet_deploy.device.make"} <= set(cycle)


def test_only_the_cli_reaches_the_device_modules_that_run_the_pipeline():
    """device.make and device.build call the pipeline's stages; below the CLI nothing calls them back."""
    graph = import_graph()
    callers = {m for m, deps in graph.items() if deps & {"resnet_deploy.device.make", "resnet_deploy.device.build"}}
    assert callers and all(m.startswith("resnet_deploy.cli") for m in callers), sorted(callers)


def test_each_module_imports_alone():
    """Each module imported with none of the package's other modules loaded before it (third-party ones stay
    cached, so this takes seconds, not a minute of interpreters)."""
    script = (
        "import importlib, sys\n"
        "failed = []\n"
        "for name in sys.argv[1:]:\n"
        "    for loaded in [m for m in sys.modules if m == 'resnet_deploy' or m.startswith('resnet_deploy.')]:\n"
        "        del sys.modules[loaded]\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as exc:\n"
        "        failed.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        "print('\\n'.join(failed))\n"
        "sys.exit(1 if failed else 0)\n"
    )
    modules = sorted(m for m in module_files() if not m.endswith("__main__"))
    done = subprocess.run([sys.executable, "-c", script, *modules], capture_output=True, text=True, timeout=300,
                          cwd=PACKAGE.parent, check=False)
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
