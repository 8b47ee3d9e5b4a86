"""A server whose KV pool is far too small for its load preempts (and recomputes) instead of
failing anything; on SIGTERM it finishes the request in flight, then exits 0."""
from __future__ import annotations

import http.client
import json
import signal
import threading
from urllib.parse import urlparse

import pytest

from parrot.bench.launcher import ServerProcess
from tests.conftest import E2E_SERVER_FLAGS
from tests.reliability.client import call, engine_stats, wait_idle

pytestmark = pytest.mark.e2e
NUM_REQUESTS, MAX_TOKENS = 6, 40  # each needs 4 blocks; the pool has 17


@pytest.fixture(scope="module")
def tight_server(tmp_path_factory):
    flags = [*E2E_SERVER_FLAGS, "--kv-memory-gb", "0.012", "--shutdown-timeout", "30"]
    server = ServerProcess(flags, log_path=tmp_path_factory.mktemp("tight") / "serve.log")
    server.start()
    yield server
    server.stop()


def test_a_pool_too_small_preempts_instead_of_failing(tight_server):
    url = tight_server.url
    assert engine_stats(url)["num_blocks"] < NUM_REQUESTS * 4
    answers = [None] * NUM_REQUESTS

    def one(i: int) -> None:
        answers[i] = call(url, "POST", "/v1/completions", {
            "prompt": f"Story number {i}: once upon a time", "max_tokens": MAX_TOKENS,
            "ignore_eos": True, "temperature": 0}, timeout=300)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(NUM_REQUESTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for answer in answers:
        assert answer.status == 200 and answer.body["usage"]["completion_tokens"] == MAX_TOKENS
    stats = wait_idle(url)
    assert stats["num_preemptions"] > 0 and stats["num_requests_failed"] == 0, stats


def test_sigterm_drains_the_request_in_flight_then_exits_0(tight_server):
    conn = _stream(tight_server.url, {"prompt": "Tell a story.", "max_tokens": 40,
                                      "ignore_eos": True, "stream": True,
                                      "stream_options": {"include_usage": True}})
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"data: ")
    tight_server.proc.send_signal(signal.SIGTERM)
    lines = [line for line in response.read().split(b"\n") if line.startswith(b"data: ")]
    assert lines[-1] == b"data: [DONE]"
    usage = json.loads(lines[-2][6:])["usage"]
    assert usage["completion_tokens"] == 40  # finished, not cut off
    assert tight_server.proc.wait(timeout=60) == 0
    assert "shutting down" in tight_server.log() and "stopped" in tight_server.log()


def _stream(url: str, body: dict) -> http.client.HTTPConnection:
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    conn.request("POST", "/v1/completions", body=json.dumps(body),
                 headers={"Content-Type": "application/json"})
    return conn
