"""``export-onnx``: a causal LM as an ONNX graph with dynamic shapes and a key/value cache.

The graph is :class:`~foundry_infer.kv_graph.FlatCacheStep` exported with ``torch.onnx.export``
(the torch.export-based exporter) with batch, sequence and past length all dynamic, so one graph
serves prefill (past length 0) and each one-token decode step. It is run once against torch
before the directory is published (the largest absolute difference is reported), and may then be
quantised to int8 weights with ONNX Runtime's dynamic quantisation for CPU serving, or exported
in float16 (weights, cache and logits) for ONNX Runtime's CUDA provider. The
tokenizer and generation config are saved beside it, so the directory stands alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np

from .errors import ExportError, FoundryError
from .kv_graph import FlatCacheStep, input_names, output_names
from .model_dir import ONNX_MODEL_NAME, OnnxManifest, detect_model_kind, load_tokenizer
from .onnx_checks import check_output, export_dtype, refuse_untraceable
from .ort_api import import_onnxruntime, import_quantization

if TYPE_CHECKING:
    import torch

__all__ = ["ExportReport", "export_onnx", "quantize_onnx"]

# Graphs above this size keep their weights in an external data file (protobuf's 2 GiB limit).
_EXTERNAL_DATA_BYTES = 1_800_000_000
FP32_TOLERANCE = 1e-3
FP16_TOLERANCE = 2e-2  # float16 keeps ~3 significant digits; relative to the largest logit
# FlatCacheStep's arguments: input_ids, attention_mask, position_ids, then 2 * layers past tensors.
StepInputs: TypeAlias = "tuple[torch.Tensor, ...]"


@dataclass(frozen=True)
class ExportReport:
    out_dir: Path
    max_abs_diff: float  # fp32 graph vs torch
    int8_max_abs_diff: float | None  # int8 graph vs torch, when quantised
    int8_top1_agreement: float | None  # on the check batch
    onnx_bytes: int


def export_onnx(
    model_dir: str | Path,
    out_dir: str | Path,
    *,
    int8: bool = False,
    overwrite: bool = False,
    opset: int = 18,
    progress: bool = True,
    dtype: str = "float32",
) -> ExportReport:
    """Export the HF causal LM in ``model_dir`` to a standalone ONNX directory ``out_dir``.

    ``dtype`` float32 (or auto) or float16; int8 quantises a float32 graph."""
    from tqdm import tqdm

    source, out = Path(model_dir), Path(out_dir)
    dtype = export_dtype(dtype, int8)
    if detect_model_kind(source) != "hf":
        raise FoundryError(f"{source} is already an ONNX directory; export-onnx needs an HF one.")
    check_output(out, overwrite, source)
    stages = tqdm(total=5 if int8 else 4, desc="export-onnx", disable=not progress, unit="stage")
    stages.set_postfix_str("loading")
    work = _work_dir(out)
    try:  # on any error the bar is closed first, so the message starts on its own line
        model, tokenizer = _load(source, dtype)
        step = FlatCacheStep(model).eval()
        stages.update()
        stages.set_postfix_str("tracing")
        fp32_path = work / ONNX_MODEL_NAME
        _trace(step, fp32_path, opset, _param_bytes(model) > _EXTERNAL_DATA_BYTES)
        stages.update()
        stages.set_postfix_str("checking against torch")
        check = _check_inputs(step)
        expected = _torch_outputs(step, check)
        diff, _ = _compare(fp32_path, check, expected)
        tolerance = FP32_TOLERANCE if dtype == "float32" else FP16_TOLERANCE
        if diff > tolerance * max(1.0, float(np.abs(expected[0].astype(np.float32)).max())):
            raise ExportError(
                f"the exported graph disagrees with torch (max abs diff {diff:.3g}). This "
                "architecture is not exported faithfully; please report it with the config."
            )
        stages.update()
        int8_diff = agreement = None
        if int8:
            stages.set_postfix_str("quantising to int8")
            int8_diff, agreement = _replace_with_int8(work, fp32_path, check, expected)
            stages.update()
        stages.set_postfix_str("saving tokenizer and configs")
        _save_side_files(model, tokenizer, source, work, step, diff, int8)
        _publish(work, out, overwrite)
        stages.update()
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        stages.close()
    size = sum(p.stat().st_size for p in out.iterdir() if p.name.startswith(ONNX_MODEL_NAME))
    return ExportReport(out, diff, int8_diff, agreement, size)


def _replace_with_int8(
    work: Path, fp32_path: Path, check: list[StepInputs], expected: list[np.ndarray]
) -> tuple[float, float]:
    """Quantise the fp32 graph in ``work``, compare it with torch, and keep only the int8 one."""
    quant_dir = work / "int8"
    quant_dir.mkdir()
    _quantise(fp32_path, quant_dir / ONNX_MODEL_NAME)
    int8_diff, agreement = _compare(quant_dir / ONNX_MODEL_NAME, check, expected)
    for item in list(work.iterdir()):
        if item != quant_dir:
            _remove(item)
    for item in quant_dir.iterdir():
        item.rename(work / item.name)
    quant_dir.rmdir()
    return int8_diff, agreement


def _load(source: Path, dtype: str = "float32") -> tuple[Any, Any]:
    import pickle

    import torch
    from transformers import AutoModelForCausalLM

    try:
        # transformers leaves from_pretrained's *model_args/**kwargs unannotated (Unknown).
        model = AutoModelForCausalLM.from_pretrained(  # pyright: ignore[reportUnknownMemberType]
            str(source), dtype=getattr(torch, dtype)
        )
    except pickle.UnpicklingError as exc:  # torch's weights_only unpickler refused the weights
        why = [ln.strip().rstrip(".") for ln in str(exc).splitlines() if "GLOBAL" in ln]
        raise FoundryError(
            f"cannot load a causal LM from {source}: torch's safe loader refused its pickled "
            f"weights ({why[0] if why else 'a disallowed object'}) and ran nothing in them. "
            "Give a model directory with safetensors weights."
        ) from None
    except (OSError, ValueError) as exc:
        raise FoundryError(f"cannot load a causal LM from {source}: {exc}.") from exc
    return model.eval(), load_tokenizer(source)


def _param_bytes(model: Any) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def _example_inputs(
    step: FlatCacheStep, batch: int, seq: int, past: int, seed: int = 0
) -> StepInputs:
    import torch

    layout = step.layout
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, layout.vocab_size, (batch, seq), generator=gen)
    mask = torch.ones(batch, past + seq, dtype=torch.int64)
    positions = torch.arange(past, past + seq).expand(batch, seq).contiguous()
    shape = (batch, layout.num_kv_heads, past, layout.head_dim)
    dtype = next(step.parameters()).dtype
    cache = tuple(torch.randn(shape, generator=gen).to(dtype) for _ in range(2 * layout.num_layers))
    return (ids, mask, positions, *cache)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _trace(step: FlatCacheStep, path: Path, opset: int, external: bool) -> None:
    import torch

    refuse_untraceable(step.model)

    layers = step.layout.num_layers
    batch = torch.export.Dim("batch", min=1, max=4096)
    seq = torch.export.Dim("sequence", min=1, max=65536)
    free = torch.export.Dim.DYNAMIC  # attention-mask and past lengths (past may be 0)
    shapes = {
        "input_ids": {0: batch, 1: seq},
        "attention_mask": {0: batch, 1: free},
        "position_ids": {0: batch, 1: seq},
        "past": tuple({0: batch, 2: free} for _ in range(2 * layers)),
    }
    with warnings.catch_warnings(), _quiet_stdout():
        warnings.simplefilter("ignore")
        try:
            # torch's stub for export has parameters typed with unparameterised generics
            # (PathLike, ScriptFunction) and untyped ones (training, operator_export_type).
            torch.onnx.export(  # pyright: ignore[reportUnknownMemberType]
                step,
                _example_inputs(step, batch=2, seq=3, past=4),
                str(path),
                dynamo=True,
                dynamic_shapes=shapes,
                input_names=input_names(layers),
                output_names=output_names(layers),
                opset_version=opset,
                external_data=external,
                optimize=True,
                verbose=False,
            )
        except Exception as exc:  # the exporter raises many types; name the model in the message
            inner = exc
            while inner.__cause__ is not None:  # the tracer's own reason, not the wrapper's
                inner = inner.__cause__
            text = _ANSI.sub("", str(inner)).strip()
            raise ExportError(
                f"torch.onnx could not export {type(step.model).__name__}: "
                f"{text.splitlines()[0] if text else type(inner).__name__}. Supported are "
                "transformers causal LMs whose forward takes a Cache (GPT-2, Llama, MPT, ...)."
            ) from exc


class _quiet_stdout:
    """The exporter prints progress lines on stdout; keep stdout for the user's output."""

    def __enter__(self) -> None:
        self._saved = sys.stdout
        sys.stdout = (
            sys.stderr if os.environ.get("FOUNDRY_INFER_VERBOSE") else open(os.devnull, "w")
        )  # noqa: SIM115

    def __exit__(self, *exc: object) -> None:
        if sys.stdout is not sys.stderr:
            sys.stdout.close()
        sys.stdout = self._saved


