"""Every package is a complete distribution: metadata, version, CHANGELOG, typing, and a
dependency list that is exactly what its source imports.

Third-party imports are read from each package's `src/` with `ast`; import names are mapped to
distributions with `importlib.metadata.packages_distributions()` of the workspace environment.
A declared dependency that no module imports fails, and so does an import whose distribution is
not declared. The few deliberate exceptions are listed below, each with its reason.
The built wheels themselves are checked here too (metadata, py.typed, entry points); installing
them into empty environments with plain pip is `.ci/isolated-install` (scripts/isolated_install.py).
"""

from __future__ import annotations

import ast
import email
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["foundry-data", "foundry-models", "foundry-eval", "foundry-infer", "foundry-train"]
CONSOLE_SCRIPTS = {
    "foundry-data": "foundry_data.cli:main",
    "foundry-eval": "foundry_eval.cli:main",
    "foundry-infer": "foundry_infer.cli:main",
    "foundry-train": "foundry_train.cli:main",
}

# Imports of modules that are not installed in the workspace environment and come with an
# optional extra: module -> (the declared distribution that brings it, why). They must be
# imported lazily (inside a function, or in a try/except ImportError), so the package imports
# without the extra.
OPTIONAL_MODULES: dict[str, dict[str, tuple[str, str]]] = {
    "foundry-models": {
        "flash_attn": (
            "flash-attn-4",
            "extra 'flash': flash-attn-4 (flash_attn.cute) or flash-attn 2",
        ),
        "cutlass": ("flash-attn-4", "NVIDIA's CuTe DSL, installed by flash-attn-4 (extra 'flash')"),
    },
    "foundry-train": {
        # kept out of the workspace environment: transformers imports it whenever it is installed
        "torchao": ("torchao", "extra 'fp8': FP8 training through torchao.float8"),
    },
}
# Distributions a package declares without importing them: another library imports them at run
# time on the package's behalf.
RUNTIME_ONLY: dict[str, dict[str, str]] = {
    "foundry-infer": {
        "onnx": "torch.onnx.export writes the model through it",
        "onnxscript": "torch.onnx.export(dynamo=True) builds the graph with it",
    },
    "foundry-train": {
        "tensorboard": "extra 'tensorboard': composer's TensorboardLogger imports it",
    },
}
# A distribution that installs a module of another distribution's name (a drop-in build).
ALTERNATE_PROVIDERS: dict[str, str] = {"onnxruntime-gpu": "onnxruntime"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def module_name(package: str) -> str:
    return package.replace("-", "_")


def project_table(package: str) -> dict[str, object]:
    return tomllib.loads((ROOT / "packages" / package / "pyproject.toml").read_text())["project"]


def source_dir(package: str) -> Path:
    return ROOT / "packages" / package / "src" / module_name(package)


@dataclass(frozen=True)
class ImportSite:
    module: str  # top-level module name
    where: str  # path:line
    lazy: bool  # inside a function, a try/except ImportError, or `if TYPE_CHECKING`


def _is_import_guard(node: ast.Try) -> bool:
    for handler in node.handlers:
        names = []
        if isinstance(handler.type, ast.Name):
            names = [handler.type.id]
        elif isinstance(handler.type, ast.Tuple):
            names = [e.id for e in handler.type.elts if isinstance(e, ast.Name)]
        if {"ImportError", "ModuleNotFoundError", "Exception"} & set(names):
            return True
    return False


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _defers_imports(node: ast.AST) -> bool:
    """Imports below `node` do not run when the module is imported (or may fail softly)."""
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
        return True
    if isinstance(node, ast.Try):
        return _is_import_guard(node)
    return isinstance(node, ast.If) and _is_type_checking(node)


def import_sites(path: Path, relative_to: Path) -> list[ImportSite]:
    """Every absolute import in `path`, with whether it runs at import time of the module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    sites: list[ImportSite] = []

    def visit(node: ast.AST, lazy: bool) -> None:
        for child in ast.iter_child_nodes(node):
            child_lazy = lazy or _defers_imports(child)
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            for name in names:
                where = f"{path.relative_to(relative_to)}:{child.lineno}"
                sites.append(ImportSite(name.split(".")[0], where, child_lazy))
            visit(child, child_lazy)

    visit(tree, False)
    return sites


def third_party_imports(package: str) -> list[ImportSite]:
    own = module_name(package)
    skip = set(sys.stdlib_module_names) | {"__future__", own}
    sites: list[ImportSite] = []
    for path in sorted(source_dir(package).rglob("*.py")):
        sites += [s for s in import_sites(path, ROOT) if s.module not in skip]
    return sites


@cache
def module_to_distributions() -> dict[str, set[str]]:
    mapping = {
        mod: {normalize(d) for d in dists} for mod, dists in packages_distributions().items()
    }
    # Editable installs of the workspace packages list no files, so name them here.
    mapping.update({module_name(p): {p} for p in PACKAGES})
    return mapping


def requirement_names(requirements: list[str]) -> set[str]:
    return {normalize(Requirement(r).name) for r in requirements}


def declared(package: str) -> tuple[set[str], set[str]]:
    """(required, optional) distribution names a package declares."""
    project = project_table(package)
    required = requirement_names(list(project.get("dependencies", [])))  # type: ignore[arg-type]
    extras: dict[str, list[str]] = project.get("optional-dependencies", {})  # type: ignore[assignment]
    optional = set().union(*(requirement_names(reqs) for reqs in extras.values()))
    return required, optional


@dataclass
class DependencyAudit:
    missing: dict[str, list[str]]  # distribution -> import sites
    unused: set[str]
    eager_optional: dict[str, list[str]]  # extra-only distribution imported at import time
    unmapped: dict[str, list[str]]  # module with no known distribution


def audit_dependencies(package: str) -> DependencyAudit:
    required, optional = declared(package)
    optional_modules = OPTIONAL_MODULES.get(package, {})
    mapping = module_to_distributions()
    foundry = set(PACKAGES)
    audit = DependencyAudit({}, set(), {}, {})
    used: set[str] = set()
    for site in third_party_imports(package):
        if site.module in optional_modules:
            used.add(optional_modules[site.module][0])
            if not site.lazy:
                audit.eager_optional.setdefault(site.module, []).append(site.where)
            continue
        dists = mapping.get(site.module)
        if dists is None:
            audit.unmapped.setdefault(site.module, []).append(site.where)
            continue
        if dists & foundry:
            used |= dists & foundry
            continue
        hit = dists & (required | optional)
        if not hit:
            audit.missing.setdefault("/".join(sorted(dists)), []).append(site.where)
            continue
        used |= hit
        if not (hit & required) and not site.lazy:
            audit.eager_optional.setdefault("/".join(sorted(hit)), []).append(site.where)
    for alternate, module in ALTERNATE_PROVIDERS.items():
        if module in {s.module for s in third_party_imports(package)}:
            used.add(alternate)
    runtime_only = set(RUNTIME_ONLY.get(package, {}))
    audit.unused = (required | optional) - used - {normalize(d) for d in runtime_only}
    return audit


# ----------------------------------------------------------------------------------------------
# Files and metadata


@pytest.mark.parametrize("package", PACKAGES)
def test_package_has_version_readme_changelog_and_typing_marker(package: str) -> None:
    pkg = ROOT / "packages" / package
    project = project_table(package)
    version = str(project.get("version", ""))
    assert re.fullmatch(r"\d+\.\d+\.\d+", version), f"{package}: version {version!r} is not X.Y.Z"
    assert project.get("readme") == "README.md", f"{package}: [project] readme must be README.md"
    readme = (pkg / "README.md").read_text()
    assert len(readme.split()) >= 50, f"{package}: README.md is too short to be its PyPI page"
    changelog = pkg / "CHANGELOG.md"
    assert changelog.is_file(), f"{package}: CHANGELOG.md is missing"
    headings = [line for line in changelog.read_text().splitlines() if line.startswith("## ")]
    assert any(re.search(rf"\b{re.escape(version)}\b", h) for h in headings), (
        f"{package}: CHANGELOG.md has no '## ' heading for the current version {version}"
    )
    assert (source_dir(package) / "py.typed").is_file(), f"{package}: py.typed is missing"


@pytest.mark.parametrize("package", PACKAGES)
def test_project_metadata_is_complete(package: str) -> None:
    project = project_table(package)
    for key in ("description", "license", "requires-python", "authors", "classifiers"):
        assert project.get(key), f"{package}: [project] {key} is missing"
    classifiers: list[str] = project["classifiers"]  # type: ignore[assignment]
    assert "Typing :: Typed" in classifiers, f"{package}: add the 'Typing :: Typed' classifier"
    assert "Programming Language :: Python :: 3.11" in classifiers
    assert str(project["requires-python"]).startswith(">=3.11")
    scripts: dict[str, str] = project.get("scripts", {})  # type: ignore[assignment]
    if package in CONSOLE_SCRIPTS:
        assert scripts.get(package) == CONSOLE_SCRIPTS[package], (
            f"{package}: [project.scripts] must map {package} to {CONSOLE_SCRIPTS[package]}"
        )
        module, func = CONSOLE_SCRIPTS[package].split(":")
        cli = ROOT / "packages" / package / "src" / Path(*module.split(".")).with_suffix(".py")
        tree = ast.parse(cli.read_text())
        defined = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        assert func in defined, f"{package}: {cli.relative_to(ROOT)} defines no {func}()"


@pytest.mark.parametrize("package", PACKAGES)
def test_init_declares_all_and_version(package: str) -> None:
    init = source_dir(package) / "__init__.py"
    tree = ast.parse(init.read_text())
    exported: list[str] | None = None
    bound: set[str] = set()
    version_literal: str | None = None
    for node in tree.body:
        targets: list[ast.expr] = []
        value: ast.expr | None = None
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        for target in targets:
            if isinstance(target, ast.Name):
                bound.add(target.id)
                if target.id == "__all__" and isinstance(value, ast.List | ast.Tuple):
                    exported = [e.value for e in value.elts if isinstance(e, ast.Constant)]
                if target.id == "__version__" and isinstance(value, ast.Constant):
                    version_literal = str(value.value)
        if isinstance(node, ast.Import | ast.ImportFrom):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            bound.add(node.name)
        if isinstance(node, ast.Try):  # `try: __version__ = version(...)`
            for inner in ast.walk(node):
                if isinstance(inner, ast.Name) and isinstance(inner.ctx, ast.Store):
                    bound.add(inner.id)
        if isinstance(node, ast.If) and _is_type_checking(node):
            # names loaded lazily by a module __getattr__ are typed by imports under
            # `if TYPE_CHECKING:`; without them type checkers see the public names as Any
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom):
                    bound |= {a.asname or a.name for a in inner.names}
    assert exported, f"{package}: __init__.py must define a literal, non-empty __all__"
    assert len(exported) == len(set(exported)), f"{package}: __all__ has duplicates"
    unbound = [name for name in exported if name not in bound]
    assert not unbound, (
        f"{package}: __all__ names {unbound}, which __init__.py does not bind (a name loaded by "
        "a module __getattr__ also needs an import under `if TYPE_CHECKING:` to be typed)"
    )
    assert "__version__" in bound, f"{package}: __init__.py must define __version__"
    if version_literal is not None:
        assert version_literal == project_table(package)["version"], (
            f"{package}: __version__ = {version_literal!r} differs from pyproject's version"
        )


# ----------------------------------------------------------------------------------------------
# Dependencies are exactly what the source imports


@pytest.mark.parametrize("package", PACKAGES)
def test_declared_dependencies_match_imports(package: str) -> None:
    audit = audit_dependencies(package)
    problems: list[str] = []
    for dist, where in sorted(audit.missing.items()):
        problems.append(f"imports {dist} but does not declare it (at {', '.join(where[:3])})")
    for dist in sorted(audit.unused):
        problems.append(f"declares {dist} but no module imports it")
    for dist, where in sorted(audit.eager_optional.items()):
        problems.append(
            f"imports {dist}, which only an extra provides, at import time ({', '.join(where[:3])});"
            " import it inside the function that needs it"
        )
    for module, where in sorted(audit.unmapped.items()):
        problems.append(
            f"imports {module!r}, which no installed distribution provides "
            f"({', '.join(where[:3])}); declare and install it, or list it in OPTIONAL_MODULES"
        )
    assert not problems, f"{package}:\n  " + "\n  ".join(problems)


@pytest.mark.parametrize("package", PACKAGES)
def test_internal_ranges_contain_the_workspace_version(package: str) -> None:
    """foundry-train's `foundry-models>=0.1,<0.2` must admit the foundry-models in the tree."""
    for requirement in project_table(package).get("dependencies", []):  # type: ignore[union-attr]
        req = Requirement(str(requirement))
        if normalize(req.name) not in PACKAGES:
            continue
        assert str(req.specifier), f"{package}: {req.name} needs a version range"
        current = Version(str(project_table(normalize(req.name))["version"]))
        assert current in req.specifier, (
            f"{package}: range {req} excludes {req.name} {current}; run "
            f"scripts/bump_version.py or fix the range"
        )
        assert any(s.operator == "<" for s in req.specifier), (
            f"{package}: {req} has no upper bound; use the compatible range the bump script writes"
        )


def test_audit_catches_missing_unused_and_eager_optional(tmp_path: Path, monkeypatch) -> None:
    """The audit must see each kind of mistake (guards against a check that cannot fail)."""
    pkg = tmp_path / "packages" / "foundry-demo"
    src = pkg / "src" / "foundry_demo"
    src.mkdir(parents=True)
    (pkg / "pyproject.toml").write_text(
        '[project]\nname = "foundry-demo"\nversion = "0.1.0"\n'
        'dependencies = ["pytest>=8", "packaging"]\n'
        '[project.optional-dependencies]\nx = ["pyyaml"]\n'
    )
    (src / "__init__.py").write_text(
        "import yaml\nimport packaging\n\ndef f():\n    import numpy\n    import flash_attn\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    monkeypatch.setitem(OPTIONAL_MODULES, "foundry-demo", {"flash_attn": ("pyyaml", "test")})
    audit = audit_dependencies("foundry-demo")
    assert set(audit.missing) == {"numpy"}
    assert audit.unused == {"pytest"}
    assert set(audit.eager_optional) == {"pyyaml"}
    assert audit.unmapped == {}


# ----------------------------------------------------------------------------------------------
# The built distributions


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    uv = shutil.which("uv")
    if uv is None:
        pytest.fail("uv is not on PATH; run the suite with `uv run pytest`")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [uv, "build", "--all-packages", "--quiet", "--out-dir", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    return out


@pytest.mark.parametrize("package", PACKAGES)
def test_wheel_and_sdist_carry_complete_metadata(package: str, built: Path) -> None:
    project = project_table(package)
    version = str(project["version"])
    stem = f"{module_name(package)}-{version}"
    wheel = built / f"{stem}-py3-none-any.whl"
    assert wheel.is_file(), f"no wheel {wheel.name} in {sorted(p.name for p in built.iterdir())}"
    assert (built / f"{stem}.tar.gz").is_file(), f"no sdist {stem}.tar.gz"
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        meta = email.message_from_bytes(zf.read(f"{stem}.dist-info/METADATA"))
        entry_points = (
            zf.read(f"{stem}.dist-info/entry_points.txt").decode()
            if f"{stem}.dist-info/entry_points.txt" in names
            else ""
        )
    mod = module_name(package)
    assert f"{mod}/py.typed" in names and f"{mod}/__init__.py" in names
    assert not any(n.startswith(("tests/", f"{mod}/tests/")) for n in names)
    assert meta["Name"] == package and meta["Version"] == version
    assert meta["Summary"] == project["description"]
    assert meta["License-Expression"] == project["license"]
    assert meta["Requires-Python"] == project["requires-python"]
    assert meta["Description-Content-Type"] == "text/markdown"
    readme_title = (ROOT / "packages" / package / "README.md").read_text().splitlines()[0]
    assert readme_title in (meta.get_payload() or ""), "the README is not the long description"
    assert set(meta.get_all("Classifier") or []) == set(project["classifiers"])  # type: ignore[arg-type]
    wheel_requires = {normalize(Requirement(r).name) for r in meta.get_all("Requires-Dist") or []}
    required, optional = declared(package)
    assert wheel_requires == required | optional
    if package in CONSOLE_SCRIPTS:
        assert f"{package} = {CONSOLE_SCRIPTS[package]}" in entry_points
