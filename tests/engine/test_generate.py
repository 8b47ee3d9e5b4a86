"""The engine on the real embedded model: exactness, forks, preemption, no leaks, a live loop."""
from __future__ import annotations

import asyncio
import time

import pytest
import torch

from parrot.engine import EngineInputError, SamplingParams

from .conftest import start_engine

pytestmark = pytest.mark.e2e

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "<|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n",
    "List three colors:",
]


async def generate(engine, prompt_ids, sampling=None, ctx=None):
    ctx = ctx or engine.new_context()
    ctx.token_ids.extend(prompt_ids)
    chunks = [c async for c in engine.generate(ctx, sampling or SamplingParams(max_tokens=32))]
    return ctx, chunks


def ids_of(chunks):
    return [t for c in chunks for t in c.token_ids]


def assert_all_free(engine):
    engine.check_integrity()
    engine.evict_cache()
    stats = engine.stats()
    assert stats.num_free_blocks == stats.num_blocks and stats.num_used_blocks == 0


def hf_greedy(hf, tokenizer, prompt, n=32):
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.inference_mode():
        out = hf.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)
    return out[0, ids.shape[1]:].tolist()


async def test_greedy_equals_transformers_in_one_batch(smollm, hf_smollm):
    engine = await start_engine(smollm)
    tok = engine.tokenizer
    sp = SamplingParams(max_tokens=32, min_tokens=32, ignore_eos=True)  # as min_new_tokens
    results = await asyncio.gather(*[generate(engine, tok.encode(p), sp) for p in PROMPTS])
    assert engine.stats().num_steps < 40  # they ran batched, not one after another
    for prompt, (ctx, chunks) in zip(PROMPTS, results):
        assert ids_of(chunks) == hf_greedy(hf_smollm, tok, prompt)
        assert chunks[-1].finish_reason == "length"
        assert "".join(c.text for c in chunks) == tok.decode(ids_of(chunks), skip_special_tokens=True)
        engine.free(ctx)
    assert_all_free(engine)
    await engine.stop()


async def test_fork_continues_like_a_fresh_context_and_prefills_once(smollm):
    engine = await start_engine(smollm, enable_prefix_caching=False)
    tok = engine.tokenizer
    prefix = tok.encode("Here is a long shared document about parrots. " * 12)
    suffixes = [tok.encode(f" Question {i}: what do parrots eat?") for i in range(4)]
    parent = engine.new_context()
    await engine.fill(parent, prefix)
    before = engine.stats().num_prefill_tokens
    assert before == len(prefix)
    forks = [engine.fork(parent) for _ in suffixes]
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    forked = await asyncio.gather(*[generate(engine, s, sp, ctx=f) for f, s in zip(forks, suffixes)])
    prefilled = engine.stats().num_prefill_tokens - before
    assert prefilled == sum(len(s) for s in suffixes)  # the prefix was never recomputed
    for (ctx, chunks), s in zip(forked, suffixes):
        fresh_ctx, fresh = await generate(engine, prefix + s, sp)
        assert ids_of(chunks) == ids_of(fresh)
        engine.free(ctx)
        engine.free(fresh_ctx)
    engine.free(parent)
    assert_all_free(engine)
    await engine.stop()


async def test_cascade_on_and_off_give_the_same_greedy_tokens(smollm):
    """8 forks of a ~400-token prefix decode together: with cascade attention (the prefix
    read once per step and layer) exactly the tokens of plain paged attention."""
    prefix = smollm.tokenizer.encode("A shared design document about parrots and their diet. " * 40)
    questions = [smollm.tokenizer.encode(f" Question {i}: what do parrots eat?") for i in range(8)]
    sp = SamplingParams(max_tokens=12, ignore_eos=True)
    outputs = {}
    for cascade in (True, False):
        engine = await start_engine(smollm, enable_cascade=cascade)
        parent = engine.new_context()
        await engine.fill(parent, prefix)
        forks = [engine.fork(parent) for _ in questions]
        results = await asyncio.gather(*[generate(engine, q, sp, ctx=f) for f, q in zip(forks, questions)])
        outputs[cascade] = [ids_of(chunks) for _, chunks in results]
        stats = engine.stats()
        assert (stats.num_cascade_steps >= 12) == cascade, stats.num_cascade_steps
        for ctx, _ in results:
            engine.free(ctx)
        engine.free(parent)
        assert_all_free(engine)
        await engine.stop()
    assert outputs[True] == outputs[False]


