"""Prometheus metrics for the server, in the text exposition format (version 0.0.4).

Counters of requests (by route and status) and of prompt and generated tokens, gauges of the
scheduler's queue, and histograms of request latency and of time to the first response byte.
A small ASGI middleware times every request; the routes add token counts.
"""

from __future__ import annotations

import bisect
import threading
import time
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["Histogram", "Metrics", "MetricsMiddleware"]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


class Histogram:
    """Cumulative buckets, sum and count of observed values, per label set."""

    def __init__(self, buckets: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        self.buckets = buckets
        self.series: dict[tuple[tuple[str, str], ...], tuple[list[int], list[float]]] = {}

    def observe(self, value: float, labels: tuple[tuple[str, str], ...]) -> None:
        counts, total = self.series.setdefault(labels, ([0] * (len(self.buckets) + 1), [0.0]))
        counts[bisect.bisect_left(self.buckets, value)] += 1
        total[0] += value

    def lines(self, name: str) -> list[str]:
        out = []
        for labels, (counts, total) in sorted(self.series.items()):
            running = 0
            for bound, count in zip([*self.buckets, float("inf")], counts, strict=True):
                running += count
                le = "+Inf" if bound == float("inf") else repr(bound)
                out.append(f"{name}_bucket{_labels((*labels, ('le', le)))} {running}")
            out.append(f"{name}_sum{_labels(labels)} {total[0]!r}")
            out.append(f"{name}_count{_labels(labels)} {running}")
        return out


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    escaped = (v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") for _, v in labels)
    return "{" + ",".join(f'{k}="{v}"' for (k, _), v in zip(labels, escaped, strict=True)) + "}"


class Metrics:
    """The server's counters and histograms (thread-safe)."""

    def __init__(self, model_name: str) -> None:
        self.model = model_name
        self._lock = threading.Lock()
        self.requests: dict[tuple[tuple[str, str], ...], int] = {}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.latency = Histogram()
        self.first_byte = Histogram()

    def count_tokens(self, prompt: int, generated: int) -> None:
        with self._lock:
            self.prompt_tokens += prompt
            self.generation_tokens += generated

    def record(self, route: str, status: int, seconds: float, first_byte: float | None) -> None:
        labels = (("route", route), ("status", str(status)))
        with self._lock:
            self.requests[labels] = self.requests.get(labels, 0) + 1
            self.latency.observe(seconds, (("route", route),))
            if first_byte is not None:
                self.first_byte.observe(first_byte, (("route", route),))

    def render(self, gauges: dict[str, tuple[str, float]]) -> str:
        """The exposition text; ``gauges`` maps a name to (help, value)."""
        p = "foundry_infer_"
        lines = [f"# HELP {p}requests_total HTTP requests answered, by route and status."]
        lines.append(f"# TYPE {p}requests_total counter")
        with self._lock:
            lines += [
                f"{p}requests_total{_labels(k)} {v}" for k, v in sorted(self.requests.items())
            ]
            for name, help_, value in (
                ("prompt_tokens_total", "Prompt tokens of answered requests.", self.prompt_tokens),
                ("generation_tokens_total", "Tokens generated.", self.generation_tokens),
            ):
                lines += [f"# HELP {p}{name} {help_}", f"# TYPE {p}{name} counter"]
                lines.append(f"{p}{name} {value}")
            for name, hist, help_ in (
                ("request_duration_seconds", self.latency, "Request latency, to the last byte."),
                ("time_to_first_byte_seconds", self.first_byte, "Time to the first body byte."),
            ):
                lines += [f"# HELP {p}{name} {help_}", f"# TYPE {p}{name} histogram"]
                lines += hist.lines(p + name)
        for name, (help_, value) in gauges.items():
            lines += [f"# HELP {p}{name} {help_}", f"# TYPE {p}{name} gauge", f"{p}{name} {value}"]
        return "\n".join(lines) + "\n"


class MetricsMiddleware:
    """Times each HTTP request to its last body byte and records it by route template."""

    def __init__(self, app: ASGIApp, metrics: Metrics, route_of: Callable[[Scope], str]) -> None:
        self.app = app
        self.metrics = metrics
        self.route_of = route_of

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "first": None}

        async def timed_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
            elif message["type"] == "http.response.body" and state["first"] is None:
                state["first"] = time.perf_counter() - start
            await send(message)

        try:
            await self.app(scope, receive, timed_send)
        finally:
            route = self.route_of(scope)
            self.metrics.record(route, state["status"], time.perf_counter() - start, state["first"])
