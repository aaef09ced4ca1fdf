"""Refusing malicious checkpoints before anything unpickles them.

composer 0.32 loads checkpoints with ``torch.load(weights_only=False)`` and torch.distributed
.checkpoint reads ``.metadata`` with a plain ``pickle.load``: either runs any callable a pickle
names. Before a checkpoint reaches them (autoresume, load_path, export-hf) every pickle in it is
run through a model of the unpickler's stack, opcode by opcode, executing nothing:

- each global it imports must be one exact ``(module, qualname)`` pair of
  :data:`~foundry_train.checkpointing.allowlist.ALLOWED_GLOBALS`;
- only those globals may be called (REDUCE, NEWOBJ, OBJ, INST), so nothing a call returns is
  called in turn, and none of them may be modified (BUILD, SETITEM, APPEND...), so no class or
  function of the process is patched;
- the extension registry (EXT1/2/4) and unresolvable STACK_GLOBALs are refused.

A full checkpoint must also be a zip laid out exactly as ``torch.save`` writes it (a TorchScript
archive, which ``torch.load`` hands to ``torch.jit.load``, is refused).
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, cast

from foundry_train.checkpointing.allowlist import ALLOWED_GLOBALS
from foundry_train.errors import CheckpointSecurityError, FoundryError

__all__ = [
    "ALLOWED_GLOBALS",
    "disallowed_globals",
    "pickle_globals",
    "scan_checkpoint",
    "load_dcp_metadata",
    "read_skeleton",
    "full_checkpoint_skeleton",
]

_STR_OPS = frozenset({"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"})
_CALL_OPS = frozenset({"REDUCE", "NEWOBJ", "NEWOBJ_EX"})
_MUTATE_ONE = {"BUILD": 1, "SETITEM": 2, "APPEND": 1}  # items popped above the target
_MUTATE_MARK = frozenset({"SETITEMS", "APPENDS", "ADDITEMS"})
_MARK_OPS = frozenset({"LIST", "TUPLE", "DICT", "FROZENSET", "POP_MARK"})
_TORCH_ENTRY = re.compile(
    r"[^/]+/(data\.pkl|\.format_version|\.storage_alignment|byteorder|version"
    r"|\.data/version|\.data/serialization_id|data/\d+)"
)


class _Unsafe(Exception):
    """A pickle the model refuses (or cannot follow): never unpickle it."""


class _Value:
    """A stack entry of the model: a str (its value), a global (its name) or anything else."""

    __slots__ = ("kind", "text")

    def __init__(self, kind: str, text: str = "") -> None:
        self.kind, self.text = kind, text


_ANY = _Value("any")


class _Machine:
    """The unpickler's object stack, mark stack and memo, holding only what the checks need."""

    def __init__(self) -> None:
        self.stack: list[_Value] = []
        self.marks: list[int] = []
        self.memo: dict[int, _Value] = {}
        self.globals: list[tuple[str, str]] = []

    def pop(self) -> _Value:
        if len(self.stack) <= (self.marks[-1] if self.marks else 0):
            raise _Unsafe("stack underflow")
        return self.stack.pop()

    def pop_mark(self) -> list[_Value]:
        if not self.marks:
            raise _Unsafe("no mark to pop to")
        start = self.marks.pop()
        items = self.stack[start:]
        del self.stack[start:]
        return items

    def top(self) -> _Value:
        if not self.stack:
            raise _Unsafe("empty stack")
        return self.stack[-1]

    def push_global(self, module: str, name: str) -> None:
        self.globals.append((module, name))
        if (module, name) not in ALLOWED_GLOBALS:
            raise _Unsafe(f"{module}.{name}")
        self.stack.append(_Value("global", f"{module}.{name}"))

    def call(self, fn: _Value) -> None:
        if fn.kind != "global":
            raise _Unsafe("a call of something that is not an allow-listed global")
        self.stack.append(_ANY)

    def mutate(self, target: _Value, op: str) -> None:
        if target.kind == "global":
            raise _Unsafe(f"{op} on the global {target.text} (it would patch it in place)")

    def step(self, name: str, arg: Any) -> None:
        if name in ("PROTO", "FRAME", "STOP"):
            return
        if name == "MARK":
            self.marks.append(len(self.stack))
        elif name in _STR_OPS:
            self.stack.append(_Value("str", str(arg)))
        elif name in ("GLOBAL", "INST"):
            module, _, attr = str(arg).partition(" ")
            if name == "INST":
                self.pop_mark()
            self.push_global(module, attr)
            if name == "INST":
                self.call(self.pop())
        elif name == "STACK_GLOBAL":
            attr, module = self.pop(), self.pop()
            if attr.kind != "str" or module.kind != "str":
                raise _Unsafe("a STACK_GLOBAL whose names cannot be resolved")
            self.push_global(module.text, attr.text)
        else:
            self._step_other(name, arg)

    def _step_other(self, name: str, arg: Any) -> None:
        if name in ("PUT", "BINPUT", "LONG_BINPUT"):
            self.memo[int(arg)] = self.top()
        elif name == "MEMOIZE":
            self.memo[len(self.memo)] = self.top()
        elif name in ("GET", "BINGET", "LONG_BINGET"):
            if int(arg) not in self.memo:
                raise _Unsafe("a memo entry that was never stored")
            self.stack.append(self.memo[int(arg)])
        elif name in _CALL_OPS:
            for _ in range(2 if name == "NEWOBJ_EX" else 1):
                self.pop()  # the arguments
            self.call(self.pop())  # the callable (a class for NEWOBJ)
        elif name == "OBJ":
            items = self.pop_mark()
            self.call(items[0] if items else _ANY)
        elif name in _MUTATE_ONE:
            for _ in range(_MUTATE_ONE[name]):
                self.pop()
            self.mutate(self.top(), name)
        elif name in _MUTATE_MARK:
            self.pop_mark()
            self.mutate(self.top(), name)
        elif name in ("EXT1", "EXT2", "EXT4"):
            raise _Unsafe(f"the extension registry ({name})")
        elif name == "DUP":
            self.stack.append(self.top())
        elif name == "POP":
            if self.marks and self.marks[-1] == len(self.stack):
                self.marks.pop()
            else:
                self.pop()
        elif name in _MARK_OPS:
            self.pop_mark()
            if name != "POP_MARK":
                self.stack.append(_ANY)
        else:
            self._generic(name)

    def _generic(self, name: str) -> None:
        before, after = _ARITY[name]
        for _ in range(before):
            self.pop()
        self.stack.extend([_ANY] * after)


