"""The static-slot torch engine: a preallocated key/value cache and CUDA-graph decode steps.

Per layer the cache holds keys and values of shape ``(slots, kv_heads, max_len, head_dim)``, one
slot per concurrent sequence (``max_batch_size`` slots). Running sequences occupy slots
``0 .. n-1`` (a leaving sequence's slot is refilled by moving the last one into it), so a decode
step over ``n`` sequences runs on the first ``bucket`` slots, ``bucket`` being the smallest of
1, 2, 4, ... ``max_batch_size`` that holds ``n``; it attends over the first ``kv_len`` positions,
the smallest power of two (from 64) that holds the longest sequence. On CUDA each (bucket,
kv_len) decode step is captured once as a CUDA graph and replayed; prefill runs outside the
graphs, and so does everything done with the logits (sampling, ``logit_bias``, logprobs). On CPU
the same forward runs eagerly, which is how CI checks it.

With ``compile_decode`` each decode layer's work before and after attention runs as functions
compiled with ``torch.compile`` (:mod:`foundry_infer.slot_compiled`), so inductor can fuse the
small elementwise kernels; on CUDA the graphs then capture the compiled step. Prefill stays eager.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .decode_attention import ATTENTION_VARIABLE, triton_decode_wanted
from .engines import TorchEngine
from .errors import FoundryError
from .slot_forward import SLOT_ARCHITECTURES, slot_forward_for

if TYPE_CHECKING:
    import torch

    from .slot_batch import SlotBatch

__all__ = ["FIT_SHARE", "Launched", "SlotEngine", "batch_buckets", "slots_that_fit"]

log = logging.getLogger("foundry_infer.slot_engine")
_MIN_KV = 64
_DEFAULT_MAX_LEN = 2048


class Launched:
    """A greedy decode step queued on the device (see :meth:`SlotEngine.launch_greedy`)."""

    def __init__(self, greedy: torch.Tensor, positions: torch.Tensor, cuda: bool) -> None:
        self.greedy = greedy  # (n,) the step's argmax tokens, on the device
        self.positions = positions  # (n,) the positions it ran at, on the device
        self._host = greedy
        self._done: Any = None
        if cuda:  # copy to pinned memory behind the step; an event marks the copy done
            import torch

            self._host = torch.empty(greedy.shape, dtype=greedy.dtype, pin_memory=True)
            self._host.copy_(greedy, non_blocking=True)
            self._done = torch.cuda.Event()
            self._done.record()

    def tokens(self) -> list[int]:
        """The step's greedy tokens (waits for that step only, not for later launches)."""
        if self._done is not None:
            self._done.synchronize()
        return self._host.tolist()


# the share of the GPU's free memory (after the weights) a fitted slot cache may take: the rest is
# for prefill activations, the CUDA graphs' pool and the logits
FIT_SHARE = 0.6


