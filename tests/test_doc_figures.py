"""Every training-speed figure the docs and the shipped YAML comments state is in the datasheet.

Figures are percentages with a decimal (`38.7%`), ratios (`1.17x`), memory (the number of
`57.8 GiB`, as the datasheet's tables hold it) and, on lines about speed (MFU, tokens/s,
"against"), thousands-grouped counts (`74,190`); a worked cost estimate such as "about 3,300
GPU-hours" is arithmetic, not a measurement. They are read from docs/*.md, foundry-train's README
and the comments of the shipped training YAMLs; in the repository README only lines about speed
count, since its "What it printed" block quotes a CPU run's own output. Each figure must appear
in benchmarks/DATASHEET.md, where it stands beside its card, date, command and baseline.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASHEET = ROOT / "benchmarks" / "DATASHEET.md"
# 38.7% | 1.17x | 57.8 (of "57.8 GiB") | 74,190
FIGURE = re.compile(
    r"(?<![\w.,])(\d+\.\d+%|\d+\.\d+x|\d+\.\d+(?= GiB)|\d{1,3}(?:,\d{3})+)(?![\w,])"
)
SPEED_WORDS = ("MFU", "tokens/s", "against")


def _sources() -> list[Path]:
    docs = sorted((ROOT / "docs").glob("*.md"))
    yamls = sorted((ROOT / "packages/foundry-train/src/foundry_train/yamls").rglob("*.yaml"))
    return [ROOT / "README.md", ROOT / "packages/foundry-train/README.md", *docs, *yamls]


def _figures(path: Path) -> Iterator[tuple[int, str, str]]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if path.suffix == ".yaml" and not line.lstrip().startswith("#"):
            continue
        about_speed = any(word in line for word in SPEED_WORDS)
        if path == ROOT / "README.md" and not about_speed:
            continue
        for figure in FIGURE.findall(line):
            if "," in figure and not about_speed:
                continue
            yield number, figure, line.strip()


def test_figure_pattern_reads_the_forms_docs_use() -> None:
    line = "38.7% MFU, 1.17x bf16 (74,190 against 63,379), 57.8 GiB, version 0.32.1, 2026-12-05"
    assert FIGURE.findall(line) == ["38.7%", "1.17x", "74,190", "63,379", "57.8"]


@pytest.mark.parametrize("path", _sources(), ids=lambda p: str(p.relative_to(ROOT)))
def test_stated_figures_are_in_the_datasheet(path: Path) -> None:
    held = DATASHEET.read_text(encoding="utf-8")
    missing = [
        f"{path.relative_to(ROOT)}:{number}: {figure} ({line[:90]})"
        for number, figure, line in _figures(path)
        if figure not in held
    ]
    assert not missing, "figures the datasheet does not hold:\n" + "\n".join(missing)


def test_a_figure_missing_from_the_datasheet_is_caught(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("It trained at 99.9% MFU, 9.99x the baseline.\n", encoding="utf-8")
    held = DATASHEET.read_text(encoding="utf-8")
    assert [f for _, f, _ in _figures(page) if f not in held] == ["99.9%", "9.99x"]
