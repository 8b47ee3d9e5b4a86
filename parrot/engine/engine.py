"""The engine: contexts over a paged KV pool, a continuous-batching step loop.

All state is touched on the asyncio event loop thread; only the forward pass
(`ModelRunner.execute`) runs in the engine's worker thread, so the loop keeps
serving other coroutines during a long prefill.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor

import torch

from parrot.engine.block_manager import BlockManager
from parrot.engine.config import EngineConfig
from parrot.engine.context import Context, ContextTree
from parrot.engine.detokenizer import IncrementalDetokenizer
from parrot.engine.grammar import ConstraintError, GrammarCompiler
from parrot.engine.loader import LoadedModel, load
from parrot.engine.model_runner import ModelRunner
from parrot.engine.request import Request, Status
from parrot.engine.sampler import Penalties, Sampled, SamplingRow
from parrot.engine.sampling_params import (GenerationChunk, Priority, SamplingParams,
                                           TokenLogprobs, Usage)
from parrot.engine.scheduler import Scheduler, StepPlan
from parrot.engine.stats import EngineStats, StepTimes

log = logging.getLogger(__name__)


class EngineInputError(ValueError):
    """A request the engine can never serve (too long for the model or the pool)."""


def compile_constraint(grammars: GrammarCompiler, sampling: SamplingParams):
    """A matcher for `sampling`'s constraint from `grammars` (None without one);
    EngineInputError naming what is wrong with an invalid one."""
    if sampling.constraint is None:
        return None
    try:
        return grammars.matcher(sampling.constraint)
    except ConstraintError as e:
        raise EngineInputError(str(e)) from None


class Engine:
    def __init__(self, config: EngineConfig, loaded: LoadedModel | None = None,
                 runner: ModelRunner | None = None):
        self.config = config
        self._loaded = loaded  # a model already in memory (tests share one between engines)
        self._runner = runner  # a runner already built (tests pass one that runs no model)
        # Called with each step's plan once its results are applied (fault injection hooks
        # in); one that raises stops the step loop, so none may.
        self.step_observers: list[Callable[[StepPlan], None]] = []
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="parrot-engine")
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._in_flight: set[int] = set()  # context ids in the running step
        self._stats = EngineStats()
        self._step_times = StepTimes()

    # ---- lifecycle -------------------------------------------------------------------
    async def start(self) -> "Engine":
        # Every tensor op runs on the one worker thread, even allocating the KV pool: once a
        # second thread has run an OpenMP region, the two thread teams contend for the cores
        # and a CPU decode step gets ~1.7x slower.
        loop = asyncio.get_running_loop()
        loaded = self._loaded or await loop.run_in_executor(self._executor, load, self.config)
        runner = self._runner or await loop.run_in_executor(
            self._executor, ModelRunner, loaded.model, loaded.config, self.config)
        self._init_from(loaded, runner)
        self._loaded = self._runner = None
        self._loop_task = asyncio.create_task(self._run(), name="parrot-engine-loop")
        return self

    def _init_from(self, loaded: LoadedModel, runner: ModelRunner) -> None:
        self.tokenizer, self.model_config, self.model_name = loaded.tokenizer, loaded.config, loaded.name
        self.max_model_len = loaded.max_model_len
        self.runner = runner
        self.blocks = BlockManager(self.runner.num_blocks, self.config.block_size,
                                   self.config.enable_prefix_caching)
        self.tree = ContextTree(self.blocks)
        self.scheduler = Scheduler(self.config, self.tree)
        self.eos_token_ids = set(loaded.config.eos_token_ids)
        if self.tokenizer is not None and self.tokenizer.eos_token_id is not None:
            self.eos_token_ids.add(self.tokenizer.eos_token_id)
        self.grammars = GrammarCompiler(self.tokenizer, loaded.config.vocab_size)

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            try:
                await self._loop_task
            except asyncio.CancelledError:
                pass
            self._loop_task = None
        for req in self.scheduler.waiting + self.scheduler.running:
            self._finish(req, error=RuntimeError("engine stopped"))
        self._executor.shutdown(wait=True)

    # ---- contexts --------------------------------------------------------------------
    def new_context(self) -> Context:
        return self.tree.new()

    def fork(self, parent: Context) -> Context:
        return self.tree.fork(parent)

    def pin(self, ctx: Context) -> None:
        """Keep `ctx`'s KV resident while it lives: admission never releases it to make room
        (for a prompt many contexts will fork; the caller bounds how much it pins)."""
        ctx.is_pinned = True

    def free(self, ctx: Context) -> None:
        """Release a context; a request still running on it is aborted first."""
        if ctx.is_freed:
            return
        for req in self.scheduler.requests_on(ctx):
            self._abort(req)
        if ctx.context_id in self._in_flight:
            ctx.free_pending = True  # freed once the running step ends
        else:
            self.tree.free(ctx)
        self._wakeup.set()  # blocks came back: waiting work may fit now

    def append(self, ctx: Context, token_ids: list[int]) -> None:
        """Append tokens without computing them: the next `fill` or `generate` on `ctx`
        computes them in the same request (a prompt then costs no extra step)."""
        self._check_room(ctx, len(token_ids), 0)
        self._check_token_ids(token_ids, "token id")
        ctx.token_ids.extend(token_ids)

    async def fill(self, ctx: Context, token_ids: list[int], priority: Priority = Priority.NORMAL) -> int:
        """Append `token_ids` and compute their KV. Returns how many of the context's
        pending tokens were found in the prefix cache instead of computed."""
        self._check_room(ctx, len(token_ids), 0)
        self._check_token_ids(token_ids, "token id")
        ctx.token_ids.extend(token_ids)
        if ctx.num_pending == 0:
            return 0
        req = Request(ctx, None, priority)
        if self.scheduler.admit_from_cache(req):  # no step to wait for
            self._finish(req)
            return req.num_cached_tokens - req.num_computed_at_arrival
        self._submit(req)
        try:
            item = await req.outputs.get()
            if isinstance(item, Exception):
                raise item
            return req.num_cached_tokens - req.num_computed_at_arrival
        finally:
            if not req.is_done:
                self._abort(req)

    async def generate(self, ctx: Context, sampling: SamplingParams,
                       priority: Priority = Priority.NORMAL,
                       group: str | None = None) -> AsyncIterator[GenerationChunk]:
        """Stream generated text; the generated tokens are appended to `ctx`. The requests of
        one task `group` are admitted together (see scheduler.py)."""
        if ctx.num_tokens == 0:
            raise EngineInputError("cannot generate from an empty context: give a prompt")
        self._check_room(ctx, 0, sampling.max_tokens)
        self._check_token_ids(sampling.stop_token_ids, "stop_token_ids")
        matcher = self.compile(sampling)
        if ctx.num_pending == 0:
            self.tree.uncompute_last(ctx)  # recompute the last token for its logits
        req = Request(ctx, sampling, priority, group, matcher=matcher)
        req.detokenizer = IncrementalDetokenizer(self.tokenizer, sampling.stop, ctx.token_ids[-4:])
        self._submit(req)
        try:
            while True:
                item = await req.outputs.get()
                if isinstance(item, Exception):
                    raise item
                yield item
                if item.finish_reason is not None:
                    return
        finally:
            if not req.is_done:
                self._abort(req)

    def compile(self, sampling: SamplingParams):
        """A matcher for `sampling`'s constraint (None without one); EngineInputError naming
        what is wrong with an invalid one. Compiled once per constraint, then cached."""
        return compile_constraint(self.grammars, sampling)

    def _check_room(self, ctx: Context, num_new: int, max_tokens: int) -> None:
        if ctx.is_freed:
            raise EngineInputError("context was freed")
        total = ctx.num_tokens + num_new + max_tokens
        if total > self.max_model_len:
            raise EngineInputError(
                f"{ctx.num_tokens + num_new} prompt tokens + {max_tokens} max_tokens exceeds "
                f"the model's context length of {self.max_model_len} tokens")
        if -(-total // self.config.block_size) > self.blocks.num_blocks:
            raise EngineInputError(f"{total} tokens can never fit the KV pool "
                                   f"({self.blocks.num_blocks * self.config.block_size} tokens)")
        if self.scheduler.requests_on(ctx):
            raise RuntimeError("a request is already running on this context")

    def _check_token_ids(self, token_ids: list[int], what: str) -> None:
        """Ids outside the vocabulary would fail the whole batch's step: refuse them here."""
        vocab = self.model_config.vocab_size
        bad = next((t for t in token_ids if not 0 <= t < vocab), None)
        if bad is not None:
            raise EngineInputError(f"{what} {bad} is outside the vocabulary (size {vocab})")

    def _submit(self, req: Request) -> Request:
        self.scheduler.add(req)
        self._wakeup.set()
        return req

    def fail(self, req: Request, error: Exception) -> None:
        """End `req` with `error`, which its waiter raises; no other request is touched."""
        self._finish(req, error=error)

    def _abort(self, req: Request) -> None:
        if not req.is_done:
            req.status = Status.ABORTED
            self.scheduler.remove(req)

    # ---- the step loop ---------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            if not self.scheduler.has_work:
                await self._wait_for_wakeup()
            plan = self.scheduler.schedule()
            for req in plan.done:
                self._finish(req)
            if plan.seqs:
                await self._step(plan)
            else:  # waiting for blocks that contexts hold: wait for a change
                await self._wait_for_wakeup(timeout=0.05)

    async def _wait_for_wakeup(self, timeout: float | None = None) -> None:
        self._wakeup.clear()
        # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancel that lands as
        # the wait ends, and `stop()` then waits forever for this loop.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._wakeup.wait()

    async def _step(self, plan: StepPlan) -> None:
        sampled = await self._execute(plan)
        if sampled is not None:  # None: the forward pass failed, and so did the step's requests
            self._postprocess(plan, sampled)
        for observe in self.step_observers:
            observe(plan)
        self._free_pending(plan)

    async def _execute(self, plan: StepPlan) -> Sampled | None:
        """Run the step's forward pass in the worker thread; one token per sampled sequence."""
        rows = self._sampling_rows([s.request for s in plan.seqs if s.sample])
        inp = self.runner.build_input(plan, rows)
        self._in_flight = {s.request.ctx.context_id for s in plan.seqs}
        features = self.scheduler.step_features(plan)
        start = time.perf_counter()
        try:
            sampled = await asyncio.get_running_loop().run_in_executor(
                self._executor, self.runner.execute, inp)
            self.scheduler.cost.observe(features, time.perf_counter() - start)
            return sampled
        except Exception as e:  # a failing step fails its requests, never the loop
            log.exception("engine step failed")
            for s in plan.seqs:
                self._finish(s.request, error=e)
            return None
        finally:
            self._in_flight = set()
            self._step_times.add(time.perf_counter() - start)

    def _sampling_rows(self, requests: list[Request]) -> list[SamplingRow]:
        rows = [self._sampling_row(req) for req in requests]
        constrained = [i for i, req in enumerate(requests) if req.matcher is not None]
        if constrained:  # every constrained row's mask in one call, on llguidance's threads
            masks = self.grammars.fill_masks([requests[i].matcher for i in constrained])
            for row_mask, i in zip(masks, constrained):
                rows[i].allowed = row_mask
        return rows

    def _sampling_row(self, req: Request) -> SamplingRow:
        sp = req.sampling
        banned = []
        if req.num_generated < sp.min_tokens and req.matcher is None:  # a grammar ends it
            banned = list(self.eos_token_ids | set(sp.stop_token_ids))
        penalties = Penalties.of(sp, req.ctx.token_ids, req.num_prompt_tokens)
        return SamplingRow(sp.temperature, sp.top_k, sp.top_p, req.generator, banned, penalties,
                           logprobs=sp.logprobs)

    def _postprocess(self, plan: StepPlan, sampled: Sampled) -> None:
        """Apply a step's results: commit the computed tokens, hand out the sampled ones."""
        self._stats.count_step(plan, self.runner.is_cascade_step)
        it = iter(zip(sampled.tokens, sampled.logprobs))
        for s in plan.seqs:
            req = s.request
            self.tree.commit(req.ctx, s.num_new)
            token, logprobs = next(it) if s.sample else (None, None)
            if req.is_done:
                continue
            if req.is_fill:
                if req.ctx.num_pending == 0:
                    self._finish(req)
            elif token is not None:
                self._on_token(req, token, logprobs)

    def _on_token(self, req: Request, token: int, logprobs: TokenLogprobs | None) -> None:
        sp, detok = req.sampling, req.detokenizer
        req.ctx.token_ids.append(token)
        req.num_generated += 1
        self._stats.num_generated_tokens += 1
        finish = None
        if token in sp.stop_token_ids or (token in self.eos_token_ids and not sp.ignore_eos):
            text = detok.flush()
            finish = "stop"
        elif req.matcher is not None and not req.matcher.consume_token(token):
            self._finish(req, error=RuntimeError(  # the mask allowed it: a grammar-engine bug
                f"constrained decoding rejected token {token}: {req.matcher.get_error()}"))
            return
        else:
            text = detok.add(token)
            if detok.stopped:
                finish = "stop"
            elif req.matcher is not None and req.matcher.is_stopped():  # the grammar is done
                text += detok.flush()
                finish = "stop"
            elif req.num_generated >= sp.max_tokens or req.ctx.num_tokens >= self.max_model_len:
                text += detok.flush()
                finish = "length"
        usage = None
        if finish is not None:
            usage = Usage(req.num_prompt_tokens, req.num_cached_tokens, req.num_generated)
        req.outputs.put_nowait(GenerationChunk([token], text, finish, usage,
                                               None if logprobs is None else [logprobs]))
        if finish is not None:
            self._finish(req)

    def _finish(self, req: Request, error: Exception | None = None) -> None:
        """Take `req` out of scheduling; tell its waiter (a generate got its last chunk already)."""
        self.scheduler.remove(req)
        if req.is_done:
            return
        req.status = Status.FINISHED
        if error is not None:
            self._stats.num_requests_failed += 1
            req.outputs.put_nowait(error)
            return
        self._stats.num_requests_finished += 1
        if req.is_fill:
            req.outputs.put_nowait(None)

    def _free_pending(self, plan: StepPlan) -> None:
        for s in plan.seqs:
            ctx = s.request.ctx
            if ctx.free_pending and not ctx.is_freed:
                self.tree.free(ctx)

    # ---- introspection ---------------------------------------------------------------
    def stats(self) -> EngineStats:
        s = self._stats
        s.num_preemptions = self.scheduler.num_preemptions
        s.num_cached_tokens = self.scheduler.num_prefix_hit_tokens
        s.num_running, s.num_waiting = len(self.scheduler.running), len(self.scheduler.waiting)
        s.num_contexts = len(self.tree.live)
        s.num_blocks, s.num_free_blocks = self.blocks.num_blocks, self.blocks.num_free_blocks
        s.num_cached_blocks, s.num_used_blocks = self.blocks.num_cached_blocks, self.blocks.num_used_blocks
        s.block_size, s.recent_step_ms = self.config.block_size, self._step_times.recent()
        return EngineStats(**s.to_dict())

    def check_integrity(self) -> None:
        self.tree.check_integrity()
        for req in self.scheduler.running:
            assert req.status is Status.RUNNING and not req.ctx.is_freed

    def evict_cache(self) -> None:
        self.blocks.evict_all()
