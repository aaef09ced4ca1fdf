"""The exact globals a checkpoint pickle may import: what composer and torch.distributed.checkpoint
really write for the checkpoints Foundry saves.

Each entry is one ``(module, qualname)`` pair; there are no patterns and no module-wide entries.
The list was derived by saving real checkpoints of every kind Foundry writes and collecting the
globals their pickles import; ``tests/test_checkpoint_allowlist.py`` repeats that derivation (on
CPU; the FSDP-sharded kind in its ``gpu`` test) and fails if the two ever differ.
"""

from __future__ import annotations

__all__ = ["ALLOWED_GLOBALS", "TENSOR_DTYPES", "NUMPY_1_ALIASES"]

# Tensor dtypes a parameter, buffer, optimizer state or RNG state of a Foundry run can have:
# fp32 weights and Adam moments, bf16/fp16 weights of a model kept in low precision, fp64
# (torch's default for Python floats), int64/int32/int8 counters and indices, uint8 RNG states,
# bool masks. Each is written as ``torch.<Name>Storage`` in a full checkpoint and as the dtype
# ``torch.<name>`` in a sharded checkpoint's ``.metadata``.
TENSOR_DTYPES: tuple[tuple[str, str], ...] = (
    ("float32", "FloatStorage"),
    ("bfloat16", "BFloat16Storage"),
    ("float16", "HalfStorage"),
    ("float64", "DoubleStorage"),
    ("int64", "LongStorage"),
    ("int32", "IntStorage"),
    ("int8", "CharStorage"),
    ("uint8", "ByteStorage"),
    ("bool", "BoolStorage"),
)

# numpy 1.x (the package allows numpy>=1.26) names numpy 2's ``numpy._core`` ``numpy.core``: a
# checkpoint written with numpy 1.x refers to the same function under the old name.
NUMPY_1_ALIASES: frozenset[tuple[str, str]] = frozenset({("numpy.core.multiarray", "_reconstruct")})

_DCP_METADATA = "torch.distributed.checkpoint.metadata"

ALLOWED_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        # full checkpoints (torch.save of composer's state) and DCP byte items
        ("_codecs", "encode"),  # bytes under pickle protocol 2
        ("collections", "OrderedDict"),  # model / optimizer state dicts
        ("datetime", "timedelta"),  # composer Timestamp wall-clock fields
        ("numpy", "dtype"),  # numpy RNG state
        ("numpy", "ndarray"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("torch._utils", "_rebuild_tensor_v2"),
        ("torch.torch_version", "TorchVersion"),  # composer's metadata.torch_version
        # sharded checkpoints: the .metadata of torch.distributed.checkpoint
        ("pathlib", "PosixPath"),  # StorageMeta.checkpoint_id
        ("torch", "Size"),
        ("torch.serialization", "_get_layout"),  # TensorProperties.layout
        ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
        (_DCP_METADATA, "BytesStorageMetadata"),
        (_DCP_METADATA, "ChunkStorageMetadata"),
        (_DCP_METADATA, "Metadata"),
        (_DCP_METADATA, "MetadataIndex"),
        (_DCP_METADATA, "StorageMeta"),
        (_DCP_METADATA, "TensorProperties"),
        (_DCP_METADATA, "TensorStorageMetadata"),
        (_DCP_METADATA, "_MEM_FORMAT_ENCODING"),
        *(("torch", storage) for _, storage in TENSOR_DTYPES),
        *(("torch", dtype) for dtype, _ in TENSOR_DTYPES),
        *NUMPY_1_ALIASES,
    }
)
