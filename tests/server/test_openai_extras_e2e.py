"""Tools, structured outputs and logprobs through the official `openai` client against a
real `parrot serve` on the embedded model: what is enforced always parses, what is streamed
adds up to what is returned whole, and every KV block comes back."""
from __future__ import annotations

import asyncio
import json
import random

import jsonschema
import pytest

from tests.reliability.client import wait_idle

pytestmark = pytest.mark.e2e

MODEL = "SmolLM2-135M-Instruct"
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string", "maxLength": 30},
                                         "unit": {"enum": ["celsius", "fahrenheit"]}},
        "required": ["city", "unit"]}}}
MULTIPLY = {"type": "function", "function": {
    "name": "multiply", "description": "Multiply two integers", "parameters": {
        "type": "object", "properties": {"a": {"type": "integer", "minimum": -1000,
                                               "maximum": 1000},
                                         "b": {"type": "integer", "minimum": -1000,
                                               "maximum": 1000}},
        "required": ["a", "b"]}}}
TOOLS = [WEATHER, MULTIPLY]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
QUESTIONS = ["What is the weather in Paris?", "Multiply 6 by 7.", "Is it raining in Oslo?",
             "What is 12 times 3?", "How warm is it in Tokyo, in fahrenheit?",
             "Compute 5 * -8.", "Weather for Lima please.", "I need 100 times 9.",
             "Tell me the weather in Cairo.", "What's 2 multiplied by 2?"]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


async def test_required_tool_calls_always_parse_against_their_schema(aclient, parrot_server):
    async def ask(question: str, parallel: bool):
        r = await aclient.chat.completions.create(
            model=MODEL, messages=user(question), tools=TOOLS, tool_choice="required",
            parallel_tool_calls=parallel, max_tokens=120, temperature=0.7, seed=1)
        return r.choices[0]

    single = await asyncio.gather(*[ask(q, parallel=False) for q in QUESTIONS])
    for choice in single:
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        (call,) = choice.message.tool_calls
        jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])
        assert call.id.startswith("call_") and call.type == "function"
    # In parallel the grammar lets the model add calls; each one it finished parses.
    parallel = await asyncio.gather(*[ask(q, parallel=True) for q in QUESTIONS[:3]])
    for choice in parallel:
        assert choice.message.tool_calls
        for call in choice.message.tool_calls:
            jsonschema.validate(json.loads(call.function.arguments),
                                SCHEMAS[call.function.name])
    wait_idle(parrot_server)


def test_a_named_tool_choice_calls_that_tool(client):
    r = client.chat.completions.create(
        model=MODEL, messages=user("What is the weather in Paris?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "multiply"}},
        parallel_tool_calls=False, max_tokens=100, temperature=0)
    (call,) = r.choices[0].message.tool_calls
    assert call.function.name == "multiply"
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS["multiply"])


def test_streamed_tool_calls_add_up_to_the_whole_response(client):
    args = dict(model=MODEL, messages=user("Multiply 6 by 7."), tools=TOOLS,
                tool_choice="required", max_tokens=200, temperature=0)
    whole = client.chat.completions.create(**args).choices[0]
    deltas, reasons, content = {}, [], ""
    for chunk in client.chat.completions.create(**args, stream=True):
        for choice in chunk.choices:
            content += choice.delta.content or ""
            for d in choice.delta.tool_calls or []:
                assert d.index not in deltas and d.id and d.type == "function"
                deltas[d.index] = (d.function.name, json.loads(d.function.arguments))
            reasons.append(choice.finish_reason)
    assert content == "" and reasons[-1] == "tool_calls"
    assert [deltas[i] for i in sorted(deltas)] == [
        (c.function.name, json.loads(c.function.arguments)) for c in whole.message.tool_calls]


