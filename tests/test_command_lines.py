"""Every `foundry-*` command line the project ships in text parses with the real parser.

Where command lines are collected from:
- the comments of every YAML file under packages/*/src (the shipped training configs say how to
  make their data and how to run them);
- every string literal in packages/*/src/**/*.py (error messages, help epilogs, docstrings).

Which text counts as a command line (the rules, so prose such as "made by foundry-data 0.2" is
not taken for one):
- a span in backticks (`...` or ``...``) that starts with `foundry-X`: when it is only the
  program and subcommand names (`foundry-data convert`) it names a command, and the names must
  exist; with anything more it is a whole command line and must parse;
- a line that starts with `foundry-X SUBCOMMAND` (after leading spaces and `VAR=value`
  environment assignments), as help epilogs write examples; it ends at the line's end, `\\`
  continuations joined, `# comments` dropped;
- `foundry-X SUBCOMMAND ...` after a colon (`example: foundry-train validate cfg.yaml`, `Run:
  foundry-train ...`), up to the end of the sentence;
  (for foundry-train and foundry-eval, whose default command takes a file, a first word ending
  in .yaml/.yml or starting with ./ or / counts as SUBCOMMAND too);
- YAML comments follow the same rules; a trailing `   (explanation)` is dropped.
Placeholders: `...`, each `{expression}` of an f-string and each all-capitals word (`SOURCE`, `N`)
stand for one value, the dummy "1"; as a program's first argument, for one of its subcommands.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import foundry_data.cli
import foundry_eval.cli
import foundry_infer.cli
import foundry_train.cli
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted((ROOT / "packages").glob("*/src"))
DUMMY = "1"
FIELD = "{}"  # where an f-string's {expression} was
PROGRAM = re.compile(r"foundry-(?:data|train|eval|infer)(?![\w:'-])")
PROGRAM_AND_REST = r"foundry-(?:data|train|eval|infer)(?![\w:'-]).*"

PARSERS: dict[str, Callable[[], argparse.ArgumentParser]] = {
    "foundry-data": foundry_data.cli.build_parser,
    "foundry-train": foundry_train.cli.build_parser,
    "foundry-eval": foundry_eval.cli.build_parser,
    "foundry-infer": foundry_infer.cli.build_parser,
}


def _subcommands(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:  # argparse keeps subparsers only here
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


SUBCOMMANDS = {prog: _subcommands(build()) for prog, build in PARSERS.items()}


def _literal_text(node: ast.AST) -> str | None:
    """A string literal's text; an f-string's {expressions} become the dummy value."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.Constant):
                parts.append(str(value.value))
            else:
                parts.append(FIELD)
        return "".join(parts)
    return None


def _python_texts() -> Iterator[tuple[str, str]]:
    for src in SOURCES:
        for path in sorted(src.rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            inner = {
                id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values
            }
            for node in ast.walk(tree):
                text = None if id(node) in inner else _literal_text(node)
                if text and PROGRAM.search(text):
                    yield f"{path.relative_to(ROOT)}:{getattr(node, 'lineno', 0)}", text


def _joined_lines(text: str) -> list[str]:
    """Lines with `\\` continuations joined."""
    return text.replace("\\\n", " ").splitlines()


def _starts_command(prog: str, word: str) -> bool:
    """Whether `prog word` begins a command line rather than prose ("foundry-data output")."""
    if word in SUBCOMMANDS.get(prog, set()):
        return True
    default_command = prog in ("foundry-train", "foundry-eval")
    return default_command and (word.endswith((".yaml", ".yml")) or word.startswith(("./", "/")))


def _commands_in_text(text: str) -> Iterator[str]:
    for m in re.finditer(rf"(``?)({PROGRAM_AND_REST}?)\1", text.replace("\n", " ")):
        yield m.group(2)
    for line in _joined_lines(text):
        m = re.match(rf"\s*(?:[A-Z_]+=\S+\s+)*({PROGRAM_AND_REST})$", line)
        if m and _starts_command(*(m.group(1).split() + [""])[:2]):
            yield _without_aside(m.group(1))
            continue
        for m in re.finditer(r":\s+(foundry-[a-z]+) (\S+)(.*)", line):
            if _starts_command(m.group(1), m.group(2)):
                rest = re.split(r"\.(?:\s|$)", m.group(3), maxsplit=1)[0]
                yield _without_aside(f"{m.group(1)} {m.group(2)}{rest}")


def _without_aside(command: str) -> str:
    """The command without a trailing `   (explanation)`."""
    return re.split(r"\s{2,}\(", command)[0]


def _yaml_commands() -> Iterator[tuple[str, str]]:
    for src in SOURCES:
        for path in sorted(src.rglob("*.y*ml")):
            comments = "\n".join(
                line.split("#", 1)[1] for line in path.read_text().splitlines() if "#" in line
            )
            for command in _commands_in_text(comments):
                yield f"{path.relative_to(ROOT)}", command


def collected_commands() -> list[tuple[str, str]]:
    found = list(_yaml_commands())
    for where, text in _python_texts():
        found += [(where, command) for command in _commands_in_text(text)]
    return found


def _placeholder(word: str) -> bool:
    return word in ("...", FIELD) or re.fullmatch(r"[A-Z][A-Z_]*", word) is not None


def parse_problem(command: str) -> str | None:
    """Why `command` does not parse with its program's real parser (None: it parses)."""
    try:
        words = shlex.split(command, comments=True)
    except ValueError as exc:
        return f"not a shell command line: {exc}"
    prog, argv = words[0], words[1:]
    names = SUBCOMMANDS[prog]
    if not argv:
        return None  # the program's name alone
    if names and _placeholder(argv[0]):
        argv[0] = sorted(names)[0]  # `foundry-data COMMAND --help`: any subcommand
    if len(argv) == 1 and argv[0] in names:
        return None  # `foundry-data convert` names a command, which exists
    argv = [DUMMY if _placeholder(w) else w.replace(FIELD, DUMMY) for w in argv]
    if prog == "foundry-train" and argv[0] not in names and not argv[0].startswith("-"):
        argv = ["train", *argv]  # what foundry_train.cli.main does for `foundry-train cfg.yaml`
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            PARSERS[prog]().parse_args(argv)
    except SystemExit as exc:
        if exc.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def test_the_collector_finds_the_shipped_command_lines() -> None:
    commands = [c for _, c in collected_commands()]
    assert any(c.startswith("foundry-data convert allenai/c4") for c in commands)
    assert any(
        "--concat-tokens" in c and c.startswith("foundry-data convert SOURCE") for c in commands
    )
    assert sum(c.startswith("foundry-infer ") for c in commands) >= 5  # the help examples
    assert sum(c.startswith("foundry-eval ") for c in commands) >= 3
    assert len(commands) >= 40


def test_a_wrong_flag_is_caught() -> None:
    assert parse_problem("foundry-data convert ... --seq-len 2048 --out /data/c4-mds")
    assert parse_problem("foundry-train validate cfg.yaml --no-such-flag") is not None
    assert parse_problem("foundry-data nosuch") is not None


@pytest.mark.parametrize(("where", "command"), collected_commands())
def test_command_line_parses(where: str, command: str) -> None:
    problem = parse_problem(command)
    assert problem is None, f"{where}: `{command}` does not parse: {problem}"
