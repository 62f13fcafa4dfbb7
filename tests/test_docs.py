"""The documentation's shell examples run, so no documented command can rot.

Every line of every ```bash block in README.md and docs/ is an example. A block right after an
`<!-- device-only: REASON -->` comment needs a GPU, TensorRT or a board and is not run; a line
matching `SKIPPED` is not run for the reason given there. Every other line must be a
`resnet-deploy` command, and it runs (in the pages' order, in one folder holding a tiny trained
checkpoint at the path the pages use, as on a host without TensorRT) and must exit 0. Every
`resnet-deploy` line, run or not, must name an existing command and only that command's options.
"""

from __future__ import annotations

import glob
import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEVICE_ONLY = re.compile(r"^<!-- device-only: (\S.*) -->$")
NAV_PAGE = re.compile(r":\s*(\S+\.md)\s*$")
CHECKPOINT = Path("checkpoints/resnet18-w0.25/best.pt")

# Lines not run, matched from their start (after comments are stripped and spaces collapsed).
SKIPPED = {
    r"pip (install|uninstall) ": "installs packages; .ci/run runs the README's set-up commands",
    r"python -m pytest": "the test suite itself; .ci/run runs it",
    r"bash \.ci/run$": "the whole CI, about an hour on 2 cores",
    r"resnet-deploy train$": "the default recipe trains for about 17 minutes; a tiny checkpoint stands in for it",
    r"resnet-deploy train --width 0\.5 --epochs 30": "the longer recipe trains for about two hours",
    r"resnet-deploy train --width 0\.125 --epochs 1": "trains and evaluates for a minute or more on 2 cores; the tiny "
                                                     "checkpoint used here comes from the same `train` (conftest.py)",
    r"resnet-deploy train .*--resume": "resumes the default run, which is not trained here (tests/test_train.py resumes one)",
    r"resnet-deploy qat ": "fine-tunes for minutes; tests/test_qat.py runs QAT on the tiny model",
    r"resnet-deploy serve ": "blocks until SIGTERM; tests/test_serve_lifecycle.py starts, loads and stops it",
    r"resnet-deploy loadtest ": "needs a running serve; the serve tests run loadtest against one",
    r"resnet-deploy bench .*--max-regression": "a latency gate over two short runs is flaky on a shared machine; "
                                               ".ci/gates runs it with longer interleaved runs",
}


@dataclass(frozen=True)
class Example:
    """One command of a ```bash block: where it is, its text, and why it is device-only (if it is)."""

    page: Path
    line: int
    command: str
    device_only: str | None

    def __str__(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}: {self.command}"


def pages() -> list[Path]:
    """docs/ pages in the navigation's order (mkdocs.yml), then README.md."""
    nav = [m.group(1) for m in map(NAV_PAGE.search, (REPO / "mkdocs.yml").read_text().splitlines()) if m]
    return [REPO / "docs" / name for name in nav] + [REPO / "README.md"]


def _commands(block: list[tuple[int, str]]) -> list[tuple[int, str]]:
    """Join continuation lines; drop comments and blank lines; split `a && b` into two commands."""
    joined, start, parts = [], None, []
    for number, text in block:
        start = start or number
        parts.append(text.rstrip().removesuffix("\\"))
        if not text.rstrip().endswith("\\"):
            joined.append((start, " ".join(parts)))
            start, parts = None, []
    commands = []
    for number, text in joined:
        words = shlex.split(text, comments=True)
        while words:
            end = words.index("&&") if "&&" in words else len(words)
            commands.append((number, shlex.join(words[:end])))
            words = words[end + 1:]
    return [(number, command) for number, command in commands if command]


def examples(page: Path) -> list[Example]:
    found, block, reason, previous = [], None, None, ""
    for number, text in enumerate(page.read_text().splitlines(), 1):
        if block is None and text.strip() == "```bash":
            marker = DEVICE_ONLY.match(previous.strip())
            block, reason = [], marker.group(1) if marker else None
        elif block is not None and text.strip() == "```":
            found += [Example(page, n, command, reason) for n, command in _commands(block)]
            block = None
        elif block is not None:
            block.append((number, text))
        if text.strip():
            previous = text
    return found


def all_examples() -> list[Example]:
    return [example for page in pages() for example in examples(page)]


def skip_reason(command: str) -> str | None:
    return next((reason for pattern, reason in SKIPPED.items() if re.match(pattern, command)), None)


