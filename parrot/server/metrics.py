"""The app's Prometheus metrics (prometheus-client), named and labelled like vLLM's.

Each app has its own `CollectorRegistry` (tests run several apps in one process), holding:
- what the server measures around each OpenAI request's stream of chunks (`timed`): choices
  finished by reason, prompt and generation tokens, time to first token, inter-token and
  end-to-end latency;
- engine queue times, from a step observer on each engine (`QueueTimer`);
- what is read at scrape time from the engines and the manager (`StateCollector`);
- prometheus-client's process, platform and GC metrics.
Every `parrot:` series carries `model_name` (the served model name). docs/metrics.md lists them.
"""
from __future__ import annotations

import gc
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import aclosing, contextmanager
from typing import Any

import prometheus_client
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)

from parrot.engine.sampling_params import GenerationChunk
from parrot.server.generation import ChoiceChunk
from parrot.server.queue_timer import QueueTimer
from parrot.server.state_collector import StateCollector

CONTENT_TYPE = prometheus_client.CONTENT_TYPE_LATEST

# vLLM's buckets, so dashboards built for vLLM read Parrot's histograms the same way.
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5,
                5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0,
               7.5, 10.0, 20.0, 40.0, 80.0)
REQUEST_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0,
                   60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

# Counters only (no `_created` series), as vLLM exports them; this is prometheus-client's
# one process-wide switch, and Parrot has no other registry.
prometheus_client.disable_created_metrics()


def token_buckets(max_value: int) -> tuple[int, ...]:
    """1, 2, 5, 10, 20, 50, ... up to `max_value` (vLLM's build_1_2_5_buckets)."""
    buckets, exponent = [], 0
    while True:
        for mantissa in (1, 2, 5):
            value = mantissa * 10 ** exponent
            if value > max_value:
                return tuple(buckets)
            buckets.append(value)
        exponent += 1


