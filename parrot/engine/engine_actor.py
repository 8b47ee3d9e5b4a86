"""One engine in its own process: the body of a Ray actor, driven by `RayEngine` only.

Ordering: Ray does not promise that an async actor runs its calls in the order they were
sent, so the client numbers every ordered call and the actor applies the context operations
a call carries strictly in number order (`_in_order`) before its own work starts.
Cancellation: `cancel(rid)` cancels the task running request `rid` (its `finally` aborts the
engine request); a cancel that comes before its request is remembered.
Errors travel in band as `Failure` (a type name and a message), never as pickled exceptions.
"""
from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, NamedTuple

from parrot.engine.config import EngineConfig
from parrot.engine.context_table import ContextTable, Op
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
        self._tasks: dict[int, asyncio.Task] = {}
        self._cancelled: set[int] = set()  # cancels that came before their request
        self._last_rid = 0  # requests start in the client's order: rids up to it have started

    async def start(self) -> dict[str, Any]:
        self.engine = await Engine(self.config).start()
        self.table = ContextTable(self.engine)
        self.injector = FailureInjector(self.engine)
        self.injector.attach()
        e = self.engine
        return {"model_name": e.model_name, "max_model_len": e.max_model_len,
                "vocab_size": e.model_config.vocab_size, "pid": os.getpid(),
                "tokenizer": e.tokenizer, "node_id": _node_id()}

    async def _in_order(self, seq: int, ops: list[Op]) -> None:
        async with self._turn:
            await self._turn.wait_for(lambda: self._next_seq == seq)
            self.table.apply_all(ops)
            self._next_seq += 1
            self._turn.notify_all()

    async def apply(self, seq: int, ops: list[Op]) -> None:
        await self._in_order(seq, ops)

    async def fill(self, seq: int, ops: list[Op], rid: int, cid: int, token_ids: list[int],
                   priority: Priority) -> int | Failure:
        await self._in_order(seq, ops)
        task = self._track(rid, self._fill(cid, token_ids, priority))
        try:
            return await task
        except BaseException as e:  # noqa: BLE001 - in band
            return Failure.of(e)
        finally:
            self._tasks.pop(rid, None)

    async def _fill(self, cid: int, token_ids: list[int], priority: Priority) -> int:
        return await self.engine.fill(self.table.get(cid), token_ids, priority)

    async def generate(self, seq: int, ops: list[Op], rid: int, cid: int,
                       sampling: SamplingParams, priority: Priority, group: str | None):
        """Yields lists of chunks (whatever was ready at once), then None; or a Failure."""
        await self._in_order(seq, ops)
        queue: asyncio.Queue = asyncio.Queue()
        task = self._track(rid, self._pump(cid, sampling, priority, group, queue))
        try:
            while True:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                yield items
                if items[-1] is None or isinstance(items[-1], Failure):
                    return
        finally:
            task.cancel()
            self._tasks.pop(rid, None)

    async def _pump(self, cid: int, sampling: SamplingParams, priority: Priority,
                    group: str | None, queue: asyncio.Queue) -> None:
        try:
            async for chunk in self.engine.generate(self.table.get(cid), sampling, priority,
                                                    group):
                queue.put_nowait(chunk)
            queue.put_nowait(None)
        except BaseException as e:  # noqa: BLE001 - in band; a cancel ends the task here
            queue.put_nowait(Failure.of(e))

    def _track(self, rid: int, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks[rid], self._last_rid = task, max(self._last_rid, rid)
        if rid in self._cancelled:
            self._cancelled.discard(rid)
            task.cancel()
        return task

    def cancel(self, rid: int) -> None:
        task = self._tasks.get(rid)
        if task is not None:
            task.cancel()
        elif rid > self._last_rid:  # not started yet (else: already done)
            self._cancelled.add(rid)

    def poll(self) -> tuple[Any, Any]:
        return self.engine.stats(), self.table.status()

    async def check_integrity(self, seq: int, ops: list[Op]) -> str | None:
        await self._in_order(seq, ops)
        try:
            self.engine.check_integrity()
            self.table.check_integrity()
        except AssertionError as e:
            return str(e) or "integrity check failed"
        return None

    async def inject_failure(self, seq: int, ops: list[Op], marker: str, message: str) -> int:
        await self._in_order(seq, ops)
        return self.injector.mark_matching(marker, message)

    async def stop(self) -> None:
        self.injector.detach()
        await self.engine.stop()


def _node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()
