"""Run one OpenAI request on an engine: one context per prompt, forked n ways when n > 1.

`generate_choices` yields `(choice_index, GenerationChunk)` as tokens arrive from
every choice. With n == 1 the prompt is prefilled by the generate request itself
(one request, chunked prefill then decode, and its usage counts the prompt's real
prefix-cache hits). With n > 1 the prompt is filled once into a context that is
forked n times, one generation per fork, so the prompt is computed once. Whatever
ends the iteration (exhaustion, an error, cancellation when the client goes away,
or `aclose()`), its `finally` stops every generation and frees every context.
"""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from parrot.engine import EngineInputError
from parrot.engine.client import EngineLost
from parrot.engine.sampling_params import GenerationChunk, Priority, SamplingParams
from parrot.server.errors import ApiError

if TYPE_CHECKING:
    from parrot.engine.client import ContextId, EngineClient

SamplingFor = Callable[[int, int], SamplingParams]  # (prompt index, choice index) -> params


class ChoiceChunk(NamedTuple):
    index: int  # choice index: prompt_index * n + fork index
    chunk: GenerationChunk  # as the engine sent it (its usage untouched)
    prompt_cached_tokens: int | None = None  # n > 1, last chunk: the prompt's fill's cache hits


class _Failed(NamedTuple):
    error: BaseException


class _Run:
    """Shared by the per-prompt tasks of one request: where chunks go, what to free."""

    def __init__(self, engine: EngineClient, n: int, sampling_for: SamplingFor,
                 priority: Priority) -> None:
        self.engine, self.n, self.sampling_for, self.priority = engine, n, sampling_for, priority
        self.queue: asyncio.Queue[ChoiceChunk | _Failed] = asyncio.Queue()
        self.contexts: list[ContextId] = []

    def new_context(self, parent: ContextId | None = None) -> ContextId:
        ctx = self.engine.new_context() if parent is None else self.engine.fork(parent)
        self.contexts.append(ctx)
        return ctx

    def free_all(self) -> None:
        for ctx in self.contexts:
            self.engine.free(ctx)


async def generate_choices(engine: EngineClient, prompts: Sequence[list[int]], n: int,
                           sampling_for: SamplingFor,
                           priority: Priority = Priority.NORMAL) -> AsyncIterator[ChoiceChunk]:
    run = _Run(engine, n, sampling_for, priority)
    tasks = [asyncio.create_task(_run_prompt(run, p, i)) for i, p in enumerate(prompts)]
    unfinished = len(prompts) * n
    try:
        while unfinished:
            item = await run.queue.get()
            if isinstance(item, _Failed):
                raise item.error
            if item.chunk.finish_reason is not None:
                unfinished -= 1
            yield item
    finally:
        for task in tasks:
            task.cancel()
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:  # even if cancelled again while waiting: free() aborts what still runs
            run.free_all()


async def _run_prompt(run: _Run, token_ids: list[int], prompt_index: int) -> None:
    """Prepare one prompt's contexts and pump every choice's chunks into the queue."""
    try:
        if run.n == 1:
            ctx = run.new_context()
            run.engine.append(ctx, token_ids)  # computed by the generate request below
            choice_contexts, cached = [ctx], None
        else:
            parent = run.new_context()
            cached = await run.engine.fill(parent, token_ids, priority=run.priority)
            choice_contexts = [run.new_context(parent) for _ in range(run.n)]
        async with asyncio.TaskGroup() as group:
            for j, ctx in enumerate(choice_contexts):
                group.create_task(_pump(run, ctx, prompt_index * run.n + j, prompt_index, cached))
    except Exception as e:  # noqa: BLE001 - handed to the consumer, which re-raises it
        run.queue.put_nowait(_Failed(_as_api_error(e)))


async def _pump(run: _Run, ctx: ContextId, index: int, prompt_index: int,
                cached: int | None) -> None:
    """Stream one choice; `cached`: the prompt's prefix-cache hits when it was filled once
    (a fork's own usage counts the shared prompt as cached: it reports what it reused)."""
    params = run.sampling_for(prompt_index, index)
    stream = run.engine.generate(ctx, params, priority=run.priority)
    try:
        async for chunk in stream:
            run.queue.put_nowait(ChoiceChunk(index, chunk, cached if chunk.usage else None))
    finally:
        await stream.aclose()


def _as_api_error(e: Exception) -> Exception:
    if isinstance(e, ExceptionGroup):
        e = e.exceptions[0]
    if isinstance(e, EngineInputError):  # too long for the context or the KV pool
        return ApiError(str(e))
    if isinstance(e, EngineLost):  # its engine died: a 503 that names it
        return ApiError(str(e), status=503, code="engine_lost")
    return e