def test_a_tool_result_in_the_history_is_answered_in_text(client):
    first = client.chat.completions.create(
        model=MODEL, messages=user("What is the weather in Paris?"), tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False, max_tokens=100, temperature=0).choices[0].message
    history = [*user("What is the weather in Paris?"),
               first.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": first.tool_calls[0].id,
                "content": json.dumps({"city": "Paris", "sky": "sunny", "celsius": 21})}]
    r = client.chat.completions.create(model=MODEL, messages=history, tools=TOOLS,
                                       tool_choice="none", max_tokens=40, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    assert r.choices[0].message.content and not r.choices[0].message.tool_calls


def random_schema(rng: random.Random, depth: int = 0) -> dict:
    """An object schema with nested objects, arrays, enums, bounded strings and integers."""
    def value() -> dict:
        kinds = ["string", "integer", "boolean", "enum", "array"] + (["object"] if depth < 2
                                                                     else [])
        kind = rng.choice(kinds)
        if kind == "string":
            return {"type": "string", "maxLength": rng.randint(1, 16)}
        if kind == "integer":
            return {"type": "integer", "minimum": -500, "maximum": rng.randint(0, 10_000)}
        if kind == "enum":
            return {"enum": rng.sample(["red", "green", "blue", "cat", "dog", "yes", "no"],
                                       rng.randint(2, 4))}
        if kind == "array":
            return {"type": "array", "items": {"type": "string", "maxLength": 8},
                    "minItems": rng.randint(0, 1), "maxItems": rng.randint(1, 3)}
        if kind == "object":
            return random_schema(rng, depth + 1)
        return {"type": kind}

    names = rng.sample(["name", "age", "color", "tags", "owner", "id", "size", "kind",
                        "active", "city"], rng.randint(1, 4))
    props = {n: value() for n in names}
    required = [n for n in names if rng.random() < 0.7]
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}


async def test_one_hundred_generated_schemas_all_parse_and_validate(aclient, parrot_server):
    rng = random.Random(16)
    schemas = [random_schema(rng) for _ in range(100)]
    sem = asyncio.Semaphore(32)

    async def ask(i: int, schema: dict) -> str:
        async with sem:
            r = await aclient.chat.completions.create(
                model=MODEL, messages=user(f"Describe item number {i} as JSON."),
                response_format={"type": "json_schema", "json_schema": {
                    "name": f"item{i}", "schema": schema, "strict": True}},
                max_tokens=400, temperature=0.8, seed=i)
            assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
            return r.choices[0].message.content

    texts = await asyncio.gather(*[ask(i, s) for i, s in enumerate(schemas)])
    for text, schema in zip(texts, schemas):
        jsonschema.validate(json.loads(text), schema)
    wait_idle(parrot_server)


def test_json_object_and_vllm_style_constraints(client):
    r = client.chat.completions.create(model=MODEL, messages=user("A JSON object, please."),
                                       response_format={"type": "json_object"},
                                       max_tokens=200, temperature=0)
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    r = client.completions.create(model=MODEL, prompt="Phone:", max_tokens=20,
                                  extra_body={"guided_regex": r"\d{3}-\d{4}"})
    assert r.choices[0].text[3] == "-" and len(r.choices[0].text) == 8
    r = client.chat.completions.create(model=MODEL, messages=user("Is water wet?"),
                                       max_tokens=5, extra_body={
                                           "structured_outputs": {"choice": ["yes", "no"]}})
    assert r.choices[0].message.content in ("yes", "no")


def test_chat_logprobs_whole_and_streamed(client):
    args = dict(model=MODEL, messages=user("Name a color."), max_tokens=6, temperature=0,
                logprobs=True, top_logprobs=3)
    whole = client.chat.completions.create(**args).choices[0]
    entries = whole.logprobs.content
    assert "".join(e.token for e in entries) == whole.message.content or \
        whole.finish_reason == "stop"
    for e in entries:
        assert len(e.top_logprobs) == 3 and e.logprob <= 0
        assert e.top_logprobs[0].token == e.token  # greedy: the likeliest token
        assert e.bytes == list(e.token.encode())
    streamed = [e for chunk in client.chat.completions.create(**args, stream=True)
                for c in chunk.choices if c.logprobs for e in c.logprobs.content]
    # the same tokens and logprobs; the second request's prompt is a prefix-cache hit, so its
    # prefill ran another kernel path (bf16): equal to a bf16-sized tolerance, not bit for bit
    assert [e.token for e in streamed] == [e.token for e in entries]
    assert [e.logprob for e in streamed] == pytest.approx([e.logprob for e in entries], abs=2e-3)


def test_completion_logprobs_shape(client):
    r = client.completions.create(model=MODEL, prompt="The capital of France is",
                                  max_tokens=5, temperature=0, logprobs=2)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.top_logprobs) == 5
    assert lp.text_offset[0] == 0 and lp.text_offset == sorted(lp.text_offset)
    assert all(len(top) == 2 and max(top.values()) >= v - 1e-6
               for top, v in zip(lp.top_logprobs, lp.token_logprobs))
    assert "".join(lp.tokens).startswith(r.choices[0].text[:3])
