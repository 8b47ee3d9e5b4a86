"""One vocabulary: the server checks prompt and stop token ids against the engine's
`vocab_size` (the model's), the size the engine itself checks, not the tokenizer's length
(the two differ for many models: padded embeddings, added tokens)."""
from __future__ import annotations

import pytest

from parrot.engine import Engine, EngineConfig, EngineInputError
from parrot.server.app import create_app
from parrot.server.config import ServerConfig
from parrot.server.keys import ENGINES
from tests.manager.fake_engine import FakeEngine


async def complete(client, prompt: list[int], **body) -> tuple[int, dict]:
    resp = await client.post("/v1/completions", json={
        "prompt": prompt, "max_tokens": 1, "temperature": 0, **body})
    return resp.status, await resp.json()


async def engine_refuses(engine, token_ids: list[int]) -> str | None:
    """The engine's own verdict on `token_ids` (None: accepted), through the contract."""
    ctx = engine.new_context()
    try:
        await engine.fill(ctx, token_ids)
    except EngineInputError as e:
        return str(e)
    finally:
        engine.free(ctx)
    return None


@pytest.fixture
async def real_app(aiohttp_client, smollm):
    engine = await Engine(EngineConfig(dtype="float32", kv_memory_gb=0.05), loaded=smollm).start()
    client = await aiohttp_client(create_app([engine], ServerConfig()))
    yield client, client.server.app[ENGINES][0]  # the engine through the contract
    await engine.stop()


async def test_an_id_past_the_tokenizer_but_in_the_model_vocabulary_is_served(real_app,
                                                                              monkeypatch):
    client, engine = real_app
    vocab = engine.vocab_size
    assert vocab == engine.engine.model_config.vocab_size
    # A tokenizer shorter than the model's embeddings, as many models ship.
    monkeypatch.setattr(type(engine.tokenizer), "__len__", lambda self: vocab - 100)
    between = vocab - 50
    assert len(engine.tokenizer) <= between < vocab
    assert await engine_refuses(engine, [1, between]) is None
    status, body = await complete(client, [1, between])
    assert status == 200, body
    status, body = await complete(client, [1, 2], stop_token_ids=[between])
    assert status == 200, body

    engine_says = await engine_refuses(engine, [1, vocab])
    status, body = await complete(client, [1, vocab])
    assert status == 400 and body["error"]["param"] == "prompt", body
    assert engine_says and f"(size {vocab})" in engine_says
    assert f"token id {vocab}" in body["error"]["message"]
    assert f"(size {vocab})" in body["error"]["message"]


async def test_an_id_in_the_tokenizer_but_past_the_model_vocabulary_is_refused(aiohttp_client):
    engine = FakeEngine(vocab_size=1000)  # its tokenizer knows every code point
    client = await aiohttp_client(create_app([engine], ServerConfig()))
    between = 1500
    assert engine.vocab_size <= between < len(engine.tokenizer)
    assert "(size 1000)" in await engine_refuses(engine, [65, between])
    status, body = await complete(client, [65, between])
    assert status == 400 and body["error"]["param"] == "prompt", body
    assert "(size 1000)" in body["error"]["message"]
    status, body = await complete(client, [65, 66], stop_token_ids=[between])
    assert status == 400 and body["error"]["param"] == "stop_token_ids", body
    assert await engine_refuses(engine, [65, 999]) is None
    status, body = await complete(client, [65, 999])
    assert status == 200, body