def cli_problems(command: str) -> list[str]:
    """What in a `resnet-deploy ...` line the CLI does not have: the command, or any of its options."""
    from resnet_deploy.cli import cli

    words = shlex.split(command)[1:]
    group_options = {o for p in cli.params for o in [*p.opts, *p.secondary_opts]}
    while words and words[0] in group_options:
        words.pop(0)
    if not words:
        return []
    sub = cli.commands.get(words[0])
    if sub is None:
        return [f"no command {words[0]!r}"]
    known = {o for p in sub.params for o in [*p.opts, *p.secondary_opts]} | {"-h", "--help"}
    return [f"{words[0]} has no option {w.split('=')[0]}" for w in words[1:]
            if w.startswith("-") and w.split("=")[0] not in known and not re.fullmatch(r"-\d.*", w)]


def test_the_pages_have_examples_and_markers_name_a_reason():
    found = all_examples()
    by_page = {example.page.name for example in found if not example.device_only}
    assert {"getting-started.md", "jetson.md", "triton.md", "int8.md", "ci.md", "README.md"} <= by_page
    for page in pages():
        for number, text in enumerate(page.read_text().splitlines(), 1):
            if "device-only" in text and text.lstrip().startswith("<!--"):
                assert DEVICE_ONLY.match(text.strip()), f"{page.name}:{number}: write <!-- device-only: REASON -->"


def test_every_documented_command_and_option_exists():
    problems = [f"{example}: {problem}" for example in all_examples()
                if example.command.startswith("resnet-deploy ") for problem in cli_problems(example.command)]
    assert not problems, "\n".join(problems)


def test_a_renamed_option_is_caught():
    command = "resnet-deploy calibrate --onnx artifacts/resnet18-w0.25.onnx --cpu-int8"
    assert cli_problems(command) == []
    assert cli_problems(command.replace("--cpu-int8", "--cpu-int9")) == ["calibrate has no option --cpu-int9"]
    assert cli_problems("resnet-deploy calibrat --onnx a.onnx") == ["no command 'calibrat'"]


def test_every_skip_entry_matches_a_documented_line():
    commands = [example.command for example in all_examples()]
    unused = [pattern for pattern in SKIPPED if not any(re.match(pattern, c) for c in commands)]
    assert not unused, f"SKIPPED entries no page uses any more: {unused}"


def test_the_cli_reference_is_generated_from_the_cli_group():
    import click

    text = (REPO / "docs" / "reference" / "cli.md").read_text()
    options = dict(re.findall(r"^\s+:(\w+): (.+)$", text, re.M))
    module = __import__(options["module"], fromlist=["_"])
    assert isinstance(getattr(module, options["command"]), click.Group)
    assert options["prog_name"] == "resnet-deploy" and options["list_subcommands"] == "true"
    assert "::: mkdocs-click" in text


def _workspace(root: Path, checkpoint: Path, data_dir: Path) -> None:
    """The files the pages assume: the default checkpoint's path (a tiny model) and a folder of photos."""
    from PIL import Image

    from resnet_deploy.data import load_split

    target = root / CHECKPOINT
    target.parent.mkdir(parents=True)
    for source in (checkpoint, checkpoint.with_suffix(".json")):
        shutil.copy(source, target.with_suffix(source.suffix))
    images, _ = load_split("test", str(data_dir))
    (root / "my-photos").mkdir()
    for index in range(2):
        Image.fromarray(255 - images[index]).resize((84, 84)).save(root / "my-photos" / f"photo{index}.png")


def _argv(command: str, cwd: Path) -> list[str]:
    words = shlex.split(command)[1:]
    return [w for word in words for w in (sorted(glob.glob(word, root_dir=cwd)) or [word] if "*" in word else [word])]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_checkpoint, data_dir) -> Path:
    """One folder for every page: later pages use what earlier ones built, as a reader would."""
    root = tmp_path_factory.mktemp("docs")
    _workspace(root, trained_checkpoint, data_dir)
    return root


@pytest.mark.slow
@pytest.mark.parametrize("page", [page for page in pages() if any(not e.device_only for e in examples(page))],
                         ids=lambda page: str(page.relative_to(REPO)))
def test_documented_examples_run(page, workspace, no_tensorrt, monkeypatch, capfd):
    """The page's examples, after those of the pages before it (run the module, not one page alone)."""
    from resnet_deploy.cli import run

    pytest.importorskip("PIL")
    monkeypatch.chdir(workspace)
    failures = []
    for example in examples(page):
        if example.device_only or skip_reason(example.command):
            continue
        if not example.command.startswith("resnet-deploy "):
            failures.append(f"{example}: not a resnet-deploy command; mark the block device-only or add it to SKIPPED")
            continue
        code = run(_argv(example.command, workspace))
        output = capfd.readouterr()
        if code != 0:
            failures.append(f"{example}: exit {code}\n{(output.out + output.err)[-2000:]}")
    assert not failures, "\n".join(failures)
