"""Continuous batching for the server: one worker thread, one batched forward per decode step.

Requests wait in a bounded queue. Between decode steps the worker admits waiting sequences
(prefilling them, in one forward where the engine's batch can, and joining them to the running
batch, up to ``max_batch_size``), then runs one forward for every running sequence together. Each
sampled token is turned into text and handed to the request's asyncio queue on the server's event
loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any

from .engines import Engine
from .errors import FoundryError
from .generation import FinishReason, SequenceState, TextStream, new_decode_batch
from .sampling import TokenLogprob

__all__ = ["QueueFullError", "Scheduler", "ShuttingDownError", "StreamEvent", "Ticket"]

log = logging.getLogger("foundry_infer.scheduler")


class QueueFullError(Exception):
    """Too many requests are waiting; the client should retry later."""


class ShuttingDownError(Exception):
    """The server is stopping and takes no new work."""


@dataclass(frozen=True)
class StreamEvent:
    """A piece of text for one choice; ``finish_reason`` set on its last event."""

    index: int
    text: str
    finish_reason: FinishReason | None = None
    completion_tokens: int = 0
    error: str | None = None
    logprobs: tuple[TokenLogprob, ...] = ()  # of the tokens since the previous event
    prompt_logprobs: tuple[TokenLogprob, ...] = ()  # on a choice's first event, when asked


@dataclass(eq=False)
class Ticket:
    """One sequence submitted to the scheduler and where its events go."""

    index: int
    seq: SequenceState
    stream: TextStream
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[StreamEvent]
    logprobs_sent: int = 0
    first_sent: bool = False

    def deliver(self, event: StreamEvent) -> None:
        self.loop.call_soon_threadsafe(self.events.put_nowait, event)


class Scheduler:
    """Owns the engine; see the module docstring."""

    def __init__(self, engine: Engine, *, max_batch_size: int = 8, max_queue: int = 64) -> None:
        slots = getattr(engine, "max_batch_size", None)
        if isinstance(slots, int) and max_batch_size > slots:
            raise FoundryError(
                f"--max-batch-size {max_batch_size} exceeds the engine's {slots} cache slots; "
                "open the engine with at least as many slots."
            )
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.max_queue = max_queue
        self.batch = new_decode_batch(engine)
        self._waiting: deque[Ticket] = deque()
        self._running: dict[int, Ticket] = {}
        self._cond = threading.Condition()
        self._accepting = True
        self._stop = False
        self._thread = threading.Thread(
            target=self._run, name="foundry-infer-scheduler", daemon=True
        )
        self._thread.start()

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def accepting(self) -> bool:
        return self._accepting

    def submit(self, tickets: list[Ticket]) -> None:
        """Queue all of a request's sequences, or none (queue full / shutting down)."""
        with self._cond:
            if not self._accepting:
                raise ShuttingDownError
            if len(self._waiting) + len(tickets) > self.max_queue:
                raise QueueFullError
            self._waiting.extend(tickets)
            self._cond.notify()

    def close(self, timeout: float = 30.0) -> None:
        """Stop accepting; let running work finish for ``timeout`` s, then cancel the rest."""
        with self._cond:
            self._accepting = False
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout)
        if self._thread.is_alive():
            with self._cond:
                for ticket in [*self._waiting, *self._running.values()]:
                    ticket.seq.cancel()
                self._cond.notify()
            self._thread.join(5.0)

    def _next_admissions(self) -> list[Ticket] | None:
        """Block until there is work; None means the worker should exit."""
        with self._cond:
            while not self._waiting and not self._running:
                if self._stop:
                    return None
                self._cond.wait()
            room = self.max_batch_size - len(self._running)
            admitted = []
            while self._waiting and room > 0:
                ticket = self._waiting.popleft()
                if ticket.seq.finished:  # cancelled while waiting
                    self._finish(ticket)
                    continue
                admitted.append(ticket)
                room -= 1
            return admitted

    def _run(self) -> None:
        while (admitted := self._next_admissions()) is not None:
            try:
                for ticket in admitted:
                    self._running[ticket.seq.uid] = ticket
                for ticket, token in zip(admitted, self._prefill(admitted), strict=True):
                    self._emit(ticket, token)
                for seq, token in self.batch.step():
                    self._emit(self._running[seq.uid], token)
                for uid in [u for u, t in self._running.items() if t.seq.finished]:
                    self._finish(self._running.pop(uid))
            except Exception as exc:  # a bug in an engine: fail the affected requests, keep serving
                log.exception("generation failed")
                self._fail_running(exc)

    def _prefill(self, admitted: list[Ticket]) -> list[int]:
        """The admitted sequences' first tokens: prefilled together where the batch can."""
        together = getattr(self.batch, "prefill_many", None)
        if together is not None and len(admitted) > 1:
            return together([ticket.seq for ticket in admitted])
        return [self.batch.prefill(ticket.seq) for ticket in admitted]

    def _emit(self, ticket: Ticket, token: int) -> None:
        seq, stream = ticket.seq, ticket.stream
        piece = stream.push(token)
        if stream.stopped and seq.finish_reason != "cancelled":
            # a stop string, also when it completes on the last allowed token (accept() set
            # "length" then); the row leaves at the next step
            seq.finish_reason = "stop"
        if seq.finished:
            piece += stream.finish()
        if not (seq.finished or piece):
            return
        logprobs = tuple(seq.token_logprobs[ticket.logprobs_sent :])
        ticket.logprobs_sent += len(logprobs)
        prompt = () if ticket.first_sent else tuple(seq.prompt_token_logprobs)
        ticket.first_sent = True
        done = len(seq.generated) if seq.finished else 0
        ticket.deliver(
            StreamEvent(ticket.index, piece, seq.finish_reason, done, None, logprobs, prompt)
        )

    def _finish(self, ticket: Ticket) -> None:
        # Sequences finished by cancellation get a closing event too (nobody may be listening).
        if ticket.seq.finish_reason == "cancelled":
            ticket.deliver(StreamEvent(ticket.index, "", "cancelled", len(ticket.seq.generated)))

    def _fail_running(self, exc: Exception) -> None:
        for ticket in self._running.values():
            ticket.seq.cancel()
            ticket.deliver(StreamEvent(ticket.index, "", "cancelled", error=repr(exc)))
        self._running.clear()
        self.batch = new_decode_batch(self.engine)

    def stats(self) -> dict[str, Any]:
        return {
            "waiting": self.waiting,
            "running": self.running,
            "decode_steps": self.batch.steps,
            "largest_batch": self.batch.largest_batch,
            "max_batch_size": self.max_batch_size,
            "max_queue": self.max_queue,
        }