async def test_stop_right_after_the_last_free_returns(smollm):
    """Freeing the last context wakes the loop into its short wait for blocks; a stop that
    lands then must still end the loop (asyncio.wait_for on 3.11 swallowed that cancel and
    `stop()` hung every time in this sequence)."""
    for _ in range(5):
        engine = await start_engine(smollm)
        parent = engine.new_context()
        await engine.fill(parent, list(range(100, 400)))
        forks = [engine.fork(parent) for _ in range(4)]

        async def one(ctx):
            async for _ in engine.generate(ctx, SamplingParams(max_tokens=4, ignore_eos=True)):
                pass
            engine.free(ctx)

        for ctx in forks:
            engine.append(ctx, [500])
        await asyncio.gather(*(one(f) for f in forks))
        engine.free(parent)
        assert_all_free(engine)
        await asyncio.wait_for(asyncio.shield(engine.stop()), 10)


async def test_prefix_cache_shares_prompts_without_forks(smollm):
    engine = await start_engine(smollm)
    tok = engine.tokenizer
    system = tok.encode("You are a helpful assistant who answers in one line. " * 8)
    ctx1, first = await generate(engine, system + tok.encode(" Hi!"), SamplingParams(max_tokens=4))
    ctx2, second = await generate(engine, system + tok.encode(" Hello!"), SamplingParams(max_tokens=4))
    usage = second[-1].usage
    assert usage.cached_tokens >= len(system) - engine.config.block_size
    assert engine.stats().num_cached_tokens == usage.cached_tokens
    engine.free(ctx1)
    engine.free(ctx2)
    assert_all_free(engine)
    await engine.stop()


async def test_a_fill_found_whole_in_the_prefix_cache_waits_for_no_step(smollm):
    engine = await start_engine(smollm)
    bs = engine.config.block_size
    tokens = list(range(1000, 1000 + 3 * bs))
    first = engine.new_context()
    assert await engine.fill(first, tokens) == 0
    # another request decoding: the engine has a step in flight whenever this test runs
    other = engine.new_context()
    engine.append(other, [7, 8, 9])
    busy = engine.generate(other, SamplingParams(max_tokens=8, ignore_eos=True))
    await busy.__anext__()
    steps = engine.stats().num_steps
    second = engine.new_context()
    assert await engine.fill(second, tokens) == 3 * bs  # every block cached: adopted at once
    assert engine.stats().num_steps == steps and second.block_table == first.block_table
    computed = engine.stats().num_prefill_tokens
    third = engine.new_context()
    assert await engine.fill(third, tokens + [5]) == 3 * bs  # one token to compute: a step
    assert engine.stats().num_prefill_tokens == computed + 1
    assert engine.stats().num_cached_tokens == 6 * bs
    async for _ in busy:  # to its end: nothing in flight when the blocks are counted
        pass
    for ctx in (first, second, third, other):
        engine.free(ctx)
    assert_all_free(engine)
    await engine.stop()