# opcode -> (items it pops, items it pushes), for the opcodes that need no special handling
_ARITY = {op.name: (len(op.stack_before), len(op.stack_after)) for op in pickletools.opcodes}


def _run(data: bytes) -> _Machine:
    machine = _Machine()
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            machine.step(op.name, arg)
    except _Unsafe:
        raise
    except Exception as exc:  # a corrupt stream cannot be vetted
        raise _Unsafe(f"<unreadable pickle: {exc}>") from None
    return machine


def pickle_globals(data: bytes) -> set[tuple[str, str]]:
    """Every (module, qualname) a clean pickle imports (to derive the allow-list); raises
    CheckpointSecurityError where :func:`disallowed_globals` would refuse the pickle."""
    try:
        return set(_run(data).globals)
    except _Unsafe as exc:
        raise CheckpointSecurityError(str(exc)) from None


def disallowed_globals(data: bytes) -> list[str]:
    """Why a pickle is refused (disallowed globals, calls or patches); empty when it is clean."""
    try:
        _run(data)
    except _Unsafe as exc:
        return [str(exc)]
    return []


def _zip_pickles(blob: bytes | Path, where: str) -> list[tuple[str, bytes]]:
    src: Any = io.BytesIO(blob) if isinstance(blob, bytes) else blob
    with zipfile.ZipFile(src) as zf:
        names = zf.namelist()
        odd = [n for n in names if not _TORCH_ENTRY.fullmatch(n)]
        pickles = [n for n in names if n.endswith("/data.pkl")]
        if odd or len(pickles) != 1 or len({n.split("/", 1)[0] for n in names}) != 1:
            raise CheckpointSecurityError(
                f"'{where}' is not laid out as torch.save writes a checkpoint (entries "
                f"{', '.join(odd or names)[:200]}); it was refused and nothing was unpickled."
            )
        return [(n, zf.read(n)) for n in pickles]


def _scan_blob(blob: bytes | Path, where: str) -> list[str]:
    bad: list[str] = []
    for name, data in _zip_pickles(blob, where):
        bad += [f"{g} (in {where}:{name})" for g in disallowed_globals(data)]
    return bad


