"""The tiny Prometheus registry renders valid text format; no server needed."""
from __future__ import annotations

import asyncio
import re

from parrot.engine import EngineStats, GenerationChunk
from parrot.server.generation import ChoiceChunk
from parrot.server.metrics import Histogram, Metric, ServerMetrics

SAMPLE = re.compile(r'^[a-z_][a-z0-9_]*(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def test_metric_and_histogram_text():
    m = Metric("x_total", "counter", "An x.")
    m.inc(route="/a", status=200)
    m.inc(2, route="/a", status=200)
    assert m.render() == ["# HELP x_total An x.", "# TYPE x_total counter",
                          'x_total{route="/a",status="200"} 3']
    h = Histogram("lat_seconds", "Latency.", buckets=(0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.render()[2:] == ['lat_seconds_bucket{le="0.1"} 2', 'lat_seconds_bucket{le="1"} 3',
                              'lat_seconds_bucket{le="+Inf"} 4', "lat_seconds_sum 3.65",
                              "lat_seconds_count 4"]


def test_render_reads_engine_stats():
    text = ServerMetrics().render([EngineStats(num_prefill_tokens=7, num_free_blocks=3)])
    assert 'parrot_prefill_tokens_total{engine="0"} 7' in text
    assert 'parrot_kv_blocks_free{engine="0"} 3' in text
    for line in text.splitlines():
        assert line.startswith("# ") or SAMPLE.match(line), line


def test_timed_observes_ttft_inter_token_and_e2e():
    metrics = ServerMetrics()

    async def chunks():
        for i in range(3):
            await asyncio.sleep(0.01)
            yield ChoiceChunk(0, GenerationChunk([i], "x", "length" if i == 2 else None))

    async def consume():
        return [item async for item in metrics.timed(chunks(), asyncio.get_running_loop().time())]

    items = asyncio.run(consume())
    assert [i.chunk.token_ids for i in items] == [[0], [1], [2]]
    assert (metrics.ttft.count, metrics.itl.count, metrics.e2e.count) == (1, 2, 1)
