"""Runs a model call on an engine: fork or open a context, fill, generate each output, free.

Each output variable is resolved the moment its text is complete, and `on_change` is called
so the manager dispatches the consumers at once (no client round trip). The call's context
is always freed, whatever happens (cancellation included); its full blocks stay in the
engine's prefix cache.

Tokens generated past an output's value (the end-of-turn token, a stop string) are already in
the context: when the template's next text starts with exactly them (chat markup after an
assistant turn), they are not appended twice.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any, Callable

from parrot.manager.call import Call, CallState
from parrot.manager.prefix_pool import PrefixPool, SharedPrefix
from parrot.manager.variable import Variable

log = logging.getLogger(__name__)


def tokenize(engine: Any, text: str) -> list[int]:
    """Prompt text to token ids, exactly as a plain completion of the same text would be."""
    return list(engine.tokenizer.encode(text, add_special_tokens=False))


class Executor:
    def __init__(self, engines: list[Any], on_change: Callable[[], None]) -> None:
        self.engines = engines
        self.loads = [0] * len(engines)  # in-flight calls per engine (the scheduler adds)
        self.on_change = on_change

    def start(self, session: Any, call: Call, engine_index: int,
              parent: SharedPrefix | None) -> asyncio.Task:
        """Hand `call` to engine `engine_index` (its load was counted by the scheduler)."""
        call.state, call.engine = CallState.RUNNING, engine_index
        call.stamp("started")
        task = asyncio.ensure_future(self._run(session, call, parent))
        session.tasks.add(task)
        task.add_done_callback(session.tasks.discard)
        # in a callback, not the coroutine's `finally`: a task cancelled before its first
        # step never runs its body, and its holds and load must still be returned
        task.add_done_callback(lambda _: self._release(session, call))
        return task

    def _release(self, session: Any, call: Call) -> None:
        if call.state is CallState.RUNNING:  # cancelled before it could run
            call.state, call.error = CallState.CANCELLED, "cancelled"
        session.pool.release_holder(call.id)
        self.loads[call.engine] -= 1
        self.on_change()

    async def _run(self, session: Any, call: Call, parent: SharedPrefix | None) -> None:
        engine = self.engines[call.engine]
        ctx = None
        try:
            ctx, skip = await self._open(engine, session.pool, call, parent)
            tail = ""
            for index, stage in enumerate(call.stages):
                text = None if index == 0 else call.render(stage.pieces, session.graph.value_of)
                text = text[len(tail):] if text is not None and text.startswith(tail) else text
                tokens = call.first_tokens[skip:] if index == 0 else tokenize(engine, text)
                engine.append(ctx, tokens)  # computed by the generate below: no extra step
                var = session.graph.variables[call.outputs[stage.output]]
                tail = await self._generate(engine, ctx, call, var, stage.output)
            call.state = CallState.DONE
            call.stamp("finished")
        except asyncio.CancelledError:
            if not call.is_finished:
                call.state, call.error = CallState.CANCELLED, "cancelled"
                call.stamp("finished")
            raise
        except Exception as e:  # a failing call fails alone (and whatever depends on it)
            if not isinstance(e, ValueError):
                log.exception("call %s failed", call.id)
            for failed in session.graph.fail_call(call, f"call '{call.id}' failed: {e}"):
                session.pool.release_holder(failed.id)
        finally:
            if ctx is not None:
                engine.free(ctx)

    async def _open(self, engine: Any, pool: PrefixPool, call: Call,
                    parent: SharedPrefix | None) -> tuple[Any, int]:
        """A context for `call`: a fork of its shared prefix once filled, else a fresh one."""
        if parent is not None:
            await parent.filled.wait()
            if parent.error is None and parent.ctx is not None:
                ctx = engine.fork(parent.ctx)
                call.shared_tokens = len(parent.tokens)
                pool.release_holder(call.id)
                return ctx, len(parent.tokens)
        return engine.new_context(), 0

    async def _generate(self, engine: Any, ctx: Any, call: Call, var: Variable,
                        output: str) -> str:
        """Generate `output` into `var`; return the text generated past its value."""
        parts: list[str] = []
        token_ids: list[int] = []
        async for chunk in engine.generate(ctx, call.sampling[output], priority=call.priority):
            call.stamp("first_token")
            token_ids += chunk.token_ids
            if chunk.text:
                parts.append(chunk.text)
                var.append(chunk.text)
            if chunk.usage is not None:
                self._count(call, chunk.usage)
        value = "".join(parts)
        var.resolve(value)
        self.on_change()  # its consumers may be ready now
        return _tail(engine, token_ids, value)

    @staticmethod
    def _count(call: Call, usage: Any) -> None:
        if call.prompt_tokens == 0:  # the context when the first output started
            call.prompt_tokens = usage.prompt_tokens
        call.completion_tokens += usage.completion_tokens


def _tail(engine: Any, token_ids: list[int], value: str) -> str:
    """The generated text past `value` (a stop string, the end-of-turn token), if the tokens
    decode to the value followed by it; else "" (nothing is then trimmed)."""
    text = engine.tokenizer.decode(token_ids)
    return text[len(value):] if text.startswith(value) else ""
