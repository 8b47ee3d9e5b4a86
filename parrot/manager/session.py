"""A session: the unit of isolation and lifetime (its graph, shared prefixes, running tasks)."""
from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from parrot.manager.call import CallState
from parrot.manager.graph import Graph
from parrot.manager.prefix_pool import PrefixPool

MAX_REQUEST_LOG = 1000


@dataclass(eq=False)
class Session:
    id: str
    token: str
    idle_timeout: float
    pool: PrefixPool
    graph: Graph = field(default_factory=Graph)
    tasks: set[asyncio.Task] = field(default_factory=set)
    created_at: float = field(default_factory=time.time)
    last_active: float = field(default_factory=time.monotonic)
    num_waiting: int = 0  # gets/streams in progress keep a session alive
    requests: list[tuple[float, str]] = field(default_factory=list)  # (server time, what)
    is_closed: bool = False

    @classmethod
    def new(cls, engines: list[Any], idle_timeout: float) -> "Session":
        return cls(id=f"s_{secrets.token_hex(8)}", token=secrets.token_urlsafe(24),
                   idle_timeout=idle_timeout, pool=PrefixPool(engines))

    def has_token(self, token: str) -> bool:
        """Constant-time; any string is safe (headers may carry undecodable bytes)."""
        return hmac.compare_digest(self.token.encode(), token.encode("utf-8", "surrogateescape"))

    def touch(self, what: str) -> None:
        """Note a client request (kept for the graph view's timeline)."""
        self.last_active = time.monotonic()
        self.requests.append((time.time(), what))
        del self.requests[:-MAX_REQUEST_LOG]

    def is_expired(self, now: float) -> bool:
        return self.num_waiting == 0 and now - self.last_active > self.idle_timeout

    async def close(self, reason: str = "session closed") -> None:
        """Cancel pending and running calls, free every context; idempotent."""
        if self.is_closed:
            return
        self.is_closed = True
        tasks = list(self.tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.pool.close()
        self.graph.cancel_all(reason)

    def to_json(self) -> dict:
        return {"session_id": self.id, "created_at": self.created_at,
                "idle_timeout": self.idle_timeout, "closed": self.is_closed,
                **self.graph.to_json(), "shared_prefixes": self.pool.to_json(),
                "requests": [{"at": t, "what": w} for t, w in self.requests]}

    def check_integrity(self) -> None:
        self.graph.check_integrity()
        self.pool.check_integrity()
        running = {c.id for c in self.graph.calls.values() if c.state == CallState.RUNNING}
        if self.is_closed:
            assert not running and not self.pool.prefixes, f"{self.id}: closed but busy"
        holders = {h for sp in self.pool.prefixes.values() for h in sp.holders}
        for holder in holders:
            if holder.startswith("prefix-"):
                continue
            call = self.graph.calls.get(holder)
            assert call is not None and not call.is_finished, \
                f"{self.id}: prefix held by unknown or finished call {holder}"