def _refuse(path: Path, bad: list[str]) -> CheckpointSecurityError:
    return CheckpointSecurityError(
        f"checkpoint '{path}' would run code when loaded: it holds {'; '.join(bad)}, which a "
        "training checkpoint never contains. It was refused and nothing was unpickled; only "
        "load checkpoints from sources you trust."
    )


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise CheckpointSecurityError(f"{module}.{name} is not allowed")
        return super().find_class(module, name)


def load_dcp_metadata(directory: Path) -> Any:
    """The ``.metadata`` of a torch.distributed.checkpoint directory, scanned, then unpickled
    with only the allow-listed globals."""
    path = directory / ".metadata"
    if not path.is_file():
        raise FoundryError(
            f"'{directory}' has no .metadata: it is not a complete sharded checkpoint."
        )
    data = path.read_bytes()
    bad = disallowed_globals(data)
    if bad:
        raise _refuse(path, bad)
    return _RestrictedUnpickler(io.BytesIO(data)).load()


def _scan_sharded(directory: Path) -> list[str]:
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    meta = load_dcp_metadata(directory)
    bad: list[str] = []
    for index, info in meta.storage_data.items():
        rel = str(info.relative_path)
        if "/" in rel or "\\" in rel or rel in ("", ".", ".."):
            bad.append(f"an item {index.fqn} stored outside the checkpoint folder ({rel!r})")
            continue
        if getattr(info, "transform_descriptors", None):
            bad.append(f"a transformed (e.g. compressed) item {index.fqn}")
        item_meta = meta.state_dict_metadata.get(index.fqn)
        if not isinstance(item_meta, BytesStorageMetadata):
            continue
        with (directory / info.relative_path).open("rb") as f:
            f.seek(info.offset)
            blob = f.read(info.length)
        try:
            bad += _scan_blob(blob, f"{info.relative_path}[{index.fqn}]")
        except zipfile.BadZipFile:  # torch.load would read it as a legacy pickle stream
            bad.append(f"an item {index.fqn} that is not a torch.save zip")
    return bad


def scan_checkpoint(path: str | Path) -> None:
    """Raise CheckpointSecurityError if any pickle in a checkpoint is not provably inert."""
    p = Path(path)
    if p.is_dir():
        bad = _scan_sharded(p)
    elif p.is_file():
        try:
            bad = _scan_blob(p, p.name)
        except zipfile.BadZipFile:
            raise FoundryError(
                f"checkpoint '{p}' is not a complete torch checkpoint (truncated or corrupt zip)."
            ) from None
    else:
        raise FoundryError(f"checkpoint '{p}' does not exist.")
    if bad:
        raise _refuse(p, bad)


class _Stub(dict[Any, Any]):
    """Stands for every allow-listed global when only the structure of a pickle is wanted (a
    dict, so that the items of an OrderedDict land in it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def __setstate__(self, state: Any) -> None:
        pass


class _SkeletonUnpickler(pickle.Unpickler):
    """Unpickles a scanned torch ``data.pkl`` with stubs: dicts and keys, no tensors."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self.storage_keys: list[str] = []

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in ALLOWED_GLOBALS:
            raise CheckpointSecurityError(f"{module}.{name} is not allowed")
        return _Stub

    def persistent_load(self, pid: Any) -> Any:
        items = cast("tuple[Any, ...]", pid) if isinstance(pid, tuple) else ()
        if len(items) > 2:
            self.storage_keys.append(str(items[2]))  # ('storage', type, key, location, numel)
        return _Stub()


def read_skeleton(data: bytes) -> tuple[Any, list[str]]:
    """A clean pickle's containers and keys (globals replaced by stubs) and its storage keys."""
    bad = disallowed_globals(data)
    if bad:
        raise CheckpointSecurityError("; ".join(bad))
    unpickler = _SkeletonUnpickler(io.BytesIO(data))
    return unpickler.load(), unpickler.storage_keys


def full_checkpoint_skeleton(path: Path) -> tuple[Any, list[str]]:
    """A full checkpoint's state as containers and keys (after :func:`scan_checkpoint` passed),
    and the storage records its pickle references that the zip lacks."""
    scan_checkpoint(path)
    with zipfile.ZipFile(path) as zf:
        names = set(zf.namelist())
        [(name, data)] = _zip_pickles(path, path.name)
    state, keys = read_skeleton(data)
    prefix = name.rsplit("/", 1)[0]
    return state, [k for k in keys if f"{prefix}/data/{k}" not in names]
