"""Failure injection through the engine's step loop, on a runner that runs no model: a
marked request fails alone after its next step and every KV block comes back."""
from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest

from parrot.engine import Engine, EngineConfig
from parrot.engine.failure_injector import FailureInjector
from parrot.engine.loader import LoadedModel
from parrot.engine.sampler import Sampled
from parrot.engine.scheduler import StepPlan

NUM_BLOCKS = 32
LOADED = LoadedModel(model=None, config=SimpleNamespace(eos_token_ids=(), vocab_size=1000),
                     tokenizer=None, name="no-model", max_model_len=512, model_dir=None)


class NoModelRunner:
    """Stands in for ModelRunner: records each step's {context id: tokens}, samples token 1."""

    def __init__(self) -> None:
        self.num_blocks = NUM_BLOCKS
        self.is_cascade_step = False
        self.steps: list[dict[int, int]] = []

    def build_input(self, plan: StepPlan, rows: list) -> int:
        self.steps.append({s.request.ctx.context_id: s.num_new for s in plan.seqs})
        return len(rows)

    def execute(self, num_sampled: int) -> Sampled:
        return Sampled([1] * num_sampled, [None] * num_sampled)


@pytest.fixture
async def engine():
    config = EngineConfig(dtype="float32", block_size=4, max_num_batched_tokens=64)
    engine = await Engine(config, loaded=LOADED, runner=NoModelRunner()).start()
    broken: list[AssertionError] = []  # an observer that raised would stop the step loop

    def check_integrity(plan: StepPlan) -> None:
        try:
            engine.check_integrity()
        except AssertionError as e:
            broken.append(e)

    engine.step_observers.append(check_integrity)
    yield engine
    await engine.stop()
    assert not broken, broken


async def test_a_marked_request_fails_alone_after_its_next_step(engine):
    injector = FailureInjector(engine)
    injector.attach()
    a, b = engine.new_context(), engine.new_context()
    fill_a = asyncio.ensure_future(engine.fill(a, list(range(40))))
    fill_b = asyncio.ensure_future(engine.fill(b, list(range(100, 200))))
    await asyncio.sleep(0)  # both requests are queued; the loop has not scheduled yet
    assert engine.runner.steps == []
    assert injector.mark(b, RuntimeError("boom")) == 1
    assert await fill_a == 0
    with pytest.raises(RuntimeError, match="boom"):
        await fill_b
    # One step computed a's 40 tokens and the first 24 of b's (the 64-token budget); b
    # failed right after it and never ran again.
    assert engine.runner.steps == [{a.context_id: 40, b.context_id: 24}]
    assert (a.num_computed, b.num_computed) == (40, 24)
    assert engine.stats().num_requests_failed == 1 and engine.stats().num_requests_finished == 1
    engine.free(a)
    engine.free(b)
    engine.evict_cache()
    assert engine.stats().num_free_blocks == NUM_BLOCKS
    engine.check_integrity()


async def test_marks_apply_to_existing_requests_and_go_when_detached(engine):
    injector = FailureInjector(engine)
    injector.attach()
    ctx = engine.new_context()
    assert injector.mark(ctx, RuntimeError("too early")) == 0  # no request on ctx yet
    assert await engine.fill(ctx, list(range(10))) == 0
    fill = asyncio.ensure_future(engine.fill(ctx, list(range(10, 20))))
    await asyncio.sleep(0)
    assert injector.mark(ctx, RuntimeError("never raised")) == 1
    injector.detach()
    assert await fill == 0  # detached before the step: the mark is gone
    assert ctx.num_computed == 20 and injector.after_step not in engine.step_observers
    engine.free(ctx)
