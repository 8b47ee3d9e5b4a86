"""Metrics read at scrape time: each engine's `stats()` and the manager's sessions.

A prometheus-client custom collector: nothing is copied between scrapes, so /metrics shows
the engines' own counters (labelled `engine="<index>"`) and the manager's live state. A
stats field an engine lacks (a test double) leaves its series out.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from parrot.manager.call import CallState


class EngineSeries(NamedTuple):
    name: str  # counters without their `_total`, which the exposition adds
    is_counter: bool
    help: str
    value: Callable[[Any], float | None]  # from EngineStats; None: not known


def _field(name: str) -> Callable[[Any], float | None]:
    return lambda stats: getattr(stats, name, None)


def _kv_cache_usage(stats: Any) -> float | None:
    used, total = getattr(stats, "num_used_blocks", None), getattr(stats, "num_blocks", None)
    return used / total if used is not None and total else None


def _prefix_cache_queries(stats: Any) -> float | None:
    """Prompt tokens that needed KV: found in the prefix cache or computed."""
    hits, computed = (getattr(stats, "num_cached_tokens", None),
                      getattr(stats, "num_prefill_tokens", None))
    return hits + computed if hits is not None and computed is not None else None


ENGINE_SERIES = (
    EngineSeries("parrot:num_requests_running", False, "Requests in the running batch.",
                 _field("num_running")),
    EngineSeries("parrot:num_requests_waiting", False, "Requests waiting to be scheduled.",
                 _field("num_waiting")),
    EngineSeries("parrot:kv_cache_usage_perc", False,
                 "Fraction of KV-cache blocks referenced by contexts (1 means full).",
                 _kv_cache_usage),
    EngineSeries("parrot:prefix_cache_queries", True,
                 "Prompt tokens looked up in the prefix cache (hits plus computed).",
                 _prefix_cache_queries),
    EngineSeries("parrot:prefix_cache_hits", True,
                 "Prompt tokens found in the prefix cache instead of computed.",
                 _field("num_cached_tokens")),
    EngineSeries("parrot:num_preemptions", True,
                 "Requests preempted (KV freed, recomputed later).", _field("num_preemptions")),
    EngineSeries("parrot:prefill_tokens", True,
                 "Prompt tokens computed by prefill (incl. recompute after preemption).",
                 _field("num_prefill_tokens")),
    EngineSeries("parrot:decode_tokens", True,
                 "Tokens computed by decode (each sampled token, fed back).",
                 _field("num_decode_tokens")),
    EngineSeries("parrot:engine_steps", True, "Engine steps run.", _field("num_steps")),
    EngineSeries("parrot:cascade_steps", True,
                 "Engine steps that read a shared prefix once per group (cascade attention).",
                 _field("num_cascade_steps")),
    EngineSeries("parrot:kv_cache_blocks", False, "KV-cache blocks in the pool.",
                 _field("num_blocks")),
    EngineSeries("parrot:kv_cache_blocks_used", False, "KV-cache blocks referenced by contexts.",
                 _field("num_used_blocks")),
    EngineSeries("parrot:kv_cache_blocks_free", False,
                 "KV-cache blocks free to allocate (including cached).", _field("num_free_blocks")),
    EngineSeries("parrot:kv_cache_blocks_cached", False,
                 "Unreferenced KV-cache blocks kept for prefix reuse.", _field("num_cached_blocks")),
)


class StateCollector:
    def __init__(self, model_name: str, engines: list[Any], manager: Any) -> None:
        self.model_name, self.engines, self.manager = model_name, engines, manager

    def collect(self) -> Iterator[Metric]:
        yield from self._engine_metrics()
        yield from self._manager_metrics()

    def _engine_metrics(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("parrot:engine_up", "1 while the engine is alive, 0 once lost.",
                               labels=["model_name", "engine"])
        for index, engine in enumerate(self.engines):
            up.add_metric([self.model_name, str(index)], float(engine.is_alive))
        yield up
        all_stats = [engine.stats() for engine in self.engines]
        for series in ENGINE_SERIES:
            family = (CounterMetricFamily if series.is_counter else GaugeMetricFamily)(
                series.name, series.help, labels=["model_name", "engine"])
            for index, stats in enumerate(all_stats):
                value = series.value(stats)
                if value is not None:
                    family.add_metric([self.model_name, str(index)], value)
            if family.samples:
                yield family

    def _manager_metrics(self) -> Iterator[Metric]:
        sessions = [s for s in self.manager.sessions.values() if not s.is_closed]
        states = Counter(c.state for s in sessions for c in s.graph.calls.values())
        yield self._gauge("parrot:num_sessions", "Open sessions.", len(sessions))
        calls = GaugeMetricFamily("parrot:num_calls", "Calls of open sessions, by state.",
                                  labels=["model_name", "state"])
        for state in CallState:
            calls.add_metric([self.model_name, state.value], states[state])
        yield calls
        yield self._gauge("parrot:num_shared_prefixes",
                          "Shared-prefix contexts live in open sessions.",
                          sum(len(s.pool.prefixes) for s in sessions))
        yield self._gauge("parrot:num_app_prefixes",
                          "Applications' constant prompts kept for their sessions.",
                          len(self.manager.apps.pool.prefixes))
        yield self._gauge("parrot:app_prefix_tokens",
                          "Tokens of the applications' kept prompts.", self.manager.apps.num_tokens)

    def _gauge(self, name: str, help_text: str, value: float) -> Metric:
        family = GaugeMetricFamily(name, help_text, labels=["model_name"])
        family.add_metric([self.model_name], value)
        return family
