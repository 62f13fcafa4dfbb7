"""MkDocs hook (mkdocs.yml `hooks:`): tidy what mkdocs-click renders from the CLI's help texts.

Click help is plain text: `<stem>` and `<out-dir>` placeholders would be read as HTML tags and
vanish, the indented example lines after "Example:" would run together as one paragraph, and
click 8.3 shows an option without a default as `Sentinel.UNSET`. Only the lines mkdocs-click
generates are changed; the rest of the page is left as written.
"""

from __future__ import annotations

import re
from typing import Any

from markdown import Extension
from markdown.preprocessors import Preprocessor

PLACEHOLDER = re.compile(r"<([a-z][\w.-]*)>")
EXAMPLES = re.compile(r"^Examples?\b.*:$")


def _escape_placeholders(line: str) -> str:
    """`<stem>` -> `&lt;stem&gt;` outside inline code spans (odd segments between backticks)."""
    parts = line.split("`")
    return "`".join(PLACEHOLDER.sub(r"&lt;\1&gt;", p) if i % 2 == 0 else p for i, p in enumerate(parts))


def tidy(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_fence, in_examples = False, False
    for line in lines:
        if in_examples and not line.startswith("  "):
            out += ["```", ""]
            in_examples = False
        if line.startswith("```"):
            in_fence = not in_fence
        if in_fence or in_examples:
            out.append(line[2:] if in_examples else line)
            continue
        line = _escape_placeholders(line).replace("`Sentinel.UNSET`", "-")
        out.append(line)
        if EXAMPLES.match(line):
            out += ["", "```text"]
            in_examples = True
    return out + (["```"] if in_examples else [])


class _TidyClick(Preprocessor):
    def __init__(self, md: Any, click: Preprocessor) -> None:
        super().__init__(md)
        self.click = click

    def run(self, lines: list[str]) -> list[str]:
        if not any(line.startswith("::: mkdocs-click") for line in lines):
            return lines
        return tidy(self.click.run(lines))


class TidyClickExtension(Extension):
    def extendMarkdown(self, md: Any) -> None:
        md.preprocessors.register(_TidyClick(md, md.preprocessors["mk_click"]), "mk_click", 141)


def on_config(config: Any) -> Any:
    config.markdown_extensions.append(TidyClickExtension())
    return config
