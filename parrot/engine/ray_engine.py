"""The engine contract over an engine in a Ray actor (`EngineActor`), on this machine or another.

- Contexts are ids this client hands out at once; `new_context`, `fork`, `append`, `pin`,
  `free`, and the starts of `fill` and `generate` (and their cancels) are queued and travel,
  in order, in one numbered call at the end of this event-loop turn (or with the next
  `check_integrity` / `inject_failure`); the actor runs them in number order.
- Results come back on ONE long-lived Ray stream per engine (`EngineActor.events`): each item
  is every request's new chunks, fill results and failures at once (one engine step's
  worth), `[(rid, result), ...]`; this client demultiplexes them into each request's queue.
  Closing a `generate` early queues a cancel for the actor, which aborts the engine request.
- `stats()` and `status()` answer from a poll every `POLL_S` seconds.
- A dead actor (the stream, a call or a poll raises Ray's actor-died error) makes the engine
  lost: every pending and later call raises `EngineLost` naming it.
Ray is imported only here and only when used: `pip install 'parrot-serve[ray]'`.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import AsyncIterator
from typing import Any

from parrot.engine.config import EngineConfig
from parrot.engine.engine import EngineInputError, compile_constraint
from parrot.engine.engine_actor import EngineActor, Failure
from parrot.engine.grammar import GrammarCompiler
from parrot.engine.client import EngineLost
from parrot.engine.sampling_params import GenerationChunk, Priority, SamplingParams
from parrot.engine.stats import EngineStats
from parrot.engine.status import EngineStatus

log = logging.getLogger(__name__)
POLL_S = 0.1


class RayEngine:
    def __init__(self, actor: Any, info: dict[str, Any], config: EngineConfig, name: str) -> None:
        self.actor, self.config, self.name = actor, config, name
        self.tokenizer = info["tokenizer"]
        self.model_name, self.max_model_len = info["model_name"], info["max_model_len"]
        self.vocab_size: int = info["vocab_size"]
        self.node_id = info["node_id"]
        self.step_observers: list = []  # steps run in the actor: no in-process observers
        self._grammars = GrammarCompiler(self.tokenizer, self.vocab_size)
        self._ids, self._rids = itertools.count(1), itertools.count(1)
        self._seq, self._items, self._flush_due = 0, [], False  # items: what the next call takes
        self._fills: dict[int, asyncio.Future] = {}  # rid -> its result
        self._streams: dict[int, asyncio.Queue] = {}  # rid -> its results, in order
        self._stopping = False
        self._stats, self._status = EngineStats(), EngineStatus(config.block_size)
        self._error: str | None = None
        self._cause = ""
        self._poller = asyncio.ensure_future(self._poll())
        self._events = asyncio.ensure_future(self._read_events())

    @classmethod
    async def start(cls, config: EngineConfig, name: str, **options: Any) -> "RayEngine":
        """An engine actor started with Ray `options` (num_cpus, num_gpus, scheduling)."""
        import ray

        actor = ray.remote(EngineActor).options(**options).remote(config)
        info = await actor.start.remote()
        engine = cls(actor, info, config, f"{name} (ray node {info['node_id'][:8]}, "
                                          f"pid {info['pid']})")
        await engine._refresh()
        return engine

    @property
    def is_alive(self) -> bool:
        return self._error is None

    @property
    def error(self) -> str | None:
        return self._error

    # -- contexts ------------------------------------------------------------------------
    def new_context(self) -> int:
        return self._queue(("new", next(self._ids)))[-1]

    def fork(self, parent: int) -> int:
        return self._queue(("fork", parent, next(self._ids)))[-1]

    def append(self, ctx: int, token_ids: list[int]) -> None:
        self._queue(("append", ctx, list(token_ids)))

    def pin(self, ctx: int) -> None:
        self._queue(("pin", ctx))

    def free(self, ctx: int) -> None:
        if self.is_alive:  # a lost engine's KV went with it
            self._queue(("free", ctx))

    async def fill(self, ctx: int, token_ids: list[int],
                   priority: Priority = Priority.NORMAL) -> int:
        rid = next(self._rids)
        waiter = asyncio.get_running_loop().create_future()
        self._queue(("fill", rid, ctx, list(token_ids), priority))
        self._fills[rid] = waiter
        try:
            result = await waiter
        except asyncio.CancelledError:
            self._cancel(rid)
            raise
        finally:
            self._fills.pop(rid, None)
        if isinstance(result, Failure):
            raise self._raise(result)
        return result

    async def generate(self, ctx: int, sampling: SamplingParams,
                       priority: Priority = Priority.NORMAL,
                       group: str | None = None) -> AsyncIterator[GenerationChunk]:
        rid = next(self._rids)
        results: asyncio.Queue = asyncio.Queue()
        self._queue(("generate", rid, ctx, sampling, priority, group))
        self._streams[rid] = results
        is_done = False
        try:
            while not is_done:
                item = await results.get()
                if item is None or isinstance(item, (Failure, EngineLost)):
                    is_done = True
                    if item is not None:
                        raise item if isinstance(item, EngineLost) else self._raise(item)
                    break
                chunk = GenerationChunk(*item)
                is_done = chunk.finish_reason is not None
                yield chunk
        finally:
            self._streams.pop(rid, None)
            if not is_done:
                self._cancel(rid)

    # -- checks and views ----------------------------------------------------------------
    def compile(self, sampling: SamplingParams) -> object:
        return compile_constraint(self._grammars, sampling)

    def stats(self) -> EngineStats:
        return self._stats

    def status(self) -> EngineStatus:
        return self._status

    def check_integrity(self) -> None:
        """Blocks until the actor has checked (tests and debugging only)."""
        if not self.is_alive:
            return
        import ray

        seq, items = self._next_call()
        problem = ray.get(self.actor.check_integrity.remote(seq, items))
        assert problem is None, f"{self.name}: {problem}"

    async def inject_failure(self, marker: str, message: str) -> int:
        seq, items = self._next_call()
        return await self._await(self.actor.inject_failure.remote(seq, items, marker, message))

    async def stop(self) -> None:
        """Stop the engine and its actor (a lost one is only forgotten)."""
        import ray

        self._poller.cancel()
        self._stopping = True  # the stream's end is no loss now
        if self.is_alive:
            self._flush()
            try:
                await self.actor.stop.remote()
            except Exception as e:  # noqa: BLE001 - it is going away anyway
                log.warning("%s: stop failed: %r", self.name, e)
        self._events.cancel()
        ray.kill(self.actor)
        if self._error is None:
            self._cause, self._error = "stopped", "stopped"
            self._fail_waiters()

    # -- transport -----------------------------------------------------------------------
    def _queue(self, item: tuple) -> tuple:
        self._check_alive()
        self._items.append(item)
        if not self._flush_due:  # everything queued in this turn goes in one call at its end
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush)
        return item

    def _flush(self) -> None:
        self._flush_due = False
        if self._items and self.is_alive:
            seq, items = self._next_call()
            self._watch(self.actor.submit.remote(seq, items))

    def _next_call(self) -> tuple[int, list[tuple]]:
        """The next call's number and the items (in order) it carries."""
        self._check_alive()
        seq, items, self._seq, self._items = self._seq, self._items, self._seq + 1, []
        return seq, items

    def _cancel(self, rid: int) -> None:
        if self.is_alive:
            self._queue(("cancel", rid))

    def _watch(self, ref: Any) -> None:
        """A call whose answer nobody awaits: only its failure matters (a lost engine)."""
        async def check() -> None:
            try:
                await self._await(ref)
            except EngineLost:
                pass
        asyncio.ensure_future(check())

    async def _read_events(self) -> None:
        """The engine's one stream, demultiplexed into each request's future or queue."""
        stream = self.actor.events.options(num_returns="streaming").remote()
        try:
            while True:
                for rid, result in await self._await(self._next_ref(stream)):
                    if rid in self._streams:
                        self._streams[rid].put_nowait(result)
                    else:  # a fill's, or one nobody waits for any more (closed early)
                        waiter = self._fills.get(rid)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(result)
        except EngineLost:
            return
        except Exception as e:  # noqa: BLE001 - without its stream the engine is of no use
            log.exception("%s: event stream failed", self.name)
            self._lose(RuntimeError(f"its event stream failed ({type(e).__name__})"))

    async def _next_ref(self, stream: Any) -> Any:
        ref = await stream.__anext__()
        return await ref

    async def _await(self, awaitable: Any) -> Any:
        from ray.exceptions import ActorDiedError, ActorUnavailableError, RayActorError

        try:
            return await awaitable
        except (RayActorError, ActorDiedError, ActorUnavailableError) as e:
            raise self._lose(e) from None
        except StopAsyncIteration:
            if self._stopping:
                raise EngineLost(self.name, "stopped") from None
            raise self._lose(RuntimeError("its event stream ended early")) from None

    def _lose(self, cause: BaseException) -> EngineLost:
        from ray.exceptions import RayActorError

        if self._error is None:
            self._cause = (f"its Ray actor died: {type(cause).__name__}"
                           if isinstance(cause, RayActorError) else str(cause))
            self._error = str(EngineLost(self.name, self._cause))
            log.error("%s", self._error)
            self._poller.cancel()
            self._fail_waiters()
        return EngineLost(self.name, self._cause)

    def _fail_waiters(self) -> None:
        """Every request still waiting on this engine raises EngineLost."""
        lost = EngineLost(self.name, self._cause)
        for waiter in self._fills.values():
            if not waiter.done():
                waiter.set_exception(lost)
        for results in self._streams.values():
            results.put_nowait(lost)

    def _check_alive(self) -> None:
        if self._error is not None:
            raise EngineLost(self.name, self._cause)

    def _raise(self, failure: Failure) -> Exception:
        if failure.kind == "input":
            return EngineInputError(failure.message)
        if failure.kind == "cancelled":
            return asyncio.CancelledError()
        return RuntimeError(f"{self.name}: {failure.message}")

    async def _refresh(self) -> None:
        self._stats, self._status = await self._await(self.actor.poll.remote())

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            try:
                await self._refresh()
            except EngineLost:
                return
            except Exception as e:  # noqa: BLE001 - a missed poll; the next one may work
                log.warning("%s: poll failed: %r", self.name, e)
