"""The app in-process (pytest-aiohttp) on a real engine: errors, auth, limits, cancellation."""
from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import pytest

from parrot.engine import Engine, EngineConfig
from parrot.server.app import create_app
from parrot.server.config import ServerConfig


@pytest.fixture
async def make_client(aiohttp_client, smollm):
    engines = []

    async def make(**server_config):
        engine = await Engine(EngineConfig(dtype="float32", kv_memory_gb=0.05),
                              loaded=smollm).start()
        engines.append(engine)
        return await aiohttp_client(create_app([engine], ServerConfig(**server_config))), engine

    yield make
    for engine in engines:
        await engine.stop()


async def post(client, path, body, **kw):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    resp = await client.post(path, data=data, **kw)
    return resp.status, await resp.json()


async def assert_error(client, path, body, status, param=None, **kw):
    got_status, body = await post(client, path, body, **kw)
    assert got_status == status, body
    error = body["error"]
    assert error["message"] and error["type"]
    if param is not None:
        assert error["param"] == param
    return error


async def assert_serves(client, **kw):
    status, body = await post(client, "/v1/completions",
                              {"prompt": "Hello", "max_tokens": 2, "temperature": 0}, **kw)
    assert status == 200 and body["usage"]["completion_tokens"] >= 1, body


async def wait_all_free(engine: Engine, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        stats = engine.stats()
        if stats.num_running == stats.num_waiting == stats.num_used_blocks == 0 \
                and stats.num_contexts == 0:
            break
        assert asyncio.get_running_loop().time() < deadline, stats
        await asyncio.sleep(0.05)
    engine.check_integrity()


async def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(make_client):
    client, engine = await make_client(max_body_bytes=4096)
    c = "/v1/completions"
    assert "not valid JSON" in (await assert_error(client, c, "{bad", 400))["message"]
    await assert_error(client, c, "[1, 2]", 400)
    await assert_error(client, c, {"prompt": "x", "max_tokens": "ten"}, 400, "max_tokens")
    await assert_error(client, c, {"prompt": "x", "max_tokens": -1}, 400, "max_tokens")
    await assert_error(client, c, {"prompt": [10 ** 9]}, 400, "prompt")
    err = await assert_error(client, c, {"prompt": "x", "max_tokens": 10 ** 6}, 400, "max_tokens")
    assert "context length" in err["message"] and err["code"] == "context_length_exceeded"
    err = await assert_error(client, c, {"prompt": "x", "model": "gpt-4"}, 404, "model")
    assert err["code"] == "model_not_found"
    await assert_error(client, "/v1/chat/completions", {"messages": "hi"}, 400, "messages")
    await assert_error(client, c, {"prompt": "x" * 5000}, 413)
    await assert_error(client, "/v1/nope", {}, 404)
    await assert_serves(client)
    await wait_all_free(engine)


async def test_engine_failure_is_a_500_body_and_the_server_keeps_serving(make_client, monkeypatch):
    client, engine = await make_client()
    real_generate = engine.generate

    def broken(ctx, sampling, priority=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(engine, "generate", broken)
    err = await assert_error(client, "/v1/completions", {"prompt": "x"}, 500)
    assert "boom" not in err["message"]  # no internals leak
    monkeypatch.setattr(engine, "generate", real_generate)
    await assert_serves(client)
    await wait_all_free(engine)


async def test_api_key(make_client):
    client, _ = await make_client(api_key="s3cret")
    body = {"prompt": "x", "max_tokens": 1}
    err = await assert_error(client, "/v1/completions", body, 401)
    assert "API key" in err["message"]
    await assert_error(client, "/v1/completions", body, 401,
                       headers={"Authorization": "Bearer wrong"})
    assert (await client.get("/health")).status == 200
    assert (await client.get("/v1/models")).status == 401
    await assert_serves(client, headers={"Authorization": "Bearer s3cret"})


async def test_stream_disconnect_cancels_and_frees_kv(make_client):
    client, engine = await make_client()
    resp = await client.post("/v1/completions", json={
        "prompt": "Tell me a long story.", "max_tokens": 400, "ignore_eos": True,
        "stream": True})
    assert resp.status == 200
    assert (await resp.content.readline()).startswith(b"data: ")
    assert engine.stats().num_running == 1
    resp.close()
    await wait_all_free(engine)
    assert engine.stats().num_generated_tokens < 400


async def test_non_stream_disconnect_cancels_and_frees_kv(make_client):
    client, engine = await make_client()
    request = asyncio.create_task(client.post("/v1/chat/completions", json={
        "messages": [{"role": "user", "content": "Count to 1000."}], "max_tokens": 400,
        "ignore_eos": True, "n": 2}))
    while engine.stats().num_generated_tokens < 2:
        await asyncio.sleep(0.02)
    request.cancel()
    await wait_all_free(engine)
    assert engine.stats().num_generated_tokens < 800


def test_prompts_sharing_a_prefix_go_to_one_engine():
    from parrot.server.openai_api import AFFINITY_TOKENS, pick_engine

    engines = [SimpleNamespace(name=f"e{i}", is_alive=True) for i in range(3)]
    shared = list(range(AFFINITY_TOKENS))
    picks = {pick_engine(engines, shared + [i, i + 1]).name for i in range(20)}
    assert len(picks) == 1
    assert len({pick_engine(engines, [i] * 8).name for i in range(30)}) > 1
    engines[1].is_alive = False  # a lost engine's prompts go to the live ones
    assert {pick_engine(engines, [i] * 8).name for i in range(30)} == {"e0", "e2"}


async def test_render_chat_is_the_chat_endpoints_prompt(make_client):
    client, engine = await make_client()
    messages = [{"role": "user", "content": "Hi"}]
    status, body = await post(client, "/v1/parrot/render_chat", {"messages": messages})
    assert status == 200
    expected = engine.tokenizer.apply_chat_template(messages, tokenize=False,
                                                    add_generation_prompt=True)
    assert body == {"prompt": expected}
    await assert_error(client, "/v1/parrot/render_chat", {"messages": [{"role": "x"}]}, 400,
                       "messages[0].role")
