"""The checkpoint allow-list is derived: it is exactly what Foundry's real checkpoints import.

Real checkpoints of each kind Foundry writes on CPU are saved here (MPT with decoupled AdamW, torch
AdamW and LionW, every schedule, gradient clipping, a resumed run, a fully fine-tuned Llama with
an eval loader and packing, a LoRA run) and the globals of every pickle in them collected. A
sharded checkpoint needs FSDP, which needs CUDA, so on CPU its ``.metadata`` and byte items are
written by the same ``torch.distributed.checkpoint.save`` call composer makes (same state dict,
planner and writer); the ``gpu`` test below collects those of a real FSDP run. Entries of the
list that a CPU run cannot write are each derived or explained: one storage class and one dtype
per tensor dtype (derived by saving a tensor of each), and numpy 1.x's name of ``_reconstruct``.
"""

from __future__ import annotations

import io
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from foundry_train.checkpointing.allowlist import ALLOWED_GLOBALS, NUMPY_1_ALIASES, TENSOR_DTYPES
from foundry_train.checkpointing.safety import load_dcp_metadata, pickle_globals, scan_checkpoint

Pair = tuple[str, str]


def _zip_globals(blob: bytes | Path) -> set[Pair]:
    src = io.BytesIO(blob) if isinstance(blob, bytes) else blob
    with zipfile.ZipFile(src) as zf:
        pickles = [zf.read(n) for n in zf.namelist() if n.endswith(".pkl")]
    assert pickles
    return set().union(*(pickle_globals(p) for p in pickles))


def checkpoint_globals(path: Path) -> set[Pair]:
    """Every global the pickles of a full (.pt) or sharded (directory) checkpoint import."""
    if path.is_file():
        return _zip_globals(path)
    from torch.distributed.checkpoint.metadata import BytesStorageMetadata

    found = pickle_globals((path / ".metadata").read_bytes())
    meta = load_dcp_metadata(path)
    for index, info in meta.storage_data.items():
        if isinstance(meta.state_dict_metadata[index.fqn], BytesStorageMetadata):
            with (path / info.relative_path).open("rb") as f:
                f.seek(info.offset)
                found |= _zip_globals(f.read(info.length))
    return found


