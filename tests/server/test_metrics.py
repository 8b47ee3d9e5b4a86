"""/metrics after real traffic: prometheus-client text that Prometheus' own parser reads,
every `parrot:` series labelled with the served model, values that match the requests sent
and the engine's and manager's own state; per-app registries."""
from __future__ import annotations

import asyncio
import json
import os
import time
import uuid

import pytest
from prometheus_client.parser import text_string_to_metric_families

from parrot.engine import Engine, EngineConfig, GenerationChunk
from parrot.server.app import create_app
from parrot.server.config import ServerConfig
from parrot.server.generation import ChoiceChunk
from parrot.server.keys import MANAGER
from parrot.server.metrics import CONTENT_TYPE, ServerMetrics, token_buckets
from parrot.server.queue_timer import QueueTimer
from tests.dashboard.programs import CHUNKS, FINAL, map_reduce_calls
from tests.manager.fake_engine import FakeEngine

MODEL = "metrics-model"
Samples = dict[tuple[str, frozenset], float]


@pytest.fixture
async def real_engine(smollm):
    engine = await Engine(EngineConfig(dtype="float32", kv_memory_gb=0.05), loaded=smollm).start()
    yield engine
    await engine.stop()


async def scrape(client) -> Samples:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"] == CONTENT_TYPE
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(await resp.text())
            for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset({"model_name": MODEL, **labels}.items()))]


def has(samples: Samples, name: str, **labels: str) -> bool:
    return (name, frozenset({"model_name": MODEL, **labels}.items())) in samples


async def complete(client, **body) -> dict:
    resp = await client.post("/v1/completions", data=json.dumps(
        {"temperature": 0, "ignore_eos": True, **body}))
    assert resp.status == 200, await resp.text()
    return (await resp.json())["usage"]


async def test_openai_requests_show_in_the_request_metrics(aiohttp_client, real_engine):
    client = await aiohttp_client(create_app([real_engine], ServerConfig(served_model_name=MODEL)))
    one = await complete(client, prompt=f"{uuid.uuid4()} one", max_tokens=4)
    two = await complete(client, prompt=f"{uuid.uuid4()} two", max_tokens=3, n=2)
    s = await scrape(client)
    assert value(s, "parrot:request_success_total", finished_reason="length") == 3
    assert value(s, "parrot:prompt_tokens_total") == one["prompt_tokens"] + two["prompt_tokens"]
    assert value(s, "parrot:generation_tokens_total") == 4 + 2 * 3
    assert value(s, "parrot:request_prompt_tokens_count") == 2
    assert value(s, "parrot:request_generation_tokens_sum") == 10
    assert value(s, "parrot:request_generation_tokens_count") == 3
    assert value(s, "parrot:time_to_first_token_seconds_count") == 2
    assert value(s, "parrot:inter_token_latency_seconds_count") == 3 + 2 * 2
    assert value(s, "parrot:e2e_request_latency_seconds_count") == 2
    # engine requests: the first generate; then the prompt's fill and its two forks' generates
    assert value(s, "parrot:request_queue_time_seconds_count") == 4
    assert value(s, "parrot:e2e_request_latency_seconds_sum") \
        >= value(s, "parrot:time_to_first_token_seconds_sum") > 0
    assert value(s, "parrot:http_requests_total", route="/v1/completions", status="200") == 2
    assert value(s, "parrot:num_requests_running", engine="0") == 0
    assert value(s, "parrot:num_requests_waiting", engine="0") == 0
    assert not has(s, "parrot:request_success_total", finished_reason="abort")
    assert all(dict(labels).get("model_name") == MODEL
               for name, labels in s if name.startswith("parrot:"))
    if os.path.exists("/proc/self/stat"):  # prometheus-client's process metrics read /proc
        assert value_unlabelled(s, "process_cpu_seconds_total") > 0
        assert value_unlabelled(s, "process_resident_memory_bytes") > 0


def value_unlabelled(samples: Samples, name: str) -> float:
    return samples[(name, frozenset())]


