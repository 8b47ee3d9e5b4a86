"""A server-side Semantic Variable: one immutable text slot with at most one producer."""
from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from enum import Enum

from parrot.protocol.criteria import Criteria


class VarState(str, Enum):
    EMPTY = "empty"  # no value yet
    READY = "ready"  # value final
    FAILED = "failed"  # its producer failed or its session closed


@dataclass(eq=False)
class Variable:
    id: str
    name: str | None = None
    producer: str | None = None  # id of the call that produces it; None = set by the client
    consumers: set[str] = field(default_factory=set)  # ids of calls reading it
    value: str | None = None
    error: str | None = None
    criteria: Criteria | None = None  # strongest objective of any get that reaches it
    is_requested: bool = False  # a get/stream asked for it directly
    partial: list[str] = field(default_factory=list)  # text generated so far
    _done: asyncio.Event = field(default_factory=asyncio.Event, repr=False)
    _listeners: set[asyncio.Queue] = field(default_factory=set, repr=False)

    @property
    def state(self) -> VarState:
        if self.value is not None:
            return VarState.READY
        return VarState.FAILED if self.error is not None else VarState.EMPTY

    @property
    def is_ready(self) -> bool:
        return self.value is not None

    @property
    def is_done(self) -> bool:
        return self._done.is_set()

    def append(self, text: str) -> None:
        """Record a generated piece of the value and tell stream listeners."""
        self.partial.append(text)
        self._notify(("delta", text))

    def resolve(self, value: str) -> None:
        assert not self.is_done, f"variable {self.id} already has a value"
        self.value = value
        self.partial = []
        self._done.set()
        self._notify(("done", value))

    def fail(self, message: str) -> None:
        if self.is_done:
            return
        self.error = message
        self._done.set()
        self._notify(("error", message))

    async def wait(self) -> None:
        await self._done.wait()

    def subscribe(self) -> asyncio.Queue:
        """A queue of ("delta"|"done"|"error", text) events, starting with text so far."""
        queue: asyncio.Queue = asyncio.Queue()
        if self.value is not None:
            queue.put_nowait(("done", self.value))
        elif self.error is not None:
            queue.put_nowait(("error", self.error))
        else:
            if self.partial:
                queue.put_nowait(("delta", "".join(self.partial)))
            self._listeners.add(queue)
        return queue

    def unsubscribe(self, queue: asyncio.Queue) -> None:
        self._listeners.discard(queue)

    def _notify(self, event: tuple[str, str]) -> None:
        for queue in self._listeners:
            queue.put_nowait(event)
        if event[0] != "delta":
            self._listeners.clear()

    def to_json(self, preview: int = 200) -> dict:
        text = self.value if self.value is not None else "".join(self.partial)
        return {"id": self.id, "name": self.name, "state": self.state.value,
                "producer": self.producer, "consumers": sorted(self.consumers),
                "criteria": self.criteria.value if self.criteria else None,
                "requested": self.is_requested, "error": self.error,
                "value_preview": text[:preview], "value_chars": len(text)}
