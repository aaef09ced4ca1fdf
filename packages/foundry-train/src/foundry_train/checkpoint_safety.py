"""Refusing malicious checkpoints before anything unpickles them.

composer 0.32 loads checkpoints with ``torch.load(weights_only=False)``, which runs any callable
a pickle names. Before a checkpoint reaches composer (load_path, autoresume, export-hf) every
pickle in it is scanned opcode by opcode (nothing is executed) and each global it imports is
checked against an allow-list of what composer's training state legitimately contains.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any, cast

from foundry_train.errors import CheckpointSecurityError, FoundryError

__all__ = ["ALLOWED_GLOBALS", "disallowed_globals", "scan_checkpoint", "load_dcp_metadata"]

# (module, name) pairs a composer / torch.distributed.checkpoint state may import.
ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        ("builtins", "bytearray"),
        ("builtins", "complex"),
        ("_codecs", "encode"),
        ("datetime", "timedelta"),
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("datetime", "datetime"),
        ("torch.torch_version", "TorchVersion"),
        ("torch", "Size"),
        ("torch", "device"),
        ("torch", "dtype"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch._utils", "_rebuild_tensor_v3"),
        ("torch._utils", "_rebuild_parameter"),
        ("torch._utils", "_rebuild_parameter_with_state"),
        ("torch.serialization", "_get_layout"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
    }
)
# (module regex, name regex) families: storages, dtypes, DCP metadata dataclasses.
_ALLOWED_PATTERNS: tuple[tuple[re.Pattern[str], re.Pattern[str]], ...] = tuple(
    (re.compile(m), re.compile(n))
    for m, n in (
        (
            r"torch",
            r"[A-Za-z]*Storage|bfloat16|float16|float32|float64|int64|int32|int8|uint8|bool",
        ),
        (r"numpy\.dtypes", r"[A-Za-z0-9]+DType"),
        (r"torch\.distributed\.checkpoint\.metadata", r"[A-Za-z_]+"),
        (r"torch\.distributed\.checkpoint\.filesystem", r"_StorageInfo"),
        (r"torch\.distributed\.checkpoint\.planner", r"[A-Za-z_]+"),
        (r"torch\.distributed\._shard\.sharded_tensor\.metadata", r"[A-Za-z_]+"),
        (r"torch\.distributed\._shard\.metadata", r"ShardMetadata"),
        (r"composer\.core\.time", r"Time|TimeUnit|Timestamp"),
    )
)


def _allowed(module: str, name: str) -> bool:
    if (module, name) in ALLOWED_GLOBALS:
        return True
    return any(m.fullmatch(module) and n.fullmatch(name) for m, n in _ALLOWED_PATTERNS)


def _pickle_globals(data: bytes) -> list[tuple[str, str]]:
    """Every (module, name) a pickle stream imports, found without executing it."""
    found: list[tuple[str, str]] = []
    strings: list[str | None] = []  # a shadow of string pushes for STACK_GLOBAL
    memo: dict[int, str | None] = {}
    stream = io.BytesIO(data)
    while stream.tell() < len(data):
        for op, arg, _pos in pickletools.genops(stream):
            name = op.name
            if name in ("GLOBAL", "INST"):
                module, _, attr = str(arg).partition(" ")
                found.append((module, attr))
            elif name == "STACK_GLOBAL":
                if len(strings) < 2 or strings[-1] is None or strings[-2] is None:
                    found.append(("<unresolved>", "<STACK_GLOBAL>"))
                else:
                    found.append((str(strings[-2]), str(strings[-1])))
            if name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                strings.append(str(arg))
            elif name in ("BINPUT", "LONG_BINPUT", "PUT"):
                memo[int(cast(int, arg))] = strings[-1] if strings else None
            elif name == "MEMOIZE":
                memo[len(memo)] = strings[-1] if strings else None
            elif name in ("BINGET", "LONG_BINGET", "GET"):
                strings.append(memo.get(int(cast(int, arg))))
            elif name not in ("PROTO", "FRAME"):
                strings.append(None)
            if name == "STOP":
                break
        else:
            break
    return found


def disallowed_globals(data: bytes) -> list[str]:
    """Globals a pickle imports that are not on the allow-list, as 'module.name'."""
    try:
        pairs = _pickle_globals(data)
    except Exception as exc:  # a corrupt stream cannot be vetted
        return [f"<unreadable pickle: {exc}>"]
    return sorted({f"{m}.{n}" for m, n in pairs if not _allowed(m, n)})


def _zip_pickles(blob: bytes | Path) -> list[tuple[str, bytes]]:
    src: Any = io.BytesIO(blob) if isinstance(blob, bytes) else blob
    with zipfile.ZipFile(src) as zf:
        return [(n, zf.read(n)) for n in zf.namelist() if n.endswith(".pkl")]


def _scan_blob(blob: bytes | Path, where: str) -> list[str]:
    raw = blob if isinstance(blob, bytes) else blob.read_bytes()
    pickles = _zip_pickles(blob) if raw[:4] == b"PK\x03\x04" else [("<pickle>", raw)]
    bad: list[str] = []
    for name, data in pickles:
        bad += [f"{g} (in {where}:{name})" for g in disallowed_globals(data)]
    return bad


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if not _allowed(module, name):
            raise CheckpointSecurityError(f"{module}.{name} is not allowed")
        return super().find_class(module, name)


def load_dcp_metadata(directory: Path) -> Any:
    """The ``.metadata`` of a torch.distributed.checkpoint directory, unpickled restrictedly."""
    path = directory / ".metadata"
    if not path.is_file():
        raise FoundryError(
            f"'{directory}' has no .metadata: it is not a complete sharded checkpoint."
        )
    bad = disallowed_globals(path.read_bytes())
    if bad:
        raise CheckpointSecurityError(
            f"checkpoint metadata '{path}' imports non-allow-listed globals: {', '.join(bad)}. "
            "It was not loaded; only use checkpoints from sources you trust."
        )
    with path.open("rb") as f:
        return _MetadataUnpickler(f).load()


def _scan_sharded(directory: Path) -> list[str]:
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    meta = load_dcp_metadata(directory)
    bad: list[str] = []
    for index, info in meta.storage_data.items():
        item_meta = meta.state_dict_metadata.get(index.fqn)
        if not isinstance(item_meta, BytesStorageMetadata):
            continue
        with (directory / info.relative_path).open("rb") as f:
            f.seek(info.offset)
            blob = f.read(info.length)
        bad += _scan_blob(blob, f"{info.relative_path}[{index.fqn}]")
    return bad


def scan_checkpoint(path: str | Path) -> None:
    """Raise CheckpointSecurityError if any pickle in a checkpoint imports a disallowed global."""
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
        raise CheckpointSecurityError(
            f"checkpoint '{p}' would run code when loaded: it imports {', '.join(bad)}, which a "
            "training checkpoint never contains. It was refused and nothing was unpickled; "
            "only load checkpoints from sources you trust."
        )