def _check_inputs(step: FlatCacheStep) -> list[StepInputs]:
    """A prefill (past 0) and a decode step (past 5) with a left-padded row, batch 2."""
    prefill = _example_inputs(step, batch=2, seq=6, past=0, seed=1)
    decode = list(_example_inputs(step, batch=2, seq=1, past=5, seed=2))
    decode[1][0, :2] = 0  # first row is left padded
    decode[2][0, 0] = 3
    return [prefill, tuple(decode)]


def _torch_outputs(step: FlatCacheStep, inputs: list[StepInputs]) -> list[np.ndarray]:
    import torch

    outputs: list[np.ndarray] = []
    with torch.inference_mode():
        for args in inputs:
            outputs += [t.numpy() for t in step(*args)]
    return outputs


def _compare(
    path: Path, inputs: list[StepInputs], expected: list[np.ndarray]
) -> tuple[float, float]:
    """Largest abs difference to torch over all outputs, and top-1 agreement of the logits."""
    session = import_onnxruntime().InferenceSession(str(path), providers=["CPUExecutionProvider"])
    wanted = {i.name for i in session.get_inputs()}
    names = input_names((len(inputs[0]) - 3) // 2)
    got: list[np.ndarray] = []
    for args in inputs:
        feed = {n: a.numpy() for n, a in zip(names, args, strict=True) if n in wanted}
        got += [np.asarray(x) for x in session.run(None, feed)]
    diff = max(
        float(np.abs(g.astype(np.float32) - e.astype(np.float32)).max())
        for g, e in zip(got, expected, strict=True)
    )
    per_call = len(expected) // len(inputs)
    logits = [(got[i], expected[i]) for i in range(0, len(expected), per_call)]
    agree = np.concatenate([g.argmax(-1) == e.argmax(-1) for g, e in logits])
    return diff, float(agree.mean())


def _quantise(src: Path, dst: Path) -> None:
    import_onnxruntime()  # a clear error when neither ONNX Runtime build is installed
    from onnxruntime.quantization import QuantType

    external = (src.parent / f"{src.name}.data").exists()
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # it logs advice about pre-processing at WARNING
    try:
        import_quantization().quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=True,
            use_external_data_format=external,
        )
    finally:
        root.setLevel(level)