def dcp_save_like_composer(full: Path, out: Path) -> Path:
    """A sharded checkpoint of a full one's state, written as composer's save_checkpoint does."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.default_planner import DefaultSavePlanner

    scan_checkpoint(full)
    state = torch.load(full, map_location="cpu", weights_only=False)
    assert sorted(state) == ["rng", "state"]  # composer's {'state': ..., 'rng': ...}
    planner = DefaultSavePlanner(dedup_save_to_lowest_rank=True)
    dcp.save(state, storage_writer=dcp.FileSystemWriter(str(out)), planner=planner, no_dist=True)
    return out


def _run(assets: dict, h: object, folder: Path, **extra: object) -> Path:
    from foundry_train.config import parse_config
    from foundry_train.trainer import train

    cfg = h.base_config(assets, folder, max_duration="2ba", save_interval="2ba")  # type: ignore[attr-defined]
    cfg.update(extra)
    train(parse_config(cfg))
    return folder / "ep0-ba2-rank0.pt"


@pytest.fixture(scope="module")
def written(
    baseline: Path,
    lora_run: Path,
    assets: dict,
    h: object,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, set[Pair]]:
    """Kind of checkpoint -> the globals its pickles import."""
    from foundry_train.config import parse_config
    from foundry_train.trainer import train

    root = tmp_path_factory.mktemp("allowlist")
    llama = {"name": "hf_causal_lm", "pretrained_model_name_or_path": str(assets["llama"])}
    finetune = {"name": "finetuning", "dataset": {"local": str(assets["finetune"])}}
    paths = {
        "mpt, decoupled_adamw, constant": baseline / "ep0-ba10-rank0.pt",
        "llama lora fine-tuning": lora_run / "ep0-ba2-rank0.pt",
        "mpt, adamw, linear, adaptive clipping": _run(
            assets, h, root / "adamw", optimizer={"name": "adamw", "lr": 1e-3},
            scheduler={"name": "linear_decay_with_warmup", "t_warmup": "1ba"},
            gradient_clipping={"clipping_type": "adaptive"},
        ),
        "mpt fine-tuning, packing, lionw, inv_sqrt, value clipping": _run(
            assets, h, root / "lion", optimizer={"name": "decoupled_lionw", "lr": 1e-4},
            train_loader={**finetune, "packing": True},
            scheduler={"name": "inv_sqrt_with_warmup", "t_warmup": "1ba"},
            gradient_clipping={"clipping_type": "value"},
        ),
        "llama full fine-tuning, cosine, eval loader": _run(
            assets, h, root / "llama", model={**llama, "pretrained": True},
            scheduler={"name": "cosine_with_warmup", "t_warmup": "1ba"},
            train_loader=finetune, eval_loader=finetune, eval_interval="1ba",
        ),
    }  # fmt: skip
    resumed = root / "resumed"
    shutil.copytree(baseline, resumed, symlinks=True)
    cfg = h.base_config(assets, resumed, max_duration="12ba", autoresume=True)  # type: ignore[attr-defined]
    train(parse_config(cfg))
    paths["mpt, resumed by autoresume"] = resumed / "ep0-ba12-rank0.pt"
    paths["sharded (.metadata + byte items)"] = dcp_save_like_composer(
        baseline / "ep0-ba10-rank0.pt", root / "sharded" / "ep0-ba10"
    )
    out: dict[str, set[Pair]] = {}
    for kind, path in paths.items():
        scan_checkpoint(path)  # every real checkpoint passes the scan
        out[kind] = checkpoint_globals(path)
    return out


def _dtype_globals(tmp_path: Path) -> dict[str, tuple[set[Pair], set[Pair]]]:
    """Per tensor dtype: the globals of torch.save of a tensor, and of a DCP .metadata."""
    import torch.distributed.checkpoint as dcp

    out = {}
    for name, _storage in TENSOR_DTYPES:
        tensor = torch.zeros(2, dtype=getattr(torch, name))
        buf = io.BytesIO()
        torch.save({"t": tensor}, buf)
        folder = tmp_path / name
        dcp.save({"t": tensor}, storage_writer=dcp.FileSystemWriter(str(folder)), no_dist=True)
        out[name] = (
            _zip_globals(buf.getvalue()),
            pickle_globals((folder / ".metadata").read_bytes()),
        )
    return out


def test_every_real_checkpoint_imports_only_allowed_globals(written: dict[str, set[Pair]]) -> None:
    for kind, found in written.items():
        assert found <= ALLOWED_GLOBALS, f"{kind}: {sorted(found - ALLOWED_GLOBALS)}"


def test_allow_list_has_no_entry_that_nothing_writes(
    written: dict[str, set[Pair]], tmp_path: Path
) -> None:
    derived = set().union(*written.values())
    per_dtype = _dtype_globals(tmp_path)
    for name, storage in TENSOR_DTYPES:
        full, meta = per_dtype[name]
        assert ("torch", storage) in full, f"{name} is saved as {sorted(full)}"
        assert ("torch", name) in meta, f"{name} is described as {sorted(meta)}"
        derived |= full | meta
    assert derived <= ALLOWED_GLOBALS
    unexplained = ALLOWED_GLOBALS - derived - NUMPY_1_ALIASES
    assert not unexplained, f"allow-listed but written by nothing: {sorted(unexplained)}"


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@needs_cuda
def test_fsdp_checkpoints_import_only_allowed_globals(
    assets: dict, h: object, tmp_path: Path
) -> None:
    """On GPUs: bf16 autocast, fused AdamW, full and FSDP-sharded checkpoints."""
    cfg = h.base_config(assets, tmp_path / "run", max_duration="2ba", save_interval="1ba")  # type: ignore[attr-defined]
    cfg.update(precision="amp_bf16", deterministic=False)
    cfg["global_train_batch_size"] = 4 * torch.cuda.device_count()
    full = h.run_cli([str(h.write_config(tmp_path / "full.yaml", cfg))])  # type: ignore[attr-defined]
    assert full.returncode == 0, full.stderr[-3000:]
    cfg["save_folder"] = str(tmp_path / "sharded")
    cfg["fsdp_config"] = {"mixed_precision": "PURE", "state_dict_type": "sharded"}
    sharded = h.run_cli([str(h.write_config(tmp_path / "sharded.yaml", cfg))])  # type: ignore[attr-defined]
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    for path in (tmp_path / "run" / "ep0-ba2-rank0.pt", tmp_path / "sharded" / "ep0-ba2"):
        scan_checkpoint(path)
        found = checkpoint_globals(path)
        assert found <= ALLOWED_GLOBALS, f"{path.name}: {sorted(found - ALLOWED_GLOBALS)}"
        print(path.name, sorted(found))
