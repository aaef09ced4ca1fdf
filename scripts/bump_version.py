"""Bump one Foundry package's version, its CHANGELOG, and every range that points at it.

Usage (from the repository root):

    uv run python scripts/bump_version.py foundry-models minor
    uv run python scripts/bump_version.py foundry-data patch --dry-run
    uv run python scripts/bump_version.py foundry-eval 0.3.0

What it changes:

1. ``packages/<name>/pyproject.toml``: ``[project] version``.
2. ``packages/<name>/src/<module>/__init__.py``: a literal ``__version__ = "..."`` line, if the
   package keeps one (packages that read their version from installed metadata need nothing).
3. ``packages/<name>/CHANGELOG.md``: the section of unreleased changes (the first ``## ``
   heading that says "unreleased": ``## Unreleased`` or ``## 0.2.0 (unreleased)``) becomes the
   release ``## X.Y.Z (<date>)``, and an empty ``## Unreleased`` section is opened above it.
   Refuses to release an empty section unless ``--note`` gives a line for it.
4. Every other package whose dependencies (or extras) name this package: its range is rewritten
   to the compatible range of the new version (``>=0.Y,<0.(Y+1)`` below 1.0, ``>=X.Y,<(X+1)``
   from 1.0), and a line saying so goes under that package's unreleased section.
5. ``uv lock`` (skip with ``--no-lock``), so ``uv sync --locked`` in CI agrees with the files.

Files are edited line by line, so comments and formatting elsewhere are kept; each file is
written to a temporary name and renamed into place.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES_DIR = ROOT / "packages"
BUMP_KINDS = ("major", "minor", "patch")
VERSION_RE = re.compile(r"^(\d+)\.(\d+)\.(\d+)$")
UNRELEASED = "## Unreleased"


class BumpError(Exception):
    """A user error: the message says what was wrong and how to fix it."""


@dataclass(frozen=True)
class Edit:
    """A whole-file replacement, with a one-line description for the summary."""

    path: Path
    new_text: str
    what: str


def parse_version(text: str) -> tuple[int, int, int]:
    match = VERSION_RE.match(text)
    if match is None:
        raise BumpError(
            f"version {text!r} is not of the form X.Y.Z. Give a plain release version such as 0.2.0."
        )
    major, minor, patch = (int(part) for part in match.groups())
    return major, minor, patch


def next_version(current: str, how: str) -> str:
    """The version after `current`: `how` is major/minor/patch or an explicit X.Y.Z."""
    major, minor, patch = parse_version(current)
    if how == "major":
        return f"{major + 1}.0.0"
    if how == "minor":
        return f"{major}.{minor + 1}.0"
    if how == "patch":
        return f"{major}.{minor}.{patch + 1}"
    if parse_version(how) <= (major, minor, patch):
        raise BumpError(
            f"new version {how} is not above the current {current}. "
            "Give a higher version, or one of major/minor/patch."
        )
    return how


def compatible_range(version: str) -> str:
    """The range a dependent declares on `version`: same minor below 1.0, same major from 1.0."""
    major, minor, _ = parse_version(version)
    if major == 0:
        return f">=0.{minor},<0.{minor + 1}"
    return f">={major}.{minor},<{major + 1}"


def package_names() -> list[str]:
    return sorted(p.name for p in PACKAGES_DIR.iterdir() if (p / "pyproject.toml").is_file())


def read_project(name: str) -> dict[str, object]:
    data = tomllib.loads((PACKAGES_DIR / name / "pyproject.toml").read_text())
    return data["project"]


def set_project_version(text: str, old: str, new: str) -> str:
    """Replace `version = "old"` inside the [project] table (and nowhere else)."""
    lines = text.splitlines(keepends=True)
    table = None
    for i, line in enumerate(lines):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            table = stripped
        elif table == "[project]" and re.match(rf'^version\s*=\s*"{re.escape(old)}"\s*$', stripped):
            lines[i] = line.replace(f'"{old}"', f'"{new}"', 1)
            return "".join(lines)
    raise BumpError(
        f'no line `version = "{old}"` in the [project] table. '
        "Keep the version as a plain string there (not dynamic) so the bump can edit it."
    )


def set_dunder_version(text: str, old: str, new: str) -> str | None:
    """Replace a literal `__version__ = "old"`; None when the module keeps no literal."""
    pattern = re.compile(rf'^(__version__\s*(?::\s*str\s*)?=\s*)"{re.escape(old)}"', re.M)
    if pattern.search(text) is None:
        if re.search(r'^__version__\s*(?::\s*str\s*)?=\s*"', text, re.M):
            raise BumpError(
                f"__init__.py has a literal __version__ that differs from pyproject's {old}. "
                "Make them agree first (or read the version with importlib.metadata)."
            )
        return None
    return pattern.sub(rf'\g<1>"{new}"', text, count=1)


def pending_section(text: str) -> tuple[int, int] | None:
    """Line span (heading index, end index) of the section of changes not yet released.

    Its heading is the first `## ` heading that says "unreleased" (`## Unreleased`,
    `## [Unreleased]` or `## 0.2.0 (unreleased)`); the section ends at the next `## ` heading.
    """
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("## ") and "unreleased" in line.lower():
            end = next(
                (j for j in range(i + 1, len(lines)) if lines[j].startswith("## ")), len(lines)
            )
            return i, end
    return None


def insert_before_first_release(lines: list[str], section: list[str]) -> list[str]:
    first = next((i for i, line in enumerate(lines) if line.startswith("## ")), len(lines))
    return [*lines[:first], *section, *lines[first:]]


def release_changelog(text: str, new: str, today: str, note: str | None, path: Path) -> str:
    """Turn the pending section into release `new` and open an empty `## Unreleased` above it."""
    span = pending_section(text)
    if span is None and note:
        text = add_unreleased_line(text, note)
        note = None
        span = pending_section(text)
    if span is None:
        raise BumpError(
            f"{path} has no section of unreleased changes. Add a heading `{UNRELEASED}` "
            "with what changed under it, then bump again."
        )
    lines = text.splitlines()
    start, end = span
    entries = [line for line in lines[start + 1 : end] if line.strip()]
    if note:
        entries.append(f"- {note}")
    if not entries:
        raise BumpError(
            f"{path} records nothing under '{lines[start]}'. Write what changed there, "
            "or pass --note 'one line' to record it with the bump."
        )
    body = lines[start + 1 : end]
    if note:
        body = [*[line for line in body if line.strip()], f"- {note}", ""]
    released = [UNRELEASED, "", f"## {new} ({today})", *body]
    if released[-1].strip():
        released.append("")
    return "\n".join([*lines[:start], *released, *lines[end:]]).rstrip() + "\n"


def add_unreleased_line(text: str, line: str) -> str:
    """Add `- line` to the pending section, opening `## Unreleased` if there is none."""
    lines = text.splitlines()
    span = pending_section(text)
    if span is None:
        lines = insert_before_first_release(lines, [UNRELEASED, "", f"- {line}", ""])
    else:
        start, end = span
        last = max((i for i in range(start + 1, end) if lines[i].strip()), default=start)
        gap = [""] if last == start else []
        lines = [*lines[: last + 1], *gap, f"- {line}", *lines[last + 1 :]]
    return "\n".join(lines).rstrip() + "\n"


def rewrite_ranges(text: str, target: str, new_range: str) -> str:
    """Point every requirement string on `target` in a pyproject at `new_range`."""
    name = re.escape(target).replace(r"\-", "[-_.]")
    pattern = re.compile(rf'"({name})(\[[^\]]*\])?\s*([<>=!~][^";]*)?(;[^"]*)?"', re.I)

    def replace(match: re.Match[str]) -> str:
        extras = match.group(2) or ""
        marker = match.group(4) or ""
        return f'"{match.group(1)}{extras}{new_range}{marker}"'

    return pattern.sub(replace, text)


def plan(name: str, how: str, note: str | None) -> tuple[str, str, list[Edit]]:
    if name not in package_names():
        raise BumpError(f"unknown package {name!r}. Choose one of: {', '.join(package_names())}.")
    project = read_project(name)
    old = str(project["version"])
    new = next_version(old, how)
    today = dt.datetime.now(dt.UTC).date().isoformat()
    pkg_dir = PACKAGES_DIR / name
    edits: list[Edit] = []

    pyproject = pkg_dir / "pyproject.toml"
    edits.append(
        Edit(
            pyproject,
            set_project_version(pyproject.read_text(), old, new),
            f"version {old} -> {new}",
        )
    )
    init = pkg_dir / "src" / name.replace("-", "_") / "__init__.py"
    if init.is_file():
        updated = set_dunder_version(init.read_text(), old, new)
        if updated is not None:
            edits.append(Edit(init, updated, f"__version__ {old} -> {new}"))
    changelog = pkg_dir / "CHANGELOG.md"
    if not changelog.is_file():
        raise BumpError(
            f"{changelog} is missing. Create it with a '{UNRELEASED}' section, then bump."
        )
    edits.append(
        Edit(
            changelog,
            release_changelog(changelog.read_text(), new, today, note, changelog),
            f"released the unreleased changes as {new}",
        )
    )

    new_range = compatible_range(new)
    for other in package_names():
        if other == name:
            continue
        other_pyproject = PACKAGES_DIR / other / "pyproject.toml"
        text = other_pyproject.read_text()
        updated = rewrite_ranges(text, name, new_range)
        if updated == text:
            continue
        edits.append(Edit(other_pyproject, updated, f"requires {name}{new_range}"))
        other_changelog = PACKAGES_DIR / other / "CHANGELOG.md"
        if other_changelog.is_file():
            line = f"Requires {name} {new_range} (was bumped to {new})."
            edits.append(
                Edit(
                    other_changelog,
                    add_unreleased_line(other_changelog.read_text(), line),
                    "noted the new range under Unreleased",
                )
            )
    return old, new, edits


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Bump a Foundry package's version, its CHANGELOG, and the ranges on it.",
        epilog=(
            "examples:\n"
            "  uv run python scripts/bump_version.py foundry-models minor\n"
            "  uv run python scripts/bump_version.py foundry-data patch --note 'Fix jsonl reader'\n"
            "  uv run python scripts/bump_version.py foundry-eval 0.3.0 --dry-run"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("package", help="distribution name, e.g. foundry-models")
    parser.add_argument("how", help="major, minor, patch, or an explicit X.Y.Z")
    parser.add_argument("--note", help="a CHANGELOG line to add to the release")
    parser.add_argument("--dry-run", action="store_true", help="show the changes, write nothing")
    parser.add_argument("--no-lock", action="store_true", help="do not run `uv lock` afterwards")
    args = parser.parse_args(argv)
    try:
        old, new, edits = plan(args.package, args.how, args.note)
    except BumpError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    verb = "would change" if args.dry_run else "changed"
    print(f"{args.package}: {old} -> {new}")
    for edit in edits:
        print(f"  {verb} {edit.path.relative_to(ROOT)}: {edit.what}")
    if args.dry_run:
        return 0
    for edit in edits:
        write_atomically(edit.path, edit.new_text)
    if not args.no_lock:
        result = subprocess.run(["uv", "lock"], cwd=ROOT)
        if result.returncode != 0:
            print(
                "error: `uv lock` failed after the edits (see above). The files are changed; "
                "fix the conflict and run `uv lock` again.",
                file=sys.stderr,
            )
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