def _save_side_files(
    model: Any,
    tokenizer: Any,
    source: Path,
    work: Path,
    step: FlatCacheStep,
    diff: float,
    int8: bool,
) -> None:
    import torch
    import transformers
    from transformers import GenerationConfig

    tokenizer.save_pretrained(str(work))
    model.config.save_pretrained(str(work))
    # transformers types these methods' **kwargs and PathLike parameters as Unknown.
    try:
        generation = GenerationConfig.from_pretrained(str(source))  # pyright: ignore[reportUnknownMemberType]
    except OSError:
        generation = GenerationConfig.from_model_config(model.config)  # pyright: ignore[reportUnknownMemberType]
    generation.save_pretrained(str(work))  # pyright: ignore[reportUnknownMemberType]
    layout = step.layout
    OnnxManifest(
        num_layers=layout.num_layers,
        num_kv_heads=layout.num_kv_heads,
        head_dim=layout.head_dim,
        vocab_size=layout.vocab_size,
        max_positions=layout.max_positions,
        uses_position_ids=step.uses_position_ids,
        model_type=layout.model_type,
        quantization="int8" if int8 else "none",
        dtype="float16" if next(model.parameters()).dtype == torch.float16 else "float32",
        source=str(source.resolve()),
        max_abs_diff=diff,
        versions={
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "onnxruntime": str(getattr(import_onnxruntime(), "__version__", "")),
        },
    ).write(work)


def _publish(work: Path, out: Path, overwrite: bool) -> None:
    if out.exists() and overwrite:
        _remove(out)
    os.replace(work, out)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()


def _work_dir(out: Path) -> Path:
    """A fresh folder beside ``out`` to build it in, with the mode ``mkdir`` would give ``out``.

    ``tempfile.mkdtemp`` makes its folder 0700 whatever the umask; once renamed into place that
    folder would be unreadable by anyone else (a service user, say), unlike every other output.
    """
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-{os.getpid()}-", dir=out.parent))
    umask = os.umask(0o022)
    os.umask(umask)
    work.chmod(0o777 & ~umask)
    return work


def quantize_onnx(onnx_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False) -> Path:
    """Write an int8 (dynamic, per-channel weights) copy of an fp32 ONNX directory."""
    import dataclasses

    source, out = Path(onnx_dir), Path(out_dir)
    if detect_model_kind(source) != "onnx":
        raise FoundryError(f"{source} is not an ONNX directory written by export-onnx.")
    manifest = OnnxManifest.read(source)
    if manifest.quantization != "none":
        raise FoundryError(f"{source} is already quantised ({manifest.quantization}).")
    check_output(out, overwrite, source)
    work = _work_dir(out)
    try:
        for item in source.iterdir():
            if not item.name.startswith(ONNX_MODEL_NAME) and item.is_file():
                shutil.copy2(item, work / item.name)
        _quantise(source / ONNX_MODEL_NAME, work / ONNX_MODEL_NAME)
        dataclasses.replace(manifest, quantization="int8").write(work)
        _publish(work, out, overwrite)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out
