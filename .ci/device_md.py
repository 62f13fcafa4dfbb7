"""DEVICE.md of a bundle tarball as one bash script, for .ci/rehearsal.

    python .ci/device_md.py BUNDLE.tar.gz OUT.sh

Reads DEVICE.md from the tarball (nothing else is unpacked) and:
1. checks that every path inside the bundle it names (`~/NAME/...`, `$HOME/NAME/...`, `NAME/...`) is a
   member of the tarball (globs allowed), else exits 1 naming each missing one;
2. writes OUT.sh: each logical line of the ```sh blocks, in order; a line ending in `# device-only` becomes
   `device_line '<line>'` (syntax check, and the bundle files it reads must exist there: see .ci/rehearsal).
"""

from __future__ import annotations

import fnmatch
import re
import shlex
import sys
import tarfile
from pathlib import PurePosixPath

DEVICE_ONLY = "# device-only"


def read_tarball(path: str) -> tuple[str, str, list[str]]:
    """(bundle name, DEVICE.md text, member paths relative to the bundle folder)."""
    with tarfile.open(path, "r:gz") as tar:
        names = tar.getnames()
        top = PurePosixPath(names[0]).parts[0]
        text = tar.extractfile(f"{top}/DEVICE.md").read().decode()
    members = [PurePosixPath(n).relative_to(top).as_posix() for n in names if n != top]
    return top, text, members


def command_lines(text: str) -> list[tuple[int, str]]:
    """(DEVICE.md line number, logical line) of every ```sh block, continuations joined."""
    lines, inside, pending, start = [], False, "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if raw.strip().startswith("```"):
            inside = raw.strip() == "```sh" if not inside else False
            continue
        if not inside or (not pending and not raw.strip()):
            continue
        start = start or number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        lines.append((start, pending + raw))
        pending, start = "", 0
    return lines


def missing_members(name: str, lines: list[tuple[int, str]], members: list[str]) -> list[str]:
    pattern = re.compile(rf"(?:(?<=[\s='\"])|^)(?:~/|\$HOME/)?{re.escape(name)}/([^\s'\"\]\[]+)")
    missing = []
    for number, line in lines:
        for relative in pattern.findall(line):
            if not any(fnmatch.fnmatchcase(m, relative) for m in members):
                missing.append(f"DEVICE.md:{number} names {name}/{relative}, which the bundle does not have")
    return missing


def script(lines: list[tuple[int, str]]) -> str:
    out = []
    for number, line in lines:
        out.append(f"current={shlex.quote(f'DEVICE.md:{number}: {line}')}")
        if line.rstrip().endswith(DEVICE_ONLY):
            out.append(f"device_line {shlex.quote(line)}")
        else:
            out += [f"echo {shlex.quote('+ ' + line)}", line]
    return "\n".join(out) + "\n"


def main() -> int:
    tarball, out = sys.argv[1:3]
    name, text, members = read_tarball(tarball)
    lines = command_lines(text)
    problems = missing_members(name, lines, members)
    if not lines:
        problems.append("DEVICE.md has no ```sh command block")
    for problem in problems:
        print(f"rehearsal: {problem}", file=sys.stderr)
    if problems:
        return 1
    with open(out, "w") as handle:
        handle.write(script(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
