"""A simulated engine for placement studies: the engine contract over a step-cost model.

`SimEngine` keeps the engine contract (`parrot/engine/client.py`) with no model behind it.
Contexts hold token ids; requests run in steps, with continuous batching: each step runs
every decoding sequence (one token each) plus prefill chunks up to the step's token budget
(`max_num_batched_tokens`, 512: the budget its step-time model was measured with), prefills in (priority, arrival) order;
the step that finishes a prompt samples its first token. A step lasts what `StepCost`
gives its features (`parrot/engine/step_cost.py`: fixed + per prefill token + per decode
sequence + per KV token the decodes read), slept on the event loop: under
`virtual_loop.py` a virtual clock, so a run is instant and deterministic.

Prefix cache: every full 16-token block computed on THIS engine (prompt or generated) is
kept, keyed by its whole prefix, least recently used first out beyond `kv_tokens`; a request's
leading cached blocks are not recomputed, and a fork shares what its parent computed. So
placement decides what is computed: the same prompt prefix on two engines is prefilled twice.

Generated tokens are a pure function of the prompt (a generator seeded by its hash, drawing
from single-token words), so every placement generates the same text. Not modelled: task
groups (`group` is accepted and ignored), the engine's latency token budget, cascade
attention (every decode pays for its whole KV), constraints (accepted, not enforced).
"""
from __future__ import annotations

import asyncio
import itertools
import random
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from parrot.bench.sim_request import SimContext, SimRequest
from parrot.engine.config import EngineConfig
from parrot.engine.sampling_params import GenerationChunk, Priority, SamplingParams, Usage
from parrot.engine.stats import EngineStats
from parrot.engine.status import ContextStatus, EngineStatus
from parrot.engine.step_cost import StepFeatures

BLOCK = 16
WORDS = ("the file function value test data class error call list path task name date tag "
         "user code line text type read write open close check start stop result order").split()


@dataclass(frozen=True)
class StepCost:
    """Seconds per step. Defaults: least squares over BENCHMARKS.md's "Engine with Parrot's
    CPU kernels" numbers (SmolLM2-135M bf16, 2-vCPU Zen 3): decode steps of batch 1 / 8 / 32
    at ~156 KV tokens each 15.5 / 26.7 / 73.1 ms, 32 x 2,064 KV tokens 148.5 ms (plain
    attention), prefill 615 tokens/s in 512-token chunks; the fit is within 1.2 ms of each."""

    fixed_s: float = 0.0128
    prefill_token_s: float = 0.00160
    decode_seq_s: float = 0.00168
    kv_token_s: float = 1.24e-6

    def seconds(self, f: StepFeatures) -> float:
        return (self.fixed_s + self.prefill_token_s * f.num_prefill_tokens
                + self.decode_seq_s * f.num_decode_seqs + self.kv_token_s * f.num_cached_tokens)


@dataclass
class SimStats(EngineStats):
    """The engine's counters (prefill tokens computed: the measure of placement; cached
    tokens: served from a fork or the prefix cache), plus the simulated time it was busy."""

    busy_s: float = 0.0


@dataclass
class _Step:
    decodes: list[SimRequest]
    chunks: list[tuple[SimRequest, int]]
    features: StepFeatures