async def test_engine_series_are_the_engines_own_counters(aiohttp_client, real_engine):
    client = await aiohttp_client(create_app([real_engine], ServerConfig(served_model_name=MODEL)))
    prompt = f"{uuid.uuid4()} " + "the same long prompt " * 12
    await complete(client, prompt=prompt, max_tokens=1)
    again = await complete(client, prompt=prompt, max_tokens=1)
    s, stats = await scrape(client), real_engine.stats()
    assert again["prompt_tokens_details"]["cached_tokens"] >= 16
    hits = value(s, "parrot:prefix_cache_hits_total", engine="0")
    assert hits == stats.num_cached_tokens >= again["prompt_tokens_details"]["cached_tokens"]
    assert value(s, "parrot:prefix_cache_queries_total", engine="0") \
        == stats.num_cached_tokens + stats.num_prefill_tokens > hits
    for name, expected in [("parrot:prefill_tokens_total", stats.num_prefill_tokens),
                           ("parrot:decode_tokens_total", stats.num_decode_tokens),
                           ("parrot:engine_steps_total", stats.num_steps),
                           ("parrot:cascade_steps_total", stats.num_cascade_steps),
                           ("parrot:num_preemptions_total", stats.num_preemptions),
                           ("parrot:kv_cache_blocks", stats.num_blocks),
                           ("parrot:kv_cache_blocks_used", stats.num_used_blocks),
                           ("parrot:kv_cache_blocks_free", stats.num_free_blocks),
                           ("parrot:kv_cache_blocks_cached", stats.num_cached_blocks)]:
        assert value(s, name, engine="0") == expected, name
    assert stats.num_steps > 0 and stats.num_cached_blocks > 0
    assert value(s, "parrot:kv_cache_usage_perc", engine="0") \
        == stats.num_used_blocks / stats.num_blocks


async def test_each_app_has_its_own_registry(aiohttp_client, real_engine):
    busy = await aiohttp_client(create_app([real_engine], ServerConfig(served_model_name=MODEL)))
    idle = await aiohttp_client(create_app([real_engine], ServerConfig(served_model_name=MODEL)))
    assert len(real_engine.step_observers) == 2  # one queue timer per app
    await complete(busy, prompt=f"{uuid.uuid4()}", max_tokens=2)
    assert value(await scrape(busy), "parrot:request_success_total", finished_reason="length") == 1
    idle_samples = await scrape(idle)  # what the server measured is the busy app's alone,
    assert value(idle_samples, "parrot:time_to_first_token_seconds_count") == 0
    assert not has(idle_samples, "parrot:http_requests_total",
                   route="/v1/completions", status="200")
    # what the engine did is the engine's: both apps see it
    assert value(idle_samples, "parrot:request_queue_time_seconds_count") == 1
    assert value(idle_samples, "parrot:engine_steps_total", engine="0") > 0
    await busy.close()
    await idle.close()
    assert real_engine.step_observers == []  # the engine outlives the apps


async def test_sessions_and_calls_by_state(aiohttp_client):
    app = create_app([FakeEngine(step_s=0.001)], ServerConfig(served_model_name=MODEL))
    client = await aiohttp_client(app)
    opened = await (await client.post("/v1/sessions")).json()
    base, headers = f"/v1/sessions/{opened['session_id']}", {
        "X-Parrot-Session-Token": opened["token"]}
    resp = await client.post(f"{base}/calls", json={"calls": map_reduce_calls()}, headers=headers)
    assert resp.status == 200, await resp.text()
    s = await scrape(client)
    num_calls = len(CHUNKS) + 2
    assert value(s, "parrot:num_sessions") == 1
    assert value(s, "parrot:num_calls", state="pending") == num_calls
    assert value(s, "parrot:num_calls", state="done") == 0
    assert (await client.get(f"{base}/variables/{FINAL}", headers=headers)).status == 200
    s = await scrape(client)
    assert value(s, "parrot:num_calls", state="done") == num_calls
    assert value(s, "parrot:num_calls", state="pending") == 0
    live = sum(len(x.pool.prefixes) for x in app[MANAGER].sessions.values())
    assert value(s, "parrot:num_shared_prefixes") == live
    assert value(s, "parrot:prefill_tokens_total", engine="0") > 0  # what the fake reports
    assert not has(s, "parrot:kv_cache_blocks", engine="0")  # nor what it does not
    assert (await client.delete(base, headers=headers)).status == 200
    s = await scrape(client)
    assert value(s, "parrot:num_sessions") == 0 == value(s, "parrot:num_calls", state="done")


