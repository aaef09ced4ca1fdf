"""export-onnx's checks before any work: the output path, the dtype, the model's RoPE."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from foundry_infer.errors import ExportError, FoundryError

__all__ = ["check_output", "export_dtype", "refuse_untraceable"]


def export_dtype(dtype: str, int8: bool) -> str:
    """The graph's dtype for ``--dtype`` (auto: float32); float16 with --int8 is refused."""
    dtype = "float32" if dtype == "auto" else dtype
    if dtype not in ("float32", "float16"):
        raise FoundryError(
            f"export-onnx --dtype {dtype}: an ONNX export is float32 or float16 (for ONNX "
            "Runtime's CUDA provider). Use --dtype float32, float16 or auto."
        )
    if int8 and dtype != "float32":
        raise FoundryError("--int8 quantises a float32 graph; drop --dtype float16 or --int8.")
    return dtype


def check_output(out: Path, overwrite: bool, source: Path) -> None:
    """Refuse an output that exists (without --overwrite), has no parent, or is the source."""
    src, dst = source.resolve(), out.resolve()
    if dst == src or dst in src.parents:
        # --overwrite would delete the model being read (it replaced it with the export)
        raise FoundryError(
            f"output {out} is the source model {source} or a folder holding it; the export "
            "would replace it. Write the export to another path."
        )
    if out.exists() and not overwrite:
        raise FoundryError(f"output {out} already exists. Choose another path or pass --overwrite.")
    if not out.parent.exists():
        raise FoundryError(f"the parent directory of {out} does not exist. Create it first.")


# RoPE variants whose frequencies depend on the sequence length at run time: transformers
# branches on the data there, which torch.export cannot trace into one graph.
_UNTRACEABLE_ROPE = ("dynamic", "longrope")


def refuse_untraceable(model: Any) -> None:
    """Refuse, before tracing, a model whose RoPE torch.export cannot trace."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else None
    config = config or model.config
    found: Any = getattr(config, "rope_scaling", None) or getattr(config, "rope_parameters", None)
    scaling = cast("dict[str, Any]", found) if isinstance(found, dict) else {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in _UNTRACEABLE_ROPE:
        raise ExportError(
            f"this model's RoPE scaling is '{kind}', whose frequencies change with the sequence "
            "length as it runs; torch.onnx cannot export that as one graph. Serve this model "
            "from its Hugging Face directory (foundry-infer generate/serve read it directly)."
        )
