"""Runs a model call on an engine: fork or open a context, fill, generate each output, free.

Each output variable is resolved the moment its text is complete, and `on_change` is called
so the manager dispatches the consumers at once (no client round trip). What a call holds
(its `CallRun`: engine load, context, prefix holds) is released in one place, the done
callback of its task, whatever ends it (cancellation before its first step included); the
context's full blocks stay in the engine's prefix cache.

Engines come through the engine contract (`parrot/engine/client.py`). A call whose engine
is lost before it produced a token starts again on the least-loaded live engine, from a
fresh context; one that had produced tokens fails with the `EngineLost` error naming it.

Tokens generated past an output's value (the end-of-turn token, a stop string) are already in
the context: when the template's next text starts with exactly them (chat markup after an
assistant turn), they are not appended twice.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from parrot.engine.client import EngineClient, EngineLost
from parrot.manager.call import Call, CallState
from parrot.manager.call_run import CallRun
from parrot.manager.prefix_pool import PrefixPool, SharedPrefix
from parrot.manager.variable import Variable

log = logging.getLogger(__name__)


def tokenize(engine: EngineClient, text: str) -> list[int]:
    """Prompt text to token ids, exactly as a plain completion of the same text would be."""
    return list(engine.tokenizer.encode(text, add_special_tokens=False))


class Executor:
    def __init__(self, engines: list[EngineClient], on_change: Callable[[], None]) -> None:
        self.engines = engines
        self.loads = [0] * len(engines)  # in-flight calls per engine (the scheduler adds)
        self.runs: dict[Call, CallRun] = {}  # the running calls of every session
        self.on_change = on_change

    def start(self, session: Any, call: Call, engine_index: int,
              parent: SharedPrefix | None) -> asyncio.Task:
        """Hand `call` to engine `engine_index` (its load was counted by the scheduler)."""
        run = CallRun(call, engine_index)
        call.start(engine_index)
        if not self.engines[engine_index].is_alive:
            self._move(run)
            parent = None
        self.runs[call] = run
        task = asyncio.ensure_future(self._run(session, run, parent))
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        # in a callback, not the coroutine's `finally`: a task cancelled before its first
        # step never runs its body, and what it holds must still be returned
        task.add_done_callback(lambda _: self._release(session, run))
        return task

    def _release(self, session: Any, run: CallRun) -> None:
        assert not run.is_released, f"call {run.call.id} released twice"
        run.is_released = True
        call = run.call
        if call.state is CallState.RUNNING:  # cancelled before it could run
            call.cancel()
        if run.ctx is not None:
            self.engines[run.engine_index].free(run.ctx)
            run.ctx = None
        session.pool.release_holder(call.id)
        self.loads[run.engine_index] -= 1
        self.runs.pop(call, None)
        self.on_change()

    def _move(self, run: CallRun) -> bool:
        """Count `run` on the least-loaded live engine instead; False if none is live."""
        alive = [i for i, e in enumerate(self.engines) if e.is_alive]
        if not alive:
            return False
        target = min(alive, key=lambda i: self.loads[i])
        self.loads[run.engine_index] -= 1
        self.loads[target] += 1
        run.engine_index = target
        run.call.move(target)
        run.ctx, run.cached_parent = None, 0  # they went with its engine
        return True

    async def _run(self, session: Any, run: CallRun, parent: SharedPrefix | None) -> None:
        call = run.call
        try:
            while True:
                try:
                    await self._attempt(session, run, parent)
                    break
                except EngineLost as e:
                    if run.has_output or not self._move(run):
                        raise
                    log.warning("call %s: %s; starting again on engine %d", call.id, e,
                                run.engine_index)
                    parent = None
            call.finish()
        except asyncio.CancelledError:
            if not call.is_finished:
                call.cancel()
            raise
        except Exception as e:  # a failing call fails alone (and whatever depends on it)
            if isinstance(e, EngineLost):
                log.warning("call %s failed: %s", call.id, e)
            elif not isinstance(e, ValueError):
                log.exception("call %s failed", call.id)
            for failed in session.graph.fail_call(call, f"call '{call.id}' failed: {e}"):
                session.pool.release_holder(failed.id)

    async def _attempt(self, session: Any, run: CallRun, parent: SharedPrefix | None) -> None:
        call, engine = run.call, self.engines[run.engine_index]
        group = f"{session.id}/{call.group}" if call.group else None  # the engine's: unique
        skip = await self._open(engine, session.pool, run, parent)
        tail = ""
        for index, stage in enumerate(call.stages):
            text = None if index == 0 else call.render(stage.pieces, session.graph.value_of)
            text = text[len(tail):] if text is not None and text.startswith(tail) else text
            tokens = call.first_tokens[skip:] if index == 0 else tokenize(engine, text)
            engine.append(run.ctx, tokens)  # computed by the generate below: no extra step
            var = session.graph.variables[call.outputs[stage.output]]
            tail = await self._generate(engine, run, var, stage.output, group)

    async def _open(self, engine: EngineClient, pool: PrefixPool, run: CallRun,
                    parent: SharedPrefix | None) -> int:
        """Open the call's context: a fork of its shared prefix once filled, else a fresh
        one. Returns how many prompt tokens it already holds.

        A prefix of whole KV blocks still being filled is not waited for: the call's own
        prompt, in a fresh context, finds those blocks in the engine's prefix cache (the
        same blocks a fork would share) the step they are computed, and the engine holds it
        back until then rather than computing them twice. Waiting for the fill, then
        forking, started the call a step later (the fill's end, then the next step)."""
        if parent is not None and _fills_from_cache(engine, parent, run.call):
            run.ctx, run.cached_parent = engine.new_context(), len(parent.tokens)
            return 0
        if parent is not None:
            await parent.filled.wait()
            if parent.error is None and parent.ctx is not None:
                run.ctx = engine.fork(parent.ctx)
                run.call.fork(len(parent.tokens))
                pool.release_holder(run.call.id)
                return len(parent.tokens)
        run.ctx = engine.new_context()
        return 0

    async def _generate(self, engine: EngineClient, run: CallRun, var: Variable,
                        output: str, group: str | None) -> str:
        """Generate `output` into `var`; return the text generated past its value. The
        members of a task group are admitted by the engine together."""
        call = run.call
        parts: list[str] = []
        token_ids: list[int] = []
        async for chunk in engine.generate(run.ctx, call.sampling[output], priority=call.priority,
                                           group=group):
            call.stamp("first_token")
            run.has_output = True
            token_ids += chunk.token_ids
            if chunk.text:
                parts.append(chunk.text)
                var.append(chunk.text)
            if chunk.usage is not None:
                call.count(chunk.usage.prompt_tokens, chunk.usage.completion_tokens)
                if run.cached_parent:  # the blocks of the prefix it found in the cache
                    call.fork(min(run.cached_parent, chunk.usage.cached_tokens))
                    run.cached_parent = 0
        value = "".join(parts)
        var.resolve(value)
        self.on_change()  # its consumers may be ready now
        return _tail(engine, token_ids, value)


def _fills_from_cache(engine: EngineClient, parent: SharedPrefix, call: Call) -> bool:
    """Whether `call` can skip waiting for `parent`'s fill (see Executor._open): the engine
    holds a request back only for blocks a prefill at least as urgent computes, and never
    a task group's members."""
    config = engine.config
    return (not parent.filled.is_set() and config.enable_prefix_caching
            and len(parent.tokens) % config.block_size == 0
            and call.group is None and parent.priority <= call.priority)


def _tail(engine: EngineClient, token_ids: list[int], value: str) -> str:
    """The generated text past `value` (a stop string, the end-of-turn token), if the tokens
    decode to the value followed by it; else "" (nothing is then trimmed)."""
    text = engine.tokenizer.decode(token_ids)
    return text[len(value):] if text.startswith(value) else ""
