"""scripts/bump_version.py on a copy of the packages' pyprojects, CHANGELOGs and __init__ files."""

from __future__ import annotations

import importlib.util
import shutil
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def bump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The bump module, pointed at a copy of the five packages' version-bearing files."""
    spec = importlib.util.spec_from_file_location("bump_version", ROOT / "scripts/bump_version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bump_version"] = module
    spec.loader.exec_module(module)
    for package in (ROOT / "packages").iterdir():
        if not (package / "pyproject.toml").is_file():
            continue
        dest = tmp_path / "packages" / package.name
        init = package / "src" / package.name.replace("-", "_") / "__init__.py"
        (dest / init.parent.relative_to(package)).mkdir(parents=True)
        shutil.copy(init, dest / init.relative_to(package))
        shutil.copy(package / "pyproject.toml", dest / "pyproject.toml")
        (dest / "CHANGELOG.md").write_text(
            f"# Changelog\n\n## Unreleased\n\n- work on {package.name}\n\n## 0.0.1 (2026-01-01)\n\n- old\n"
        )
    monkeypatch.setattr(module, "ROOT", tmp_path)
    monkeypatch.setattr(module, "PACKAGES_DIR", tmp_path / "packages")
    yield module
    sys.modules.pop("bump_version", None)


def project(root: Path, package: str) -> dict[str, object]:
    return tomllib.loads((root / "packages" / package / "pyproject.toml").read_text())["project"]


def test_minor_bump_moves_version_changelog_and_dependent_ranges(bump, tmp_path: Path) -> None:
    old = str(project(tmp_path, "foundry-models")["version"])
    major, minor, _ = (int(x) for x in old.split("."))
    assert bump.main(["foundry-models", "minor", "--no-lock"]) == 0
    new = f"{major}.{minor + 1}.0"
    assert project(tmp_path, "foundry-models")["version"] == new
    changelog = (tmp_path / "packages/foundry-models/CHANGELOG.md").read_text()
    assert changelog.index("## Unreleased") < changelog.index(f"## {new} (")
    assert changelog.index(f"## {new} (") < changelog.index("- work on foundry-models")
    train_deps = project(tmp_path, "foundry-train")["dependencies"]
    expected = bump.compatible_range(new)
    assert f"foundry-models{expected}" in train_deps  # type: ignore[operator]
    train_log = (tmp_path / "packages/foundry-train/CHANGELOG.md").read_text()
    assert f"Requires foundry-models {expected}" in train_log
    original = (ROOT / "packages/foundry-models/src/foundry_models/__init__.py").read_text()
    init = (tmp_path / "packages/foundry-models/src/foundry_models/__init__.py").read_text()
    if f'__version__ = "{old}"' in original:  # a literal version is bumped with the pyproject
        assert f'__version__ = "{new}"' in init
    else:
        assert init == original


def test_compatible_ranges() -> None:
    spec = importlib.util.spec_from_file_location("bv", ROOT / "scripts/bump_version.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bv"] = module
    spec.loader.exec_module(module)
    assert module.compatible_range("0.2.0") == ">=0.2,<0.3"
    assert module.compatible_range("1.4.2") == ">=1.4,<2"
    assert module.next_version("0.1.9", "patch") == "0.1.10"
    assert module.next_version("0.1.9", "major") == "1.0.0"


def test_refuses_bad_requests_without_writing(bump, tmp_path: Path, capsys) -> None:
    before = (tmp_path / "packages/foundry-data/pyproject.toml").read_text()
    assert bump.main(["foundry-nothing", "patch", "--no-lock"]) == 2
    assert "unknown package" in capsys.readouterr().err
    assert bump.main(["foundry-data", "0.0.1", "--no-lock"]) == 2
    assert "not above the current" in capsys.readouterr().err
    (tmp_path / "packages/foundry-data/CHANGELOG.md").write_text("# Changelog\n\n## Unreleased\n\n")
    assert bump.main(["foundry-data", "patch", "--no-lock"]) == 2
    assert "records nothing" in capsys.readouterr().err
    assert (tmp_path / "packages/foundry-data/pyproject.toml").read_text() == before


def test_dry_run_writes_nothing(bump, tmp_path: Path) -> None:
    files = sorted((tmp_path / "packages").rglob("*"))
    before = {p: p.read_bytes() for p in files if p.is_file()}
    assert bump.main(["foundry-eval", "patch", "--dry-run"]) == 0
    assert {p: p.read_bytes() for p in files if p.is_file()} == before