def sample(metrics: ServerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, {"model_name": "m", **labels})


async def chunks(num: int, fail_after: int | None = None):
    for i in range(num):
        await asyncio.sleep(0.01)
        if i == fail_after:
            raise RuntimeError("generation failed")
        yield ChoiceChunk(0, GenerationChunk([i], "x", "stop" if i == num - 1 else None))


async def test_timed_observes_latencies_and_counts_endings():
    metrics = ServerMetrics("m", max_model_len=64)
    items = [item async for item in metrics.timed(chunks(3), time.monotonic(), [5], n=1)]
    assert [i.chunk.token_ids for i in items] == [[0], [1], [2]]
    assert sample(metrics, "parrot:request_success_total", finished_reason="stop") == 1
    assert sample(metrics, "parrot:time_to_first_token_seconds_count") == 1
    assert sample(metrics, "parrot:inter_token_latency_seconds_count") == 2
    assert sample(metrics, "parrot:inter_token_latency_seconds_sum") >= 0.015
    assert sample(metrics, "parrot:e2e_request_latency_seconds_count") == 1
    assert sample(metrics, "parrot:prompt_tokens_total") == 5

    left = metrics.timed(chunks(3), time.monotonic(), [5, 6], n=2)  # 4 choices
    await anext(left)
    await left.aclose()  # the client went away
    assert sample(metrics, "parrot:request_success_total", finished_reason="abort") == 4
    with pytest.raises(RuntimeError):
        _ = [item async for item in metrics.timed(chunks(3, fail_after=1), 0.0, [5], n=1)]
    assert sample(metrics, "parrot:request_success_total", finished_reason="error") == 1
    assert sample(metrics, "parrot:e2e_request_latency_seconds_count") == 1
    assert sample(metrics, "parrot:generation_tokens_total") == 3 + 1 + 1


class _Request:  # what the queue timer reads of an engine request
    def __init__(self, arrival: float, first_scheduled: float) -> None:
        self.arrival, self.first_scheduled = arrival, first_scheduled


class _Seq:
    def __init__(self, request: _Request) -> None:
        self.request = request


class _StepEngine:
    def __init__(self) -> None:
        self.step_observers: list = []


def test_queue_timer_times_each_request_once_from_arrival_to_its_first_step():
    metrics, engine = ServerMetrics("m", max_model_len=64), _StepEngine()
    timer = QueueTimer(engine, metrics.queue_time)
    timer.attach()
    now = time.monotonic()  # a 200 ms step that began at now - 0.2
    waited, fresh = _Request(now - 1.0, now - 0.2), _Request(now, now)
    plan = type("Plan", (), {"seqs": [_Seq(waited), _Seq(fresh)]})()
    for observe in list(engine.step_observers) * 3:  # the same requests in three steps
        observe(plan)
    assert sample(metrics, "parrot:request_queue_time_seconds_count") == 2
    assert 0.75 < sample(metrics, "parrot:request_queue_time_seconds_sum") < 0.85
    timer.detach()
    assert engine.step_observers == []
    timer.after_step(type("Plan", (), {"seqs": [_Seq(object())]})())  # bad input: no raise


def test_token_buckets_are_1_2_5_up_to_the_model_length():
    assert token_buckets(600) == (1, 2, 5, 10, 20, 50, 100, 200, 500)
