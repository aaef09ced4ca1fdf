"""Reading the fenced blocks of the docs and the ``doc-test`` markers in front of them.

A workflow page marks each fenced block with an HTML comment on the line before its fence:

    <!-- doc-test: run -->              run it (``bash`` in one shell per page; ``python`` blocks
                                        with the same interpreter), in page order
    <!-- doc-test: file NAME -->        write the block's text to NAME in the working folder
    <!-- doc-test: background -->       start it in the background (a server), stopped at the end
    <!-- doc-test: skip: REASON -->     do not run it (needs the Hub, a GPU, a cluster, ...)

``tests/test_docs.py`` runs the pages this way; this module only parses them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Block", "read_blocks", "shell_commands", "render_script"]

_MARKER = re.compile(r"^<!--\s*doc-test:\s*(run|file|background|skip)\b:?\s*(.*?)\s*-->$")
_FENCE = re.compile(r"^```(\S*)\s*$")


@dataclass(frozen=True)
class Block:
    """One fenced block of a Markdown page."""

    path: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    action: str | None  # run, file, background, skip; None when unmarked
    argument: str  # the file name (file) or the reason (skip)

    @property
    def where(self) -> str:
        return f"{self.path.name}:{self.line}"


def read_blocks(path: Path) -> list[Block]:
    """Every fenced block of ``path`` with the marker on the line before it (if any)."""
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        start = i
        i += 1
        body = []
        while i < len(lines) and lines[i].strip() != "```":
            body.append(lines[i])
            i += 1
        marker = _MARKER.match(lines[start - 1].strip()) if start > 0 else None
        blocks.append(
            Block(
                path=path,
                line=start + 1,
                lang=fence.group(1),
                text="\n".join(body) + "\n",
                action=marker.group(1) if marker else None,
                argument=marker.group(2) if marker else "",
            )
        )
        i += 1
    return blocks


def _logical_lines(text: str) -> list[str]:
    """Lines of a shell block with continuations joined and quotes that span lines kept whole."""
    out, buf = [], ""
    for line in re.sub(r"\\\n\s*", " ", text).splitlines():
        buf = f"{buf}\n{line}" if buf else line
        try:
            shlex.split(buf, comments=True)
        except ValueError:
            continue  # an open quote: the command goes on on the next line
        out.append(buf)
        buf = ""
    return out


def shell_commands(text: str) -> list[list[str]]:
    """The ``foundry-*`` commands of a shell block, split into words as the shell would."""
    commands = []
    for line in _logical_lines(text):
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|()<>"):
                if words and words[0].startswith("foundry-"):
                    commands.append(words)
                words = []
            else:
                words.append(token)
    return commands


_WAIT_FOR_SERVER = """\
python - <<'PYEOF'
import os, time, urllib.request
url = f"http://127.0.0.1:{os.environ['PORT']}/health"
deadline = time.monotonic() + 120
while True:
    try:
        urllib.request.urlopen(url, timeout=2)
        break
    except Exception:
        if time.monotonic() > deadline:
            raise SystemExit(f"the server did not answer {url} within 120 s")
        time.sleep(0.5)
PYEOF
"""


def render_script(blocks: list[Block], workdir: Path) -> str:
    """A bash script that runs the page's marked blocks in order (files are written by it too)."""
    out = [
        "set -euo pipefail",
        "BACKGROUND=()",
        'cleanup() { for p in "${BACKGROUND[@]}"; do kill "$p" 2>/dev/null || true; done; }',
        "trap cleanup EXIT",
    ]
    for n, block in enumerate(blocks):
        if block.action in (None, "skip"):
            continue
        out.append(f"printf '\\n>>> %s at %ss\\n' '{block.where} ({block.action})' \"$SECONDS\"")
        if block.action == "file":
            name = workdir / block.argument
            (workdir / f".block{n}").write_text(block.text)
            out.append(f"cp {shlex.quote(str(workdir / f'.block{n}'))} {shlex.quote(str(name))}")
        elif block.lang == "python":
            (workdir / f"block{n}.py").write_text(block.text)
            out.append(f"python block{n}.py")
        elif block.action == "background":
            # one command, exec'd so that $! is the server itself and gets the SIGTERM
            (workdir / f"block{n}.sh").write_text("exec " + block.text.strip() + "\n")
            out.append(f"bash block{n}.sh > background{n}.log 2>&1 &")
            out.append("BACKGROUND+=($!)")
            out.append(_WAIT_FOR_SERVER)
        else:
            out.append(block.text)
    # Stop the background processes the way an operator would (SIGTERM). A clean stop exits 0, or
    # 143 where uvicorn (>= 0.29) re-raises the SIGTERM after its graceful shutdown.
    out.append(
        'for p in "${BACKGROUND[@]}"; do kill -TERM "$p"; status=0; wait "$p" || status=$?; '
        'if [ "$status" != 0 ] && [ "$status" != 143 ]; then '
        'echo "background process $p exited with $status"; exit 1; fi; done'
    )
    out.append("BACKGROUND=()")
    return "\n".join(out) + "\n"
