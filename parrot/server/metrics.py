"""A tiny Prometheus text-format registry and the server's own measurements.

Engine counters and gauges are read from `engine.stats()` at scrape time; the
latency histograms (time to first token, inter-token, end-to-end) are measured
here, around the stream of chunks a request receives.
"""
from __future__ import annotations

import bisect
import time
from contextlib import aclosing
from collections.abc import AsyncIterator, Sequence
from typing import Any

LabelKey = tuple[tuple[str, str], ...]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75,
                   1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)

# (EngineStats field, metric name, type, help)
ENGINE_STATS = (
    ("num_prefill_tokens", "parrot_prefill_tokens_total", "counter",
     "Prompt tokens computed by prefill."),
    ("num_decode_tokens", "parrot_decode_tokens_total", "counter", "Tokens decoded."),
    ("num_cached_tokens", "parrot_prefix_cache_hit_tokens_total", "counter",
     "Prompt tokens served from the prefix cache or a fork instead of recomputed."),
    ("num_preemptions", "parrot_preemptions_total", "counter",
     "Requests preempted (KV freed, recomputed later)."),
    ("num_steps", "parrot_engine_steps_total", "counter", "Engine steps run."),
    ("num_cascade_steps", "parrot_engine_cascade_steps_total", "counter",
     "Engine steps that read a shared prefix once per group (cascade attention)."),
    ("num_running", "parrot_requests_running", "gauge", "Requests in the running batch."),
    ("num_waiting", "parrot_requests_waiting", "gauge", "Requests waiting to be scheduled."),
    ("num_blocks", "parrot_kv_blocks", "gauge", "KV cache blocks in the pool."),
    ("num_used_blocks", "parrot_kv_blocks_used", "gauge", "KV blocks referenced by contexts."),
    ("num_free_blocks", "parrot_kv_blocks_free", "gauge", "KV blocks free (including cached)."),
    ("num_cached_blocks", "parrot_kv_blocks_cached", "gauge",
     "Unreferenced KV blocks kept for prefix reuse."),
)


def _labels(labels: dict[str, Any]) -> LabelKey:
    return tuple(sorted((k, str(v)) for k, v in labels.items()))


def _format_labels(key: LabelKey, extra: str = "") -> str:
    parts = [f'{k}="{_escape(v)}"' for k, v in key]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


class Metric:
    """A counter or gauge: one value per label set."""

    def __init__(self, name: str, kind: str, help_text: str) -> None:
        assert kind in ("counter", "gauge")
        self.name, self.kind, self.help = name, kind, help_text
        self._values: dict[LabelKey, float] = {}

    def inc(self, amount: float = 1.0, **labels: Any) -> None:
        key = _labels(labels)
        self._values[key] = self._values.get(key, 0.0) + amount

    def set(self, value: float, **labels: Any) -> None:
        self._values[_labels(labels)] = float(value)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        lines += [f"{self.name}{_format_labels(k)} {_number(v)}" for k, v in self._values.items()]
        return lines


class Histogram:
    """Cumulative-bucket histogram (no labels)."""

    def __init__(self, name: str, help_text: str,
                 buckets: Sequence[float] = LATENCY_BUCKETS) -> None:
        self.name, self.help = name, help_text
        self.buckets = tuple(sorted(buckets))
        self._counts = [0] * (len(self.buckets) + 1)  # last slot: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        total = 0
        for bound, n in zip(self.buckets, self._counts):
            total += n
            lines.append(f'{self.name}_bucket{{le="{_number(bound)}"}} {total}')
        lines.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        lines += [f"{self.name}_sum {_number(self.sum)}", f"{self.name}_count {self.count}"]
        return lines


class ServerMetrics:
    """Everything /metrics shows: server-measured metrics plus engine stats."""

    def __init__(self) -> None:
        self.requests = Metric("parrot_http_requests_total", "counter",
                               "HTTP requests answered, by route and status.")
        self.ttft = Histogram("parrot_time_to_first_token_seconds",
                              "Time from request arrival to its first generated token.")
        self.itl = Histogram("parrot_inter_token_latency_seconds",
                             "Time between consecutive generated tokens of one choice.")
        self.e2e = Histogram("parrot_e2e_request_latency_seconds",
                             "Time from request arrival to its last token.")
        self._engine = {name: Metric(name, kind, help_text)
                        for _, name, kind, help_text in ENGINE_STATS}

    def render(self, engine_stats: Sequence[Any]) -> str:
        for index, stats in enumerate(engine_stats):
            for field, name, _, _ in ENGINE_STATS:
                value = getattr(stats, field, None)
                if isinstance(value, (int, float)):
                    self._engine[name].set(value, engine=index)
        families = [self.requests, self.ttft, self.itl, self.e2e, *self._engine.values()]
        return "\n".join(line for f in families for line in f.render()) + "\n"

    async def timed(self, stream: AsyncIterator[Any], started: float) -> AsyncIterator[Any]:
        """Pass `(index, chunk)` items through, observing TTFT, inter-token and e2e times."""
        clock = _TokenClock(self, started)
        async with aclosing(stream):
            async for item in stream:
                index, chunk = item
                clock.tick(index, len(chunk.token_ids))
                yield item
        self.e2e.observe(time.monotonic() - started)


class _TokenClock:
    """Times the tokens of one request: the first one, then the gaps per choice."""

    def __init__(self, metrics: ServerMetrics, started: float) -> None:
        self.metrics, self.started = metrics, started
        self.seen_first = False
        self.last_at: dict[int, float] = {}

    def tick(self, index: int, num_tokens: int) -> None:
        if not num_tokens:
            return
        now = time.monotonic()
        if not self.seen_first:
            self.metrics.ttft.observe(now - self.started)
            self.seen_first = True
        elif index in self.last_at:
            gap = (now - self.last_at[index]) / num_tokens
            for _ in range(num_tokens):
                self.metrics.itl.observe(gap)
        self.last_at[index] = now