async def test_small_pool_preempts_and_outputs_are_unchanged(smollm):
    tok = smollm.tokenizer
    sp = SamplingParams(max_tokens=40, ignore_eos=True)
    prompts = [tok.encode(p * 3) for p in PROMPTS]

    async def one(engine, prompt):
        ctx, chunks = await generate(engine, prompt, sp)
        engine.free(ctx)
        return ids_of(chunks)

    async def run(engine):
        results = await asyncio.gather(*[one(engine, p) for p in prompts])
        engine.check_integrity()
        return results

    roomy = await start_engine(smollm)
    expected = await run(roomy)
    await roomy.stop()
    # 16 blocks of 8 tokens: each sequence needs up to 11, five of them cannot all fit at once
    tight = await start_engine(smollm, block_size=8, kv_memory_gb=16 * 8 * 30 * 2 * 3 * 64 * 4 / 2**30)
    assert tight.stats().num_blocks == 16
    assert await run(tight) == expected
    assert tight.stats().num_preemptions > 0
    assert_all_free(tight)
    await tight.stop()


async def test_a_prompt_that_can_never_fit_is_rejected(smollm):
    engine = await start_engine(smollm, kv_memory_gb=0.001)
    ctx = engine.new_context()
    ctx.token_ids.extend(range(100, 400))
    with pytest.raises(EngineInputError):
        async for _ in engine.generate(ctx, SamplingParams(max_tokens=8)):
            pass
    with pytest.raises(EngineInputError):
        await engine.fill(engine.new_context(), list(range(100_000)))
    await engine.stop()


async def test_event_loop_stays_responsive_during_long_prefill(smollm):
    engine = await start_engine(smollm, max_num_batched_tokens=2048)
    ticks = []

    async def ticker():
        while True:
            ticks.append(time.perf_counter())
            await asyncio.sleep(0.01)

    task = asyncio.create_task(ticker())
    start = time.perf_counter()
    await engine.fill(engine.new_context(), list(range(1000, 3000)))
    elapsed = time.perf_counter() - start
    task.cancel()
    gaps = [b - a for a, b in zip(ticks, ticks[1:])]
    assert elapsed > 0.2 and len(ticks) > 5
    assert max(gaps) < elapsed / 2  # the loop kept ticking through the forward pass
    await engine.stop()


async def test_seed_stop_strings_and_cancellation(smollm):
    engine = await start_engine(smollm)
    tok = engine.tokenizer
    prompt = tok.encode("Write a short poem about the sea:")
    sp = SamplingParams(max_tokens=24, temperature=0.9, top_p=0.9, top_k=50, seed=7)
    (c1, a), (c2, b) = [await generate(engine, prompt, sp) for _ in range(2)]
    assert ids_of(a) == ids_of(b)
    text = "".join(c.text for c in a)
    stop = text[len(text) // 2: len(text) // 2 + 3]
    if stop.strip():
        c3, cut = await generate(engine, prompt, SamplingParams(**{**sp.__dict__, "stop": [stop]}))
        engine.free(c3)
        cut_text = "".join(c.text for c in cut)
        assert cut[-1].finish_reason == "stop" and stop not in cut_text and text.startswith(cut_text)
    ctx = engine.new_context()
    ctx.token_ids.extend(prompt)
    gen = engine.generate(ctx, SamplingParams(max_tokens=200, ignore_eos=True))
    await gen.__anext__()
    await gen.aclose()  # the consumer walked away: the request is aborted
    assert engine.stats().num_running == 0
    for c in (c1, c2, ctx):
        engine.free(c)
    await asyncio.sleep(0.2)
    assert_all_free(engine)
    await engine.stop()


async def test_bfloat16_answers_like_transformers_bfloat16():
    """The default dtype: a chat question gets transformers' bf16 answer (greedy)."""
    from parrot.engine import Engine, EngineConfig

    engine = await Engine(EngineConfig(dtype="bfloat16", kv_memory_gb=0.05)).start()
    tok = engine.tokenizer
    text = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                   add_generation_prompt=True, tokenize=False)
    ctx, chunks = await generate(engine, tok.encode(text), SamplingParams(max_tokens=12))
    assert "".join(c.text for c in chunks) == "The capital of France is Paris."
    engine.free(ctx)
    await engine.stop()