def slots_that_fit(wanted: int, slot_bytes: int, free_bytes: int, max_len: int) -> int:
    """The most slots, up to ``wanted``, whose cache (``slot_bytes`` each) takes at most
    :data:`FIT_SHARE` of ``free_bytes``; refuses when not even one fits."""
    fits = int(FIT_SHARE * free_bytes // slot_bytes)
    if fits < 1:
        raise FoundryError(
            f"one cache slot of {max_len} positions needs {slot_bytes / 2**30:.2f} GiB, more than "
            f"{FIT_SHARE:.0%} of the {free_bytes / 2**30:.1f} GiB the GPU has free after the "
            "weights. Lower --max-model-len, or serve with --engine dynamic."
        )
    return min(wanted, fits)


def batch_buckets(max_batch_size: int) -> list[int]:
    """1, 2, 4, ... below ``max_batch_size``, then ``max_batch_size`` itself."""
    sizes, size = [], 1
    while size < max_batch_size:
        sizes.append(size)
        size *= 2
    return [*sizes, max_batch_size]


class SlotEngine(TorchEngine):
    """A torch engine with a slot cache; its batches are :class:`~.slot_batch.SlotBatch`.

    ``step``/``empty_past`` (the dynamic-cache protocol) still work, from :class:`TorchEngine`.
    """

    def __init__(
        self,
        model_dir: str | Path,
        device: str = "cpu",
        dtype: str = "auto",
        *,
        max_batch_size: int = 8,
        max_len: int | None = None,
        cuda_graphs: bool | None = None,
        compile_decode: bool = False,
        fit_slots: bool = False,
    ) -> None:
        """``compile_decode``: run decode steps through the compiled layers (off by default).
        ``fit_slots`` (``serve`` without ``--max-batch-size``): on CUDA, at most
        ``max_batch_size`` slots, fewer where the cache would take more than
        :data:`FIT_SHARE` of the GPU's free memory (see :func:`slots_that_fit`)."""
        super().__init__(model_dir, device=device, dtype=dtype)
        forward = slot_forward_for(self.model)
        if forward is None:
            raise FoundryError(
                f"--engine static has a forward for {', '.join(SLOT_ARCHITECTURES)} models, not "
                f"model_type {self.layout.model_type!r}. Use --engine dynamic (or auto)."
            )
        if max_batch_size < 1:
            raise FoundryError(f"--max-batch-size must be at least 1, got {max_batch_size}.")
        _check_overlap_setting(self.device.type)
        forward.triton_decode = triton_decode_wanted(self.device.type)
        self.forward = forward
        self.compile_decode = compile_decode
        if self.compile_decode:
            forward.compile_decode()
        self.max_batch_size = max_batch_size
        positions = self.layout.max_positions or _DEFAULT_MAX_LEN
        self.max_len = min(max_len or min(positions, _DEFAULT_MAX_LEN), positions)
        self.layout = dataclasses.replace(self.layout, max_positions=self.max_len)
        on_cuda = self.device.type == "cuda"
        if fit_slots and on_cuda:
            self._fit_slots_to_memory()
        self.cuda_graphs = on_cuda if cuda_graphs is None else cuda_graphs and on_cuda
        self.caches = self._allocate()  # per layer (2, slots, kv_heads, max_len, head_dim)
        self._graphs: dict[tuple[int, int], tuple[Any, ...]] = {}
        self._pool: Any = None
        self.buckets = batch_buckets(self.max_batch_size)
        self.name = (
            f"torch-static-{self.device.type}"
            + ("-cudagraphs" if self.cuda_graphs else "")
            + ("-compiled" if self.compile_decode else "")
            + ("-triton-attention" if forward.triton_decode else "")
        )

    def _fit_slots_to_memory(self) -> None:
        """Fewer than ``max_batch_size`` slots where their cache would not fit (CUDA)."""
        free, _ = self._torch.cuda.mem_get_info(self.device)
        per_slot = self.cache_bytes() // self.max_batch_size
        self.max_batch_size = slots_that_fit(self.max_batch_size, per_slot, free, self.max_len)
        log.warning(
            "foundry-infer: slot cache: %d slots of %d positions, %.1f GiB (%d fit in %.0f%% "
            "of the %.1f GiB free; --max-batch-size sets them)",
            self.max_batch_size,
            self.max_len,
            self.cache_bytes() / 2**30,
            self.max_batch_size,
            FIT_SHARE * 100,
            free / 2**30,
        )

    def startup_note(self) -> str:
        """What ``serve``'s start-up line adds about decoding (empty when nothing to say)."""
        from .slot_batch import OVERLAP_VARIABLE, overlap_wanted

        note = ""
        if overlap_wanted(self.device.type):
            note += f"; greedy decode steps overlapped ({OVERLAP_VARIABLE}=0 turns it off)"
        if self.forward.triton_decode:
            note += f"; decode attention: one Triton kernel ({ATTENTION_VARIABLE}=triton)"
        return note

    def cache_bytes(self) -> int:
        per_slot = self.max_len * self.forward.num_kv_heads * self.forward.head_dim
        width = self._torch.finfo(self.dtype).bits // 8
        return 2 * self.forward.num_layers * self.max_batch_size * per_slot * width

    def _allocate(self) -> list[torch.Tensor]:
        torch = self._torch
        need = self.cache_bytes()
        if self.device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(self.device)
            if need > 0.9 * free:
                raise FoundryError(
                    f"the slot cache needs {need / 2**30:.1f} GiB ({self.max_batch_size} slots "
                    f"of {self.max_len} positions) but the GPU has {free / 2**30:.1f} GiB free. "
                    "Lower --max-batch-size or --max-model-len."
                )
        shape = (
            2,  # keys, values: one tensor, so a step writes both with one index_put_
            self.max_batch_size,
            self.forward.num_kv_heads,
            self.max_len,
            self.forward.head_dim,
        )
        layers = range(self.forward.num_layers)
        return [torch.zeros(shape, dtype=self.dtype, device=self.device) for _ in layers]

    def new_batch(self) -> SlotBatch:
        from .slot_batch import SlotBatch

        return SlotBatch(self)

    def _views(self, start: int, rows: int, kv_len: int) -> list[Any]:
        return [c[:, start : start + rows, :, :kv_len] for c in self.caches]

    def prefill(self, slot: int, ids: list[int], all_logits: bool = False) -> torch.Tensor:
        """Run a prompt into ``slot`` (positions 0..T-1); logits (1, V), or (1, T, V)."""
        torch = self._torch
        t = len(ids)
        with torch.inference_mode():
            tokens = torch.tensor([ids], dtype=torch.long, device=self.device)
            positions = torch.arange(t, device=self.device)[None, :]
            caches = self._views(slot, 1, t)
            return self.forward(tokens, positions, caches, all_logits=all_logits)

    def prefill_many(self, slot: int, prompts: list[list[int]]) -> torch.Tensor:
        """Run prompts into slots ``slot, slot + 1, ...`` in one forward; logits (n, V).

        Shorter prompts are padded on the right. The padding writes keys and values past a
        prompt's end, which no query reads: a decode step at position p writes p before it
        attends, and attends to positions up to p only.
        """
        torch = self._torch
        t = max(len(ids) for ids in prompts)
        padded = [ids + [0] * (t - len(ids)) for ids in prompts]
        with torch.inference_mode():
            tokens = torch.tensor(padded, dtype=torch.long, device=self.device)
            positions = torch.arange(t, device=self.device)[None, :].expand(len(prompts), t)
            last = torch.tensor([len(ids) - 1 for ids in prompts], device=self.device)
            caches = self._views(slot, len(prompts), t)
            return self.forward(tokens, positions, caches, last=last)

    def decode(self, tokens: list[int], positions: list[int]) -> torch.Tensor:
        """One token for each of slots 0..n-1 (at ``positions``); logits (n, V) float32."""
        with self._torch.inference_mode():
            return self._run(positions, tokens, None)[0]

    def launch_greedy(
        self, positions: list[int], tokens: list[int] | None = None, after: Launched | None = None
    ) -> Launched:
        """Start a greedy decode step for slots 0..n-1 without waiting for it.

        Its input tokens come from the host (``tokens``) or, chained, from the device: the
        greedy tokens of the launch ``after``, at its positions plus one (nothing crosses to
        the host, so the step queues behind ``after`` while the host reads ``after``'s tokens).
        ``positions`` (host copies) choose the attention length. The argmax and its copy to
        pinned host memory are queued behind the step; :meth:`Launched.tokens` waits for them."""
        with self._torch.inference_mode():
            logits, ran_at = self._run(positions, tokens, after)
            return Launched(logits.argmax(dim=-1), ran_at, self.device.type == "cuda")

    def _run(
        self, positions: list[int], tokens: list[int] | None, after: Launched | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A decode step over slots 0..n-1, inputs from the host (``tokens``) or chained on
        ``after``'s device tokens; (logits (n, V), the positions it ran at (n,) on the device).
        On CUDA the step is the (bucket, kv_len) graph, its inputs and logits the graph's own."""
        torch = self._torch
        n = len(positions)
        bucket = next(b for b in self.buckets if b >= n)
        kv_len = self._kv_bucket(max(positions) + 1)
        if self.cuda_graphs:
            graph, inputs, logits = self._graph(bucket, kv_len)
        else:
            graph, inputs = None, torch.zeros((2, bucket), dtype=torch.long, device=self.device)
        if after is None:
            assert tokens is not None and len(tokens) == n
            pad = [0] * (bucket - n)
            inputs.copy_(torch.tensor([tokens + pad, positions + pad], dtype=torch.long))
        else:
            assert len(after.positions) == n, "a chained launch keeps the same rows"
            inputs[0, :n] = after.greedy
            inputs[1, :n] = after.positions + 1
        if graph is not None:
            graph.replay()
        else:
            logits = self._step(inputs[0:1].T, inputs[1:2].T, self._views(0, bucket, kv_len))
        return logits[:n], inputs[1, :n]

    def _step(self, ids: torch.Tensor, positions: torch.Tensor, caches: list[Any]) -> torch.Tensor:
        """One decode step's forward (compiled layers with ``compile_decode``)."""
        return self.forward(ids, positions, caches, compiled=self.compile_decode)

    def capture_all(self) -> int:
        """Capture every (batch bucket, kv_len) decode graph now (serve does, at start-up, so
        no request waits for a capture); the number of graphs held. No-op without graphs."""
        if not self.cuda_graphs:
            return 0
        lengths, size = [], _MIN_KV
        while True:
            lengths.append(min(size, self.max_len))
            if size >= self.max_len:
                break
            size *= 2
        with self._torch.inference_mode():
            for bucket in self.buckets:
                for kv_len in lengths:
                    self._graph(bucket, kv_len)
        return len(self._graphs)

    def warm_compiled(self) -> int:
        """Without CUDA graphs (a CPU), one ``compile_decode`` step per batch bucket on a scratch
        cache, so the compiled layers compile at start-up rather than in front of the first
        request of each batch size (serve does this); the number of buckets run, 0 when there
        is nothing to warm. With graphs, :meth:`capture_all`'s warm-ups compile them."""
        if self.cuda_graphs or not self.compile_decode:
            return 0
        torch, fwd = self._torch, self.forward
        kv_len = min(_MIN_KV, self.max_len)
        with torch.inference_mode():
            for bucket in self.buckets:
                shape = (2, bucket, fwd.num_kv_heads, kv_len, fwd.head_dim)
                scratch = torch.zeros(shape, dtype=self.dtype, device=self.device)
                ids = torch.zeros((bucket, 1), dtype=torch.long, device=self.device)
                self._step(ids, ids.clone(), [scratch] * fwd.num_layers)
        return len(self.buckets)

    def _kv_bucket(self, needed: int) -> int:
        size = _MIN_KV
        while size < needed:
            size *= 2
        return min(size, self.max_len)

    def _graph(self, bucket: int, kv_len: int) -> tuple[Any, ...]:
        """The CUDA graph of a decode step over ``bucket`` slots and ``kv_len`` positions.

        Warm-up runs on a scratch cache (the real one holds running sequences); capture only
        records, so capturing between steps leaves the running sequences' cache untouched. With
        ``compile_decode`` the warm-up also compiles (or re-specialises) the compiled layers for
        this shape, so nothing compiles or autotunes during the capture."""
        key = (bucket, kv_len)
        if key in self._graphs:
            return self._graphs[key]
        torch = self._torch
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        static_in = torch.zeros((2, bucket), dtype=torch.long, device=self.device)
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            shape = (2, bucket, self.forward.num_kv_heads, kv_len, self.forward.head_dim)
            scratch = torch.zeros(shape, dtype=self.dtype, device=self.device)
            for _ in range(2):
                self._step(static_in[0:1].T, static_in[1:2].T, [scratch] * self.forward.num_layers)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        del scratch
        graph = torch.cuda.CUDAGraph()
        caches = self._views(0, bucket, kv_len)
        with torch.cuda.graph(graph, pool=self._pool, stream=stream):
            logits = self._step(static_in[0:1].T, static_in[1:2].T, caches)
        self._graphs[key] = (graph, static_in, logits)
        log.info("captured a CUDA graph: batch bucket %d, %d cached positions", bucket, kv_len)
        return self._graphs[key]

    def move_slot(self, src: int, dst: int, length: int) -> None:
        """Copy the first ``length`` positions of slot ``src`` into slot ``dst``."""
        with self._torch.inference_mode():
            for cache in self.caches:
                cache[:, dst, :, :length].copy_(cache[:, src, :, :length])


def _check_overlap_setting(device_type: str) -> None:
    """A bad ``FOUNDRY_DECODE_OVERLAP`` fails when the engine starts, not at the first request."""
    from .slot_batch import overlap_wanted

    overlap_wanted(device_type)
