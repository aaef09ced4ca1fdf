"""The part of ONNX Runtime that foundry-infer calls, described as typed protocols.

ONNX Runtime's session options, graph node descriptions and provider list come from its compiled
extension, which ships no type information, so a type checker sees them (and everything computed
from them) as Unknown. The protocols below state what foundry-infer relies on. They are not casts:
:func:`import_onnxruntime` and :func:`import_quantization` return the real modules, and the type
checker verifies that each module matches its protocol (a module satisfies a protocol when its
attributes do). Both import lazily, so importing foundry-infer does not load ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from onnxruntime.quantization import QuantType

__all__ = [
    "OrtModule",
    "OrtNodeArg",
    "OrtOptimizationLevels",
    "OrtQuantization",
    "OrtSession",
    "OrtSessionOptions",
    "import_onnxruntime",
    "import_quantization",
]


class OrtNodeArg(Protocol):
    """One input or output of a loaded graph."""

    @property
    def name(self) -> str: ...


class OrtSessionOptions(Protocol):
    """``onnxruntime.SessionOptions``: the fields foundry-infer sets."""

    graph_optimization_level: Any  # a member of onnxruntime.GraphOptimizationLevel
    intra_op_num_threads: int


class OrtOptimizationLevels(Protocol):
    """``onnxruntime.GraphOptimizationLevel`` (a compiled enum)."""

    @property
    def ORT_ENABLE_ALL(self) -> Any: ...


class OrtSession(Protocol):
    """``onnxruntime.InferenceSession``."""

    def get_inputs(self) -> Sequence[OrtNodeArg]: ...

    def get_providers(self) -> Sequence[str]: ...

    def run(
        self, output_names: Sequence[str] | None, input_feed: Mapping[str, Any], /
    ) -> Sequence[object]:
        """Dense outputs are numpy arrays; ONNX Runtime also declares sparse, list and map."""
        ...


class OrtModule(Protocol):
    """The ``onnxruntime`` module."""

    @property
    def GraphOptimizationLevel(self) -> OrtOptimizationLevels: ...

    def get_available_providers(self) -> list[str]: ...

    def SessionOptions(self) -> OrtSessionOptions: ...

    def InferenceSession(
        self,
        path_or_bytes: str,
        /,
        sess_options: OrtSessionOptions | None = None,
        providers: Sequence[str] | None = None,
    ) -> OrtSession: ...


class OrtQuantization(Protocol):
    """The ``onnxruntime.quantization`` module."""

    def quantize_dynamic(
        self,
        model_input: str,
        model_output: str,
        *,
        per_channel: bool,
        weight_type: QuantType,
        use_external_data_format: bool,
    ) -> None: ...


_MISSING = (
    "ONNX Runtime is not installed. foundry-infer runs ONNX models with one of its two builds, "
    "chosen by an extra: `pip install 'foundry-infer[cpu]'` (onnxruntime) on CPU hosts, or "
    "`pip install 'foundry-infer[gpu]'` (onnxruntime-gpu, the CUDA execution provider) on GPU "
    "hosts. The torch backend (`--backend torch`) needs neither."
)


def import_onnxruntime() -> OrtModule:
    try:
        import onnxruntime
    except ImportError:
        from .errors import FoundryError

        raise FoundryError(_MISSING) from None
    return onnxruntime


def import_quantization() -> OrtQuantization:
    import_onnxruntime()
    import onnxruntime.quantization

    return onnxruntime.quantization
