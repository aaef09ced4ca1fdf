"""The dependency direction of DESIGN.md, enforced on the source of every package.

foundry-train may import foundry-data, foundry-models and foundry-eval; nothing imports
foundry-train; foundry-data, -models, -eval and -infer import no other foundry package.
The declared dependencies in each pyproject.toml must agree.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["foundry_data", "foundry_models", "foundry_eval", "foundry_infer", "foundry_train"]
ALLOWED: dict[str, set[str]] = {
    "foundry_data": set(),
    "foundry_models": set(),
    "foundry_eval": set(),
    "foundry_infer": set(),
    "foundry_train": {"foundry_data", "foundry_models", "foundry_eval"},
}


def imported_foundry_packages(source: Path) -> dict[str, list[str]]:
    """Map each foundry package imported by files under `source` to the places that import it."""
    found: dict[str, list[str]] = {}
    for path in sorted(source.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                top = name.split(".")[0]
                if top in PACKAGES:
                    found.setdefault(top, []).append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_imports_follow_dependency_direction(package: str) -> None:
    src = ROOT / "packages" / package.replace("_", "-") / "src" / package
    assert src.is_dir(), f"missing package source {src}"
    imported = imported_foundry_packages(src)
    imported.pop(package, None)
    forbidden = {k: v for k, v in imported.items() if k not in ALLOWED[package]}
    assert not forbidden, f"{package} imports forbidden foundry packages: {forbidden}"


@pytest.mark.parametrize("package", PACKAGES)
def test_declared_dependencies_follow_direction(package: str) -> None:
    meta = tomllib.loads(
        (ROOT / "packages" / package.replace("_", "-") / "pyproject.toml").read_text()
    )
    deps = meta["project"].get("dependencies", [])
    declared = {
        d.split(">")[0].split("<")[0].split("=")[0].split("[")[0].strip().replace("-", "_")
        for d in deps
    }
    foundry = {d for d in declared if d in PACKAGES}
    assert foundry == ALLOWED[package], (
        f"{package} declares {sorted(foundry)}, expected {sorted(ALLOWED[package])}"
    )


def test_checker_catches_a_forbidden_import(tmp_path: Path) -> None:
    """The import scan itself must see both import forms (guards against a check that cannot fail)."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "a.py").write_text("import foundry_train.cli\nfrom foundry_data import manifest\n")
    global ROOT
    old = ROOT
    ROOT = tmp_path
    try:
        found = imported_foundry_packages(pkg)
    finally:
        ROOT = old
    assert set(found) == {"foundry_train", "foundry_data"}
