"""The official `openai` client against a real `parrot serve` on the embedded model."""
from __future__ import annotations

import asyncio
import json
import time
import urllib.request
import uuid

import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families
from transformers import AutoTokenizer

pytestmark = pytest.mark.e2e

MODEL = "SmolLM2-135M-Instruct"
CHAT = [{"role": "user", "content": "Name three colors."}]


@pytest.fixture(scope="module")
def tokenizer(smollm_dir):
    return AutoTokenizer.from_pretrained(str(smollm_dir))


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_models(client):
    assert [m.id for m in client.models.list().data] == [MODEL]


def test_completion_usage_matches_the_tokenizer(client, tokenizer):
    prompt = "The capital of France is"
    r = client.completions.create(model=MODEL, prompt=prompt, max_tokens=6, temperature=0,
                                  extra_body={"ignore_eos": True})
    assert r.object == "text_completion" and r.choices[0].text
    assert r.choices[0].finish_reason == "length"
    assert r.usage.prompt_tokens == len(tokenizer.encode(prompt))
    assert r.usage.completion_tokens == 6
    assert r.usage.total_tokens == r.usage.prompt_tokens + 6
    ids = client.completions.create(model=MODEL, prompt=tokenizer.encode(prompt), max_tokens=6,
                                    temperature=0, extra_body={"ignore_eos": True})
    assert ids.choices[0].text == r.choices[0].text


def test_chat_uses_the_chat_template(client, tokenizer):
    r = client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8, temperature=0)
    message = r.choices[0].message
    assert message.role == "assistant" and message.content
    rendered = tokenizer.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    assert r.usage.prompt_tokens == len(tokenizer.encode(rendered, add_special_tokens=False))
    assert r.choices[0].finish_reason in ("stop", "length")


async def test_streaming_chat_equals_non_streaming(aclient):
    kw = dict(model=MODEL, messages=CHAT, max_tokens=10, temperature=0)
    whole = await aclient.chat.completions.create(**kw)
    stream = await aclient.chat.completions.create(
        **kw, stream=True, stream_options={"include_usage": True})
    chunks = [c async for c in stream]
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finals = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finals[-1] == whole.choices[0].finish_reason and set(finals[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage == whole.usage


def test_streaming_completion(client):
    kw = dict(model=MODEL, prompt="Once upon a time", max_tokens=8, temperature=0)
    whole = client.completions.create(**kw)
    text = "".join(c.choices[0].text for c in client.completions.create(**kw, stream=True))
    assert text == whole.choices[0].text


async def test_n_choices_are_forks_of_one_prompt(aclient):
    r = await aclient.completions.create(model=MODEL, prompt="My favourite animal is",
                                         max_tokens=5, n=3, temperature=0.8, seed=7,
                                         extra_body={"ignore_eos": True})
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert r.usage.completion_tokens == 15
    stream = await aclient.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=4,
                                                   n=3, temperature=0.8, stream=True)
    finished = {c.choices[0].index async for c in stream if c.choices[0].finish_reason}
    assert finished == {0, 1, 2}


def test_seed_reproducibility(client):
    kw = dict(model=MODEL, prompt="A surprising fact:", max_tokens=12, temperature=0.8,
              seed=1234)
    first = client.completions.create(**kw).choices[0].text
    assert client.completions.create(**kw).choices[0].text == first


def test_stop_strings(client):
    kw = dict(model=MODEL, prompt="1, 2, 3, 4,", max_tokens=12, temperature=0)
    full = client.completions.create(**kw).choices[0].text
    stop = full.strip()[2:4]
    assert stop and stop in full
    r = client.completions.create(**kw, stop=[stop, "never-seen"])
    assert r.choices[0].text == full[:full.index(stop)]
    assert r.choices[0].finish_reason == "stop"


def test_frequency_penalty_breaks_a_greedy_repetition(client):
    kw = dict(model=MODEL, prompt="Repeat after me: hello hello hello hello", max_tokens=16,
              temperature=0, extra_body={"ignore_eos": True})
    plain = client.completions.create(**kw).choices[0].text
    assert plain == " hello" * 16  # greedy decoding repeats the word
    penalized = client.completions.create(**kw, frequency_penalty=2.0).choices[0].text
    assert penalized.count("hello") < 4  # each repeat costs 2 more: the loop breaks
    assert client.completions.create(**kw).choices[0].text == plain  # no state leaks
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=2,
                                       extra_body={"repetition_penalty": 0})
    assert info.value.body["param"] == "repetition_penalty"