class ServerMetrics:
    """One app's registry and the metrics the server observes itself."""

    def __init__(self, model_name: str, max_model_len: int) -> None:
        self.model_name = model_name
        self.registry = registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        Gauge("python_gc_frozen_objects", "Objects of start-up taken out of the cyclic GC's "
              "collections (gc.freeze(), parrot serve).",
              registry=registry).set_function(gc.get_freeze_count)
        self.http_requests = Counter(
            "parrot:http_requests", "HTTP requests answered, by route and status.",
            ["model_name", "route", "status"], registry=registry)
        self.request_success = Counter(
            "parrot:request_success", "Choices (generations) ended, by finish reason "
            "(stop, length; abort: the client left; error: generation failed).",
            ["model_name", "finished_reason"], registry=registry)
        self.prompt_tokens = self._counter("parrot:prompt_tokens",
                                           "Prompt tokens of requests handed to an engine.")
        self.generation_tokens = self._counter("parrot:generation_tokens",
                                               "Tokens generated for requests.")
        self.request_prompt_tokens = self._histogram(
            "parrot:request_prompt_tokens", "Prompt tokens per prompt.",
            token_buckets(max_model_len))
        self.request_generation_tokens = self._histogram(
            "parrot:request_generation_tokens", "Tokens generated per choice.",
            token_buckets(max_model_len))
        self.ttft = self._histogram(
            "parrot:time_to_first_token_seconds",
            "Time from request arrival to its first generated token.", TTFT_BUCKETS)
        self.itl = self._histogram(
            "parrot:inter_token_latency_seconds",
            "Time between consecutive generated tokens of one choice.", ITL_BUCKETS)
        self.e2e = self._histogram(
            "parrot:e2e_request_latency_seconds",
            "Time from request arrival to its last token (requests that finished).",
            REQUEST_BUCKETS)
        self.queue_time = self._histogram(
            "parrot:request_queue_time_seconds",
            "Time an engine request (generation, or prompt fill) waited before its first "
            "engine step.", REQUEST_BUCKETS)

    def _counter(self, name: str, help_text: str) -> Any:
        return Counter(name, help_text, ["model_name"],
                       registry=self.registry).labels(self.model_name)

    def _histogram(self, name: str, help_text: str, buckets: Sequence[float]) -> Any:
        return Histogram(name, help_text, ["model_name"], buckets=buckets,
                         registry=self.registry).labels(self.model_name)

    def count_http(self, route: str, status: int) -> None:
        self.http_requests.labels(self.model_name, route, str(status)).inc()

    def count_finished(self, reason: str, amount: int = 1) -> None:
        self.request_success.labels(self.model_name, reason).inc(amount)

    def render(self) -> bytes:
        """The text exposition of everything in the registry (CONTENT_TYPE)."""
        return generate_latest(self.registry)

    @contextmanager
    def watching(self, engines: list[Any], manager: Any) -> Iterator[None]:
        """While inside: scrapes read `engines` and `manager`, and engine queues are timed."""
        collector = StateCollector(self.model_name, engines, manager)
        timers = [QueueTimer(engine, self.queue_time) for engine in engines]
        self.registry.register(collector)
        for timer in timers:
            timer.attach()
        try:
            yield
        finally:
            for timer in timers:
                timer.detach()
            self.registry.unregister(collector)

    async def timed(self, stream: AsyncIterator[ChoiceChunk], started: float,
                    prompt_lengths: Sequence[int], n: int) -> AsyncIterator[ChoiceChunk]:
        """Pass one request's chunks through, observing its tokens, latencies and endings.

        `started`: its arrival (time.monotonic()); `prompt_lengths`: its prompts' tokens;
        `n`: choices per prompt. Choices that never finished count as `abort` (the client
        left, or the stream was closed) or `error` (the generation raised)."""
        self.prompt_tokens.inc(sum(prompt_lengths))
        for length in prompt_lengths:
            self.request_prompt_tokens.observe(length)
        clock = _RequestClock(self, started, len(prompt_lengths) * n)
        ending = "abort"
        try:
            async with aclosing(stream):
                async for item in stream:
                    clock.tick(item.index, item.chunk)
                    yield item
            clock.finish()
        except Exception:
            ending = "error"
            raise
        finally:
            if clock.num_unfinished:
                self.count_finished(ending, clock.num_unfinished)


class _RequestClock:
    """Times and counts the tokens of one request: its first token, then each choice's gaps."""

    def __init__(self, metrics: ServerMetrics, started: float, num_choices: int) -> None:
        self.metrics, self.started = metrics, started
        self.num_unfinished = num_choices
        self.seen_first = False
        self.last_at: dict[int, float] = {}  # choice -> when its last token came
        self.num_tokens: dict[int, int] = {}  # choice -> tokens so far

    def tick(self, index: int, chunk: GenerationChunk) -> None:
        num_tokens = len(chunk.token_ids)
        if num_tokens:
            self._time_tokens(index, num_tokens)
        if chunk.finish_reason is not None:
            self.metrics.count_finished(chunk.finish_reason)
            self.metrics.request_generation_tokens.observe(self.num_tokens.get(index, 0))
            self.num_unfinished -= 1

    def _time_tokens(self, index: int, num_tokens: int) -> None:
        now = time.monotonic()
        if not self.seen_first:
            self.metrics.ttft.observe(now - self.started)
            self.seen_first = True
        elif index in self.last_at:
            gap = (now - self.last_at[index]) / num_tokens
            for _ in range(num_tokens):
                self.metrics.itl.observe(gap)
        self.last_at[index] = now
        self.num_tokens[index] = self.num_tokens.get(index, 0) + num_tokens
        self.metrics.generation_tokens.inc(num_tokens)

    def finish(self) -> None:
        """The stream ended by itself: every choice finished."""
        self.metrics.e2e.observe(time.monotonic() - self.started)
