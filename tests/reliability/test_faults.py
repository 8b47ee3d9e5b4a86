"""Faults against a live server: an exception injected into running requests fails those
requests alone; client disconnects and closed sessions cancel work and free its KV."""
from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid
from urllib.parse import urlparse

import aiohttp
import pytest

from tests.reliability.client import assert_serves, call, engine_stats, open_session, wait_idle

pytestmark = pytest.mark.e2e
LONG = {"max_tokens": 120, "ignore_eos": True, "temperature": 0}
T = "<|im_start|>user\n{{input:x}}<|im_end|>\n<|im_start|>assistant\n{{output:y}}"


async def post(http: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, str]:
    async with http.post(url, json=body) as resp:
        return resp.status, await resp.text()


async def native_round(http, url: str, marker: str) -> tuple[int, int]:
    """A session with a marked call and an unmarked sibling: (victim status, sibling status)."""
    async with http.post(f"{url}/v1/sessions", json={}) as resp:
        created = await resp.json()
    base = f"{url}/v1/sessions/{created['session_id']}"
    auth = {"X-Parrot-Session-Token": created["token"]}
    calls = [{"id": "victim", "template": T, "inputs": {"x": f"{marker} Tell a long story."},
              "outputs": {"y": "v"}, "sampling": LONG},
             {"id": "sibling", "template": T, "inputs": {"x": "Tell a short story."},
              "outputs": {"y": "s"}, "sampling": {**LONG, "max_tokens": 20}}]
    async with http.post(f"{base}/calls", json={"calls": calls}, headers=auth) as resp:
        assert resp.status == 200, await resp.text()
    results = []
    for var in ("v", "s"):
        async with http.get(f"{base}/variables/{var}", headers=auth) as resp:
            body = await resp.json()
            results.append(resp.status)
            if var == "v":
                assert "injected failure" in body["error"]["message"], body
    await http.delete(base, headers=auth)
    return results[0], results[1]


async def test_an_injected_failure_fails_only_its_requests(server):
    marker = f"MARK-{uuid.uuid4().hex[:8]}"
    failed_before = engine_stats(server)["num_requests_failed"]
    async with aiohttp.ClientSession() as http:
        c = f"{server}/v1/completions"
        victims = [post(http, c, {"prompt": f"{marker} Once upon a time", **LONG}),
                   post(http, c, {"prompt": f"{marker} In a far land", "stream": True, **LONG}),
                   native_round(http, server, marker)]
        bystander = post(http, c, {"prompt": "Long ago", **LONG, "max_tokens": 30})
        tasks = [asyncio.ensure_future(t) for t in (*victims, bystander)]
        deadline = time.monotonic() + 60
        while not all(t.done() for t in tasks[:3]):  # mark the victims as they come up
            assert time.monotonic() < deadline
            await post(http, f"{server}/v1/parrot/test/inject_failure", {"marker": marker})
            await asyncio.sleep(0.1)
        (s1, b1), (s2, b2), native, (s4, b4) = await asyncio.gather(*tasks)
    assert s1 == 500 and "internal server error" in b1  # failed inside the engine
    if s2 == 200:  # failed after the first chunk: reported in-band, then [DONE]
        assert '"server_error"' in b2 and b2.endswith("data: [DONE]\n\n"), b2
    else:  # failed before it: a plain JSON 500
        assert s2 == 500 and "internal server error" in b2, b2
    assert native == (422, 200)  # the marked call failed; its sibling did not
    assert s4 == 200 and json.loads(b4)["usage"]["completion_tokens"] == 30
    stats = wait_idle(server)
    assert stats["num_requests_failed"] >= failed_before + 3
    assert_serves(server)  # the engine loop kept running


def test_openai_disconnects_cancel_and_free_kv(server):
    for stream in (True, False):
        before = engine_stats(server)["num_generated_tokens"]
        conn = _send(server, "/v1/completions", {"prompt": "Count to a thousand.",
                                                 "stream": stream, **LONG, "max_tokens": 200})
        if stream:
            response = conn.getresponse()
            assert response.status == 200 and response.readline().startswith(b"data: ")
        else:
            while engine_stats(server)["num_generated_tokens"] == before:
                time.sleep(0.05)  # it is generating now
        conn.close()  # the client goes away
        wait_idle(server)
        assert engine_stats(server)["num_generated_tokens"] - before < 200, stream


def test_native_stream_disconnect_leaves_the_value_to_the_session(server):
    """A stream is a view of session state: dropping it does not cancel the call, which a
    later get still returns; the session's close (or idle timeout) frees everything."""
    base, auth = open_session(server)
    answer = call(server, "POST", f"{base}/calls", headers=auth, body={"calls": [
        {"template": T, "inputs": {"x": "Tell a story."}, "outputs": {"y": "y"},
         "sampling": {**LONG, "max_tokens": 40}}]})
    assert answer.status == 200, answer
    conn = _send(server, f"{base}/variables/y/stream", None, "GET", auth)
    response = conn.getresponse()
    assert response.status == 200 and response.readline().startswith(b"event: ")
    conn.close()
    value = call(server, "GET", f"{base}/variables/y", headers=auth)
    assert value.status == 200 and value.body["value"], value
    assert call(server, "DELETE", base, headers=auth).status == 200
    wait_idle(server)


def test_a_client_that_vanishes_has_its_session_reaped(server):
    answer = call(server, "POST", "/v1/sessions", {"idle_timeout": 1.0})
    base = f"/v1/sessions/{answer.body['session_id']}"
    auth = {"X-Parrot-Session-Token": answer.body["token"]}
    call(server, "POST", f"{base}/calls", headers=auth, body={"calls": [
        {"template": T, "inputs": {"x": "Tell a story."}, "outputs": {"y": "y"},
         "sampling": {**LONG, "max_tokens": 200}}]})
    conn = _send(server, f"{base}/variables/y", None, "GET", auth)
    time.sleep(0.5)
    conn.close()  # the get that kept the session alive is gone; it idles out
    wait_idle(server, timeout=30)
    assert call(server, "GET", f"{base}/graph", headers=auth).status == 404


async def test_closing_a_session_mid_graph_cancels_its_calls(server):
    base, auth = open_session(server)
    chain = [{"id": f"c{i}", "template": T, "inputs": {"x": {"var": f"v{i}"} if i else "Hi"},
              "outputs": {"y": f"v{i + 1}"}, "sampling": {**LONG, "max_tokens": 60}}
             for i in range(3)]
    assert call(server, "POST", f"{base}/calls", {"calls": chain}, headers=auth).status == 200
    async with aiohttp.ClientSession() as http:
        waiting = asyncio.ensure_future(http.get(f"{server}{base}/variables/v3", headers=auth))
        while engine_stats(server)["num_running"] == 0:
            await asyncio.sleep(0.05)
        assert call(server, "DELETE", base, headers=auth).status == 200
        resp = await waiting
        assert resp.status == 404  # the session is gone: its pending get ends, not hangs
    wait_idle(server)


def _send(url: str, path: str, body: dict | None, method: str = "POST",
          headers: dict | None = None) -> http.client.HTTPConnection:
    parts = urlparse(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data = None if body is None else json.dumps(body)
    conn.request(method, path, body=data, headers={"Content-Type": "application/json",
                                                   **(headers or {})})
    return conn