def test_shared_prompt_hits_the_prefix_cache(client, parrot_server):
    system = f"[{uuid.uuid4()}] You are a terse assistant. " + "Follow the rules. " * 60
    stats = lambda: get_json(parrot_server + "/v1/parrot/engine_stats")  # noqa: E731

    def ask(question):
        before = stats()["num_prefill_tokens"]
        r = client.chat.completions.create(model=MODEL, max_tokens=2, temperature=0, messages=[
            {"role": "system", "content": system}, {"role": "user", "content": question}])
        return r.usage, stats()["num_prefill_tokens"] - before

    first, first_prefill = ask("What is 2+2?")
    second, second_prefill = ask("What is the capital of Peru?")
    assert first.prompt_tokens > 300
    assert first.prompt_tokens_details.cached_tokens < 16
    assert second.prompt_tokens_details.cached_tokens >= first.prompt_tokens - 32
    assert second_prefill < first_prefill / 4


def test_errors_are_openai_errors_and_the_server_keeps_serving(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="x", max_tokens=100_000)
    assert "context length" in info.value.message
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=MODEL, prompt="x", max_tokens=2, temperature="hot")
    assert "temperature" in info.value.message
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt-9", messages=CHAT, max_tokens=2)
    request = urllib.request.Request(client.base_url.__str__() + "completions", data=b"{oops",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as http_error:
        urllib.request.urlopen(request, timeout=10)
    assert http_error.value.code == 400
    assert "JSON" in json.loads(http_error.value.read())["error"]["message"]
    assert client.completions.create(model=MODEL, prompt="Hi", max_tokens=2).choices


async def test_disconnect_mid_stream_frees_the_request(parrot_server):
    import aiohttp

    stats_url = parrot_server + "/v1/parrot/engine_stats"
    before = get_json(stats_url)
    async with aiohttp.ClientSession() as session:
        resp = await session.post(parrot_server + "/v1/chat/completions", json={
            "model": MODEL, "messages": CHAT, "max_tokens": 500, "ignore_eos": True,
            "stream": True})
        for _ in range(3):
            assert (await resp.content.readline()) is not None
        assert get_json(stats_url)["num_running"] == 1
        resp.close()
    deadline = time.monotonic() + 10
    while (now := get_json(stats_url))["num_running"] or now["num_contexts"]:
        assert time.monotonic() < deadline, now
        await asyncio.sleep(0.05)
    assert now["num_used_blocks"] == before["num_used_blocks"]
    assert now["num_generated_tokens"] - before["num_generated_tokens"] < 500


async def test_server_answers_during_a_long_prefill(aclient, parrot_server):
    prompt = f"{uuid.uuid4()} " + "lorem ipsum dolor sit amet " * 150
    long_request = asyncio.create_task(aclient.completions.create(
        model=MODEL, prompt=prompt, max_tokens=1))
    await asyncio.sleep(0.2)
    started = time.monotonic()
    await asyncio.to_thread(get_json, parrot_server + "/health")
    assert time.monotonic() - started < 1.0
    assert not long_request.done()
    await long_request


def test_metrics_exposition(client, parrot_server):
    def scrape() -> dict:
        with urllib.request.urlopen(parrot_server + "/metrics", timeout=10) as response:
            assert response.headers["Content-Type"].startswith("text/plain")
            text = response.read().decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for family in text_string_to_metric_families(text) for s in family.samples}

    def key(name: str, **labels: str) -> tuple:
        return name, frozenset({"model_name": MODEL, **labels}.items())

    before = scrape()
    client.completions.create(model=MODEL, prompt=f"{uuid.uuid4()} Hi", max_tokens=3,
                              extra_body={"ignore_eos": True})
    after = scrape()
    for name, labels, expected in [
            ("parrot:request_success_total", {"finished_reason": "length"}, 1),
            ("parrot:generation_tokens_total", {}, 3),
            ("parrot:time_to_first_token_seconds_count", {}, 1),
            ("parrot:inter_token_latency_seconds_count", {}, 2),
            ("parrot:e2e_request_latency_seconds_count", {}, 1),
            ("parrot:request_queue_time_seconds_count", {}, 1),
            ("parrot:http_requests_total", {"route": "/v1/completions", "status": "200"}, 1)]:
        k = key(name, **labels)
        assert after[k] - before.get(k, 0) == expected, name
    assert after[key("parrot:prefill_tokens_total", engine="0")] \
        > before[key("parrot:prefill_tokens_total", engine="0")]
    assert after[key("parrot:num_requests_running", engine="0")] == 0
    assert 0 <= after[key("parrot:kv_cache_usage_perc", engine="0")] <= 1
    assert after[("process_cpu_seconds_total", frozenset())] > 0
    # start-up's objects (torch, the model's modules, the tokenizer) frozen out of GC scans
    assert after[("python_gc_frozen_objects", frozenset())] > 100_000
