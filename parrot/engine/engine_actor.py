"""One engine in its own process: the body of a Ray actor, driven by `RayEngine` only.

What travels (see docs/ray.md):
- In: numbered calls (`submit`, `check_integrity`, `inject_failure`), each carrying a list of
  items in the order the client made them: context operations (`Op`), request starts
  (`("generate", rid, cid, sampling, priority, group)`, `("fill", rid, cid, tokens,
  priority)`) and cancels (`("cancel", rid)`). Ray does not promise that an async actor runs
  its calls in the order they were sent, so the actor runs each call's items strictly in
  number order (`_in_order`) before the call's own work; a cancel therefore always comes
  after the start it cancels.
- Out: one long-lived stream per engine (`events`): each item is a list of `(rid, result)`
  for every request that had something ready (one engine step's worth, usually): a chunk as
  a plain tuple of `GenerationChunk`'s fields, None (a stream that ended without a finishing
  chunk), a fill's cached-token count, or a `Failure`.
Errors travel in band as `Failure` (a kind and a message), never as pickled exceptions.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import os
from typing import Any, NamedTuple

from parrot.engine.config import EngineConfig
from parrot.engine.context import Context
from parrot.engine.context_table import ContextTable
from parrot.engine.engine import Engine, EngineInputError
from parrot.engine.failure_injector import FailureInjector
from parrot.engine.sampling_params import Priority, SamplingParams

log = logging.getLogger(__name__)


class Failure(NamedTuple):
    kind: str  # "input": an EngineInputError (the caller's fault), "cancelled", "error"
    message: str

    @classmethod
    def of(cls, e: BaseException) -> "Failure":
        if isinstance(e, asyncio.CancelledError):
            return cls("cancelled", "cancelled")
        kind = "input" if isinstance(e, (EngineInputError, KeyError)) else "error"
        return cls(kind, str(e) if not isinstance(e, KeyError) else str(e.args[0]))


class EngineActor:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self._next_seq = 0
        self._turn = asyncio.Condition()
        self._tasks: dict[int, asyncio.Task] = {}  # rid -> the task running that request
        self._outbox: list[tuple[int, Any]] = []  # (rid, result) not yet on the stream
        self._ready = asyncio.Event()  # the outbox has something
        self._stopping = False

    async def start(self) -> dict[str, Any]:
        self.engine = await Engine(self.config).start()
        self.table = ContextTable(self.engine)
        self.injector = FailureInjector(self.engine)
        self.injector.attach()
        gc.collect()  # start-up's objects out of the cyclic GC's scans, as parrot serve does
        gc.freeze()  # (server/serve.py: a full collection over them stalled every request)
        e = self.engine
        return {"model_name": e.model_name, "max_model_len": e.max_model_len,
                "vocab_size": e.model_config.vocab_size, "pid": os.getpid(),
                "tokenizer": e.tokenizer, "node_id": _node_id()}

    # -- in: numbered calls --------------------------------------------------------------
    async def _in_order(self, seq: int, items: list[tuple]) -> None:
        async with self._turn:
            await self._turn.wait_for(lambda: self._next_seq == seq)
            for item in items:
                self._run(item)
            self._next_seq += 1
            self._turn.notify_all()

    def _run(self, item: tuple) -> None:
        kind = item[0]
        if kind == "generate":
            self._start(item[1], item[2], self._generate, item[3:])
        elif kind == "fill":
            self._start(item[1], item[2], self._fill, item[3:])
        elif kind == "cancel":
            task = self._tasks.get(item[1])
            if task is not None:  # else it is done already
                task.cancel()
        else:
            self.table.apply_all([item])

    async def submit(self, seq: int, items: list[tuple]) -> None:
        await self._in_order(seq, items)

    def _start(self, rid: int, cid: int, run, args: tuple) -> None:
        try:
            ctx = self.table.get(cid)  # now, in order: a later op in this call cannot race it
        except Exception as e:  # noqa: BLE001 - in band
            self._emit(rid, Failure.of(e))
            return
        task = asyncio.ensure_future(run(rid, ctx, *args))
        self._tasks[rid] = task
        task.add_done_callback(lambda _: self._tasks.pop(rid, None))

    async def _generate(self, rid: int, ctx: Context, sampling: SamplingParams,
                        priority: Priority, group: str | None) -> None:
        try:
            async for chunk in self.engine.generate(ctx, sampling, priority, group):
                self._emit(rid, tuple(chunk))
                if chunk.finish_reason is not None:
                    return
            self._emit(rid, None)
        except BaseException as e:  # noqa: BLE001 - in band; a cancel ends the task here
            self._emit(rid, Failure.of(e))

    async def _fill(self, rid: int, ctx: Context, token_ids: list[int],
                    priority: Priority) -> None:
        try:
            self._emit(rid, await self.engine.fill(ctx, token_ids, priority))
        except BaseException as e:  # noqa: BLE001 - in band
            self._emit(rid, Failure.of(e))

    # -- out: the one stream -------------------------------------------------------------
    def _emit(self, rid: int, result: Any) -> None:
        self._outbox.append((rid, result))
        self._ready.set()

    async def events(self):
        """The engine's one stream: lists of (rid, result), whatever was ready at once."""
        while not self._stopping:
            await self._ready.wait()
            self._ready.clear()
            batch, self._outbox = self._outbox, []
            if batch:
                yield batch

    # -- views, checks, lifetime ---------------------------------------------------------
    def poll(self) -> tuple[Any, Any]:
        return self.engine.stats(), self.table.status()

    async def check_integrity(self, seq: int, items: list[tuple]) -> str | None:
        await self._in_order(seq, items)
        try:
            self.engine.check_integrity()
            self.table.check_integrity()
        except AssertionError as e:
            return str(e) or "integrity check failed"
        return None

    async def inject_failure(self, seq: int, items: list[tuple], marker: str,
                             message: str) -> int:
        await self._in_order(seq, items)
        return self.injector.mark_matching(marker, message)

    async def stop(self) -> None:
        self.injector.detach()
        await self.engine.stop()
        self._stopping = True
        self._ready.set()  # the stream ends


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()