class SimEngine:
    def __init__(self, tokenizer: Any, name: str = "sim engine", cost: StepCost | None = None,
                 max_num_batched_tokens: int = 512, max_num_seqs: int = 64,
                 kv_tokens: int = 46_000, max_model_len: int = 8192) -> None:
        self.tokenizer = tokenizer
        self.name, self.model_name, self.max_model_len = name, "simulated", max_model_len
        self.vocab_size = len(tokenizer)
        self.is_alive, self.error = True, None
        self.cost = cost or StepCost()
        self.max_num_batched_tokens, self.max_num_seqs = max_num_batched_tokens, max_num_seqs
        # The contract's config. It has a prefix cache, but no prompt waits for blocks a
        # running prefill computes, so it says none: the manager then forks filled prefixes
        # (executor.py) instead of relying on that wait.
        self.config = EngineConfig(block_size=BLOCK, max_num_batched_tokens=max_num_batched_tokens,
                                   max_num_seqs=max_num_seqs, enable_prefix_caching=False)
        self.counters = SimStats(num_blocks=kv_tokens // BLOCK, block_size=BLOCK)
        self.step_observers: list = []
        self.live: dict[int, SimContext] = {}
        self.cache: OrderedDict[int, None] = OrderedDict()  # block key -> (LRU order)
        self.requests: list[SimRequest] = []
        self._ids, self._seq = itertools.count(1), itertools.count()
        self._task: asyncio.Task | None = None
        self._words = _word_tokens(tokenizer)

    # -- contexts ------------------------------------------------------------------------
    def new_context(self) -> int:
        ctx = SimContext(next(self._ids))
        self.live[ctx.id] = ctx
        return ctx.id

    def fork(self, parent: int) -> int:
        p = self.live[parent]
        ctx = SimContext(next(self._ids), list(p.tokens), p.computed, list(p.keys), p.num_inserted)
        self.live[ctx.id] = ctx
        return ctx.id

    def append(self, ctx: int, token_ids: list[int]) -> None:
        self._check_len(self.live[ctx], len(token_ids))
        self.live[ctx].tokens += token_ids

    def pin(self, ctx: int) -> None:
        self.live[ctx].is_pinned = True

    def free(self, ctx: int) -> None:
        assert ctx in self.live, "free of an unknown or freed context"
        del self.live[ctx]  # its blocks stay in the prefix cache

    async def fill(self, ctx: int, token_ids: list[int],
                   priority: Priority = Priority.NORMAL) -> int:
        self.append(ctx, token_ids)
        req = SimRequest(self.live[ctx], None, int(priority), next(self._seq),
                         done=asyncio.get_running_loop().create_future())
        self._submit(req)
        try:
            return await req.done
        finally:
            self._drop(req)

    async def generate(self, ctx: int, sampling: SamplingParams,
                       priority: Priority = Priority.NORMAL, group: str | None = None):
        context = self.live[ctx]
        self._check_len(context, sampling.max_tokens)
        seed = hash(tuple(context.tokens))
        req = SimRequest(context, sampling.max_tokens, int(priority), next(self._seq),
                         queue=asyncio.Queue(), rng=random.Random(seed))
        self._submit(req)
        try:
            while True:
                chunk = await req.queue.get()
                yield chunk
                if chunk.finish_reason is not None:
                    return
        finally:
            self._drop(req)

    # -- the step loop -------------------------------------------------------------------
    def _submit(self, req: SimRequest) -> None:
        req.ctx.is_busy = True
        self.requests.append(req)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def _drop(self, req: SimRequest) -> None:
        if req in self.requests:  # cancelled or closed early
            self.requests.remove(req)
        req.ctx.is_busy = False

    async def _run(self) -> None:
        try:
            while self.requests:
                step = self._schedule()
                seconds = self.cost.seconds(step.features)
                await asyncio.sleep(seconds)
                self.counters.num_steps += 1
                self.counters.busy_s += seconds
                self._apply(step)
        finally:
            self._task = None

    def _schedule(self) -> _Step:
        decodes = [r for r in self.requests if r.is_decoding][:self.max_num_seqs]
        budget = self.max_num_batched_tokens - len(decodes)
        slots = self.max_num_seqs - len(decodes)
        chunks = []
        for r in sorted((r for r in self.requests if not r.is_decoding),
                        key=lambda r: (r.priority, r.seq)):
            if budget <= 0 or slots <= 0:
                break
            if not r.looked_up:
                self._look_up(r)
            n = min(budget, len(r.ctx.tokens) - r.ctx.computed)
            chunks.append((r, n))
            budget, slots = budget - n, slots - 1
        kv = sum(len(r.ctx.tokens) for r in decodes)
        return _Step(decodes, chunks, StepFeatures(sum(n for _, n in chunks), len(decodes), kv))

    def _look_up(self, req: SimRequest) -> None:
        """Skip the request's leading blocks this engine has computed (a generation computes
        at least its last prompt token: its logits pick the first token)."""
        ctx = req.ctx
        ctx.extend_keys(BLOCK)
        hits = 0
        for key in ctx.keys:
            if key not in self.cache:
                break
            self.cache.move_to_end(key)
            hits += 1
        limit = len(ctx.tokens) - (0 if req.max_tokens is None else 1)
        ctx.computed = min(max(ctx.computed, hits * BLOCK), limit)
        req.looked_up, req.prompt_len, req.cached = True, len(ctx.tokens), ctx.computed
        self.counters.num_cached_tokens += ctx.computed

    def _apply(self, step: _Step) -> None:
        for r, n in step.chunks:
            if r not in self.requests:
                continue
            r.ctx.computed += n
            self.counters.num_prefill_tokens += n
            self._cache_blocks(r.ctx)
            if r.ctx.computed == len(r.ctx.tokens):
                if r.max_tokens is None:
                    self.requests.remove(r)
                    r.done.set_result(r.cached)
                else:
                    r.is_decoding = True
                    self._emit(r)
        for r in step.decodes:
            if r in self.requests:
                self._emit(r)
        self.counters.num_running = sum(r.is_decoding for r in self.requests)
        self.counters.num_waiting = len(self.requests) - self.counters.num_running

    def _emit(self, r: SimRequest) -> None:
        token = r.rng.choice(self._words)
        r.ctx.tokens.append(token[0])
        r.ctx.computed += 1
        r.num_generated += 1
        self.counters.num_decode_tokens += 1
        self._cache_blocks(r.ctx)
        last = r.num_generated == r.max_tokens
        if last:
            self.requests.remove(r)
        usage = Usage(r.prompt_len, r.cached, r.num_generated) if last else None
        r.queue.put_nowait(GenerationChunk([token[0]], token[1], "length" if last else None,
                                           usage))

    def _cache_blocks(self, ctx: SimContext) -> None:
        ctx.extend_keys(BLOCK)
        full = ctx.computed // BLOCK
        for key in ctx.keys[ctx.num_inserted:full]:
            self.cache[key] = None
            self.cache.move_to_end(key)
        ctx.num_inserted = max(ctx.num_inserted, full)
        while len(self.cache) > self.counters.num_blocks:
            self.cache.popitem(last=False)

    # -- checks and views ----------------------------------------------------------------
    def compile(self, sampling: SamplingParams) -> object:
        return sampling.constraint

    def stats(self) -> SimStats:
        return self.counters

    def status(self) -> EngineStatus:
        return EngineStatus(BLOCK, {c.id: ContextStatus(len(c.tokens), c.computed,
                                                        -(-len(c.tokens) // BLOCK), c.is_busy)
                                    for c in self.live.values()},
                            self.counters.num_running, self.counters.num_waiting)

    def check_integrity(self) -> None:
        for ctx in self.live.values():
            assert 0 <= ctx.computed <= len(ctx.tokens), f"context {ctx.id}: computed past its end"
        assert all(r.ctx.is_busy for r in self.requests), "a queued request on an idle context"

    async def inject_failure(self, marker: str, message: str) -> int:
        return 0

    def _check_len(self, ctx: SimContext, extra: int) -> None:
        if len(ctx.tokens) + extra > self.max_model_len:
            raise ValueError(f"context of {len(ctx.tokens) + extra} tokens exceeds "
                             f"max_model_len {self.max_model_len}")


def _word_tokens(tokenizer: Any) -> list[tuple[int, str]]:
    """(id, text) of the words in WORDS that are one token (with their leading space); else
    (a character tokenizer) the first token of each word."""
    encoded = [tokenizer.encode(" " + word, add_special_tokens=False) for word in WORDS]
    single = [ids for ids in encoded if len(ids) == 1]
    firsts = single or [tokenizer.encode(word, add_special_tokens=False)[:1] for word in WORDS]
    return sorted({(ids[0], tokenizer.decode(ids)) for ids in firsts})
