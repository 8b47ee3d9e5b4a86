"""Constrained generation and logprobs on the real embedded model: outputs parse, forks of
one prompt keep their own grammar state, bad constraints fail alone, no block is lost."""
from __future__ import annotations

import asyncio
import json
import re

import pytest

from parrot.engine import EngineInputError, SamplingParams
from parrot.engine.sampling_params import Constraint

from .conftest import start_engine
from .test_generate import assert_all_free

pytestmark = pytest.mark.e2e

PROMPT = "<|im_start|>user\nDescribe a pet.<|im_end|>\n<|im_start|>assistant\n"
SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 20}, "age": {"type": "integer"},
    "kind": {"enum": ["cat", "dog", "parrot"]}}, "required": ["name", "age", "kind"],
    "additionalProperties": False}


async def run(engine, ctx, sampling):
    chunks = [c async for c in engine.generate(ctx, sampling)]
    return "".join(c.text for c in chunks), chunks


async def test_forks_of_one_prompt_each_follow_their_own_constraint(smollm):
    engine = await start_engine(smollm)
    try:
        parent = engine.new_context()
        await engine.fill(parent, smollm.tokenizer.encode(PROMPT))
        constraints = [Constraint("json_schema", json.dumps(SCHEMA)),
                       Constraint("regex", r"[0-9]{3}-[0-9]{4}"),
                       Constraint("choice", json.dumps(["yes", "no", "maybe"])),
                       Constraint("json_object")]
        forks = [engine.fork(parent) for _ in constraints]
        results = await asyncio.gather(*[
            run(engine, ctx, SamplingParams(max_tokens=160, temperature=0.9 if i < 3 else 0.0,
                                            seed=i, constraint=c))
            for i, (ctx, c) in enumerate(zip(forks, constraints))])
        texts = [t for t, _ in results]
        doc = json.loads(texts[0])
        assert set(doc) == {"name", "age", "kind"} and isinstance(doc["age"], int)
        assert doc["kind"] in SCHEMA["properties"]["kind"]["enum"]
        assert re.fullmatch(r"[0-9]{3}-[0-9]{4}", texts[1])
        assert texts[2] in ("yes", "no", "maybe")
        assert isinstance(json.loads(texts[3]), dict)
        assert all(chunks[-1].finish_reason == "stop" for _, chunks in results)
        for ctx in [parent, *forks]:
            engine.free(ctx)
        assert_all_free(engine)
    finally:
        await engine.stop()


async def test_logprobs_are_per_token_and_agree_with_greedy(smollm):
    engine = await start_engine(smollm)
    try:
        ctx = engine.new_context()
        engine.append(ctx, smollm.tokenizer.encode("The capital of France is"))
        _, chunks = await run(engine, ctx, SamplingParams(max_tokens=8, logprobs=3))
        for c in chunks:
            (lp,) = c.logprobs
            assert lp.token_id == c.token_ids[0] and lp.logprob <= 0.0
            assert [t for t, _ in lp.top][0] == lp.token_id  # greedy picks the likeliest
            assert [v for _, v in lp.top] == sorted((v for _, v in lp.top), reverse=True)
        engine.free(ctx)
    finally:
        await engine.stop()


async def test_an_invalid_constraint_is_an_input_error_and_costs_nothing(smollm):
    engine = await start_engine(smollm)
    try:
        ctx = engine.new_context()
        engine.append(ctx, smollm.tokenizer.encode("Hi"))
        with pytest.raises(EngineInputError, match="invalid regex"):
            await run(engine, ctx, SamplingParams(constraint=Constraint("regex", "(")))
        text, _ = await run(engine, ctx, SamplingParams(
            max_tokens=4, constraint=Constraint("regex", "[a-z]+")))
        assert re.fullmatch("[a-z]+", text)
        engine.free(ctx)
        assert_all_free(engine)
    finally:
        await engine.stop()
