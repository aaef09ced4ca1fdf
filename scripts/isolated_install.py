"""Install each Foundry package alone, from its built wheel, with plain pip, and use it.

    python3 scripts/isolated_install.py                      # all five packages
    python3 scripts/isolated_install.py foundry-infer foundry-data --keep

For each package, in a fresh, empty virtual environment (python3 -m venv):

1. pip is upgraded (the pip bundled with Python 3.11 needs ~20 minutes of backtracking over
   transformers 5.x to resolve foundry-data; docs/install.md has the figures);
2. `pip install <its wheel> --find-links <the wheels>`: plain pip, no overrides, no constraints
   file (the machine's own pip configuration applies, as it would for a user), so the foundry
   wheels it declares come from the same build and everything else from the package index
   (`--no-compile`: no .pyc files written at install time, which changes nothing resolved and
   saves CPU time on two cores);
3. `pip check`; the set of installed foundry distributions is exactly the package and the ones it
   declares; no forbidden distribution (composer's `mosaicml`, `mosaicml-streaming`) is present;
4. scripts/isolated_smoke.py runs inside that environment: the public API (every `__all__` name),
   the console script's `--help`, and a tiny real job;
5. the resolved versions, the time of each phase and the environment's size (du) are recorded.

Environments are deleted after use unless --keep. A summary table is printed and written as
JSON to WORK/summary.json. Exit 1 if any package failed. Needs `uv` (to build) and python3 >= 3.11.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["foundry-models", "foundry-eval", "foundry-infer", "foundry-data", "foundry-train"]
FOUNDRY_DEPS = {
    "foundry-data": set(),
    "foundry-models": set(),
    "foundry-eval": set(),
    "foundry-infer": set(),
    "foundry-train": {"foundry-data", "foundry-models", "foundry-eval"},
}
# DESIGN.md: serving hosts and eval boxes get no training stack; data boxes get no composer.
FORBIDDEN = {
    "foundry-infer": {"mosaicml", "mosaicml-streaming"},
    "foundry-eval": {"mosaicml", "mosaicml-streaming"},
    "foundry-data": {"mosaicml"},
    "foundry-models": {"mosaicml", "mosaicml-streaming"},
    "foundry-train": set(),
}
# The extra each package is installed with: foundry-infer's ONNX Runtime build is an extra
# (`[cpu]` onnxruntime or `[gpu]` onnxruntime-gpu, which hold the same module).
EXTRAS = {"foundry-infer": "[cpu]"}
CLEANUPS: list[subprocess.Popen[bytes]] = []
REPORTED = ["torch", "transformers", "tokenizers", "numpy", "mosaicml", "mosaicml-streaming",
            "onnxruntime", "datasets", "pydantic"]  # fmt: skip


@dataclass
class Result:
    package: str
    ok: bool = False
    failed_step: str = ""
    seconds: dict[str, float] = field(default_factory=dict)
    size_mb: int = 0
    distributions: int = 0
    versions: dict[str, str] = field(default_factory=dict)
    log: str = ""


class StepFailed(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


def normalize(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def log(message: str) -> None:
    print(f"[isolated-install {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(cmd: list[str], log_file: Path, step: str, cwd: Path | None = None) -> None:
    """Run `cmd`, appending its output to `log_file`; raise StepFailed with its tail on error."""
    log(f"{step}: {' '.join(cmd)}")
    with log_file.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n")
        out.flush()
        proc = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    if proc.returncode != 0:
        lines = [
            line
            for line in log_file.read_text().splitlines()
            if "is ignored: it is neither a file nor a directory" not in line
        ]
        raise StepFailed(step, f"exit {proc.returncode}\n" + "\n".join(lines[-60:]))


def build_wheels(dist: Path) -> dict[str, Path]:
    log(f"building every wheel and sdist into {dist}")
    subprocess.run(
        ["uv", "build", "--all-packages", "--quiet", "--out-dir", str(dist)], cwd=ROOT, check=True
    )
    wheels = {}
    for wheel in dist.glob("*.whl"):
        name = normalize(wheel.name.split("-")[0])
        wheels[name] = wheel
    missing = set(ORDER) - set(wheels)
    if missing:
        raise SystemExit(f"error: uv build made no wheel for {sorted(missing)}")
    return wheels


def installed(venv: Path) -> dict[str, str]:
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "list", "--format", "json"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return {normalize(d["name"]): d["version"] for d in json.loads(out)}


def dir_size_mb(path: Path) -> int:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[0])


def check_installed_set(package: str, dists: dict[str, str], wheels: dict[str, Path]) -> None:
    foundry = {name for name in dists if name.startswith("foundry-")}
    expected = {package} | FOUNDRY_DEPS[package]
    if foundry != expected:
        raise StepFailed("installed set", f"foundry distributions {sorted(foundry)}, "
                         f"expected {sorted(expected)}")  # fmt: skip
    for name in expected:
        built = wheels[name].name.split("-")[1]
        if dists[name] != built:
            raise StepFailed(
                "installed set",
                f"{name} {dists[name]} was installed, not the built wheel's {built} "
                "(a release of that name on the index won?)",
            )
    forbidden = sorted(FORBIDDEN[package] & set(dists))
    if forbidden:
        raise StepFailed("forbidden", f"{package} pulled in {forbidden}")


def check_one_onnx_runtime(env_pip: list[str], wheel: Path, log_file: Path) -> None:
    """pip resolves `foundry-infer[gpu]` to onnxruntime-gpu alone (never both builds)."""
    cmd = [*env_pip, "install", "--dry-run", "--ignore-installed", "--quiet", "--report", "-",
           "--find-links", str(wheel.parent), f"{wheel}[gpu]"]  # fmt: skip
    log(f"gpu extra: {' '.join(cmd)}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    with log_file.open("a") as out:
        out.write(f"\n$ {' '.join(cmd)}\n{proc.stderr}")
    if proc.returncode != 0:
        raise StepFailed("gpu extra", f"exit {proc.returncode}\n{proc.stderr[-3000:]}")
    names = {normalize(i["metadata"]["name"]) for i in json.loads(proc.stdout)["install"]}
    builds = sorted(n for n in names if n.startswith("onnxruntime"))
    if builds != ["onnxruntime-gpu"]:
        raise StepFailed("gpu extra", f"foundry-infer[gpu] resolves to {builds}")


def check_one(
    package: str, wheels: dict[str, Path], work: Path, args: argparse.Namespace
) -> Result:
    result = Result(package)
    venv = work / f"venv-{package}"
    scratch = work / f"job-{package}"
    log_file = work / f"{package}.log"
    result.log = str(log_file)
    py = str(venv / "bin" / "python")
    env_pip = [py, "-m", "pip", "--no-input"]
    start = time.monotonic()
    try:
        t = time.monotonic()
        run_logged([args.python, "-m", "venv", str(venv)], log_file, "venv")
        if args.upgrade_pip:
            run_logged(
                [*env_pip, "install", "--quiet", "--upgrade", "pip"], log_file, "pip upgrade"
            )
        result.seconds["venv"] = round(time.monotonic() - t, 1)

        t = time.monotonic()
        run_logged(
            [*env_pip, "install", "--quiet", "--no-compile", "--find-links",
             str(wheels[package].parent), f"{wheels[package]}{EXTRAS.get(package, '')}"],
            log_file,
            "pip install",
        )  # fmt: skip
        result.seconds["install"] = round(time.monotonic() - t, 1)
        if package == "foundry-infer":
            check_one_onnx_runtime(env_pip, wheels[package], log_file)

        run_logged([*env_pip, "check"], log_file, "pip check")
        dists = installed(venv)
        result.distributions = len(dists)
        result.versions = {k: dists[k] for k in REPORTED if k in dists}
        check_installed_set(package, dists, wheels)
        result.size_mb = dir_size_mb(venv)

        t = time.monotonic()
        run_logged(
            [py, str(ROOT / "scripts" / "isolated_smoke.py"), package, str(scratch),
             "--eval-data", str(args.eval_data)],
            log_file,
            "smoke job",
            cwd=work,
        )  # fmt: skip
        result.seconds["job"] = round(time.monotonic() - t, 1)
        result.ok = True
    except StepFailed as err:
        result.failed_step = err.step
        log(f"{package} FAILED at {err.step}:\n{err.detail}")
    finally:
        result.seconds["total"] = round(time.monotonic() - start, 1)
        if not args.keep:  # delete in the background while the next package installs
            CLEANUPS.append(subprocess.Popen(["rm", "-rf", str(venv), str(scratch)]))
    status = "ok" if result.ok else f"FAILED ({result.failed_step})"
    log(f"{package}: {status} in {result.seconds['total']}s, {result.size_mb} MB, "
        f"{result.versions}")  # fmt: skip
    return result


def summary_table(results: list[Result]) -> str:
    lines = [
        "| package | result | install s | job s | total s | env size | dists | resolved |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results:
        versions = ", ".join(f"{k} {v}" for k, v in r.versions.items())
        status = "ok" if r.ok else f"FAILED: {r.failed_step}"
        lines.append(
            f"| {r.package} | {status} | {r.seconds.get('install', '-')} | "
            f"{r.seconds.get('job', '-')} | {r.seconds.get('total', '-')} | "
            f"{r.size_mb / 1024:.1f} GB | {r.distributions} | {versions} |"
        )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Install each Foundry package alone from its wheel with plain pip, and use it.",
        epilog="example: python3 scripts/isolated_install.py foundry-infer --keep",
    )
    parser.add_argument("packages", nargs="*", default=ORDER, help="default: all five")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the environments")
    parser.add_argument("--python", default=sys.executable, help="interpreter for the venvs")
    parser.add_argument(
        "--eval-data", type=Path, default=ROOT.parent / "shared" / "eval-data",
        help="benchmark task files (default: ../shared/eval-data beside the checkout)",
    )  # fmt: skip
    parser.add_argument(
        "--no-upgrade-pip", dest="upgrade_pip", action="store_false",
        help="use the pip that `python -m venv` bundles (slow to resolve foundry-data)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    unknown = [p for p in args.packages if p not in ORDER]
    if unknown:
        parser.error(f"unknown package(s) {unknown}; choose from {ORDER}")
    if not (args.eval_data / "commonsense_reasoning").is_dir() and "foundry-eval" in args.packages:
        parser.error(f"no eval data at {args.eval_data}; pass --eval-data DIR")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("uv") is None:
        print(
            "error: uv is not on PATH; install it (pip install uv) and run again.", file=sys.stderr
        )
        return 2
    work = args.work or Path(tempfile.mkdtemp(prefix="foundry-isolated-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ.pop("VIRTUAL_ENV", None)  # never let an outer (uv) environment leak in
    os.environ.pop("PYTHONPATH", None)
    started = time.monotonic()
    wheels = build_wheels(work / "dist")
    results = [check_one(p, wheels, work, args) for p in ORDER if p in args.packages]
    for cleanup in CLEANUPS:
        cleanup.wait()
    elapsed = round(time.monotonic() - started, 1)
    table = summary_table(results)
    print(f"\nisolated install of {len(results)} package(s) in {elapsed}s (work dir {work}):")
    print(table)
    (work / "summary.json").write_text(
        json.dumps({"seconds": elapsed, "results": [asdict(r) for r in results]}, indent=2)
    )
    failed = [r.package for r in results if not r.ok]
    if failed:
        print(f"\nerror: {', '.join(failed)} failed; logs: " +
              ", ".join(r.log for r in results if not r.ok), file=sys.stderr)  # fmt: skip
        return 1
    if args.work is None and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
