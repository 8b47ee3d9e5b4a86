"""Shared-prefix contexts of one session: filled once, forked by many calls, freed when unneeded.

A `SharedPrefix` is an engine context holding a token prefix that several calls start with
(children of one node of the context tree). It lives while it has *holders*: calls that will
fork from it (ready ones about to run, or active ones still waiting for inputs) and longer
shared prefixes forked from it. When the last holder lets go, its context is freed (its full
blocks stay in the engine's prefix cache until evicted).

A pool has a `scope`: a session's own prefixes, or the server's application prefixes
(`app_prefixes.py`), which sessions hold by their id. A session prefix may fork an app prefix;
it does not hold that parent (its session does, for as long as the session lives).

Invariants (`check_integrity`): every live prefix has a holder, its parent is live and holds
a strict prefix of its tokens, and each parent of the same pool lists it as a holder until it
has forked.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)
_ids = itertools.count(1)


@dataclass(eq=False)
class SharedPrefix:
    tokens: list[int]
    engine_index: int
    priority: int
    parent: "SharedPrefix | None" = None
    scope: str = "session"  # the pool that owns it: "session" or "app"
    holders: set[str] = field(default_factory=set)
    ctx: Any = None
    error: BaseException | None = None
    is_freed: bool = False
    task: asyncio.Task | None = None
    filled: asyncio.Event = field(default_factory=asyncio.Event)
    id: str = field(default_factory=lambda: f"prefix-{next(_ids)}")

    def to_json(self) -> dict:
        return {"id": self.id, "tokens": len(self.tokens), "engine": self.engine_index,
                "parent": self.parent.id if self.parent else None,
                "holders": sorted(self.holders), "filled": self.filled.is_set(),
                "error": repr(self.error) if self.error else None}


class PrefixPool:
    def __init__(self, engines: list[Any], scope: str = "session") -> None:
        self.engines = engines
        self.scope = scope
        self.prefixes: dict[str, SharedPrefix] = {}

    def owns(self, sp: SharedPrefix) -> bool:
        """Whether `sp` is of this pool's scope (holds and frees go through its own pool)."""
        return sp.scope == self.scope

    def longest_prefix_of(self, tokens: list[int], max_len: int) -> SharedPrefix | None:
        """The longest usable live prefix that `tokens` starts with, at most `max_len` long."""
        best = None
        for sp in self.prefixes.values():
            n = len(sp.tokens)
            if (sp.error is None and n <= max_len and tokens[:n] == sp.tokens
                    and (best is None or n > len(best.tokens))):
                best = sp
        return best

    def create(self, tokens: list[int], engine_index: int, priority: int,
               parent: SharedPrefix | None, holders: set[str]) -> SharedPrefix:
        """A new shared prefix, filled in the background (forking `parent` if given)."""
        sp = SharedPrefix(list(tokens), engine_index, priority, parent, self.scope, set(holders))
        if parent is not None and self.owns(parent):
            parent.holders.add(sp.id)
        self.prefixes[sp.id] = sp
        sp.task = asyncio.ensure_future(self._fill(sp))
        return sp

    async def _fill(self, sp: SharedPrefix) -> None:
        engine = self.engines[sp.engine_index]
        try:
            start = 0
            if sp.parent is not None:
                await sp.parent.filled.wait()
                if sp.parent.error is not None:
                    raise RuntimeError(f"parent prefix failed: {sp.parent.error!r}")
                sp.ctx, start = engine.fork(sp.parent.ctx), len(sp.parent.tokens)
            else:
                sp.ctx = engine.new_context()
                if sp.scope == "app":  # kept for every session of the app: never released
                    engine.pin(sp.ctx)
            await engine.fill(sp.ctx, sp.tokens[start:], priority=sp.priority)
        except asyncio.CancelledError:
            sp.error = RuntimeError("cancelled")
            raise
        except Exception as e:  # callers fall back to their own context
            log.warning("shared prefix %s failed: %r", sp.id, e)
            sp.error = e
        finally:
            sp.filled.set()
            if sp.parent is not None and sp.id in sp.parent.holders:
                self.release(sp.parent, sp.id)

    def hold(self, sp: SharedPrefix, holder: str) -> None:
        sp.holders.add(holder)

    def release(self, sp: SharedPrefix, holder: str) -> None:
        sp.holders.discard(holder)
        if not sp.holders:
            self._free(sp)

    def discard_if_unheld(self, sp: SharedPrefix) -> None:
        """Free a prefix nobody ended up holding."""
        if not sp.holders:
            self._free(sp)

    def drop(self, sp: SharedPrefix) -> None:
        """Free `sp` whoever holds it (its fill failed: nobody can fork it)."""
        sp.holders.clear()
        self._free(sp)

    def release_holder(self, holder: str) -> None:
        """`holder` (a call) needs no shared prefix any more: drop all its holds."""
        for sp in [sp for sp in self.prefixes.values() if holder in sp.holders]:
            self.release(sp, holder)

    def _free(self, sp: SharedPrefix) -> None:
        if sp.is_freed:
            return
        sp.is_freed = True
        self.prefixes.pop(sp.id, None)
        if sp.task is not None and not sp.task.done():
            sp.task.cancel()
            sp.task.add_done_callback(lambda _task: self._after_fill(sp))
        else:
            self._after_fill(sp)

    def _after_fill(self, sp: SharedPrefix) -> None:
        """Free the context and let go of the parent (idempotent; also if the fill never ran)."""
        sp.filled.set()
        sp.error = sp.error or RuntimeError(f"shared prefix {sp.id} was freed")
        if sp.ctx is not None:
            self.engines[sp.engine_index].free(sp.ctx)
            sp.ctx = None
        if sp.parent is not None and sp.id in sp.parent.holders:
            self.release(sp.parent, sp.id)

    async def close(self) -> None:
        """Cancel every fill and free every context (the session is closing)."""
        prefixes = list(self.prefixes.values())
        tasks = [sp.task for sp in prefixes if sp.task is not None and not sp.task.done()]
        for sp in prefixes:
            sp.holders.clear()
            self._free(sp)
        await asyncio.gather(*tasks, return_exceptions=True)

    def to_json(self) -> list[dict]:
        return [sp.to_json() for sp in self.prefixes.values()]

    def check_integrity(self) -> None:
        for sp in self.prefixes.values():
            assert not sp.is_freed, f"{sp.id}: freed but still listed"
            assert sp.holders, f"{sp.id}: live without holders"
            parent = sp.parent
            if parent is not None and self.owns(parent) and not sp.filled.is_set():
                assert parent.id in self.prefixes, f"{sp.id}: parent freed before the fork"
                assert sp.id in parent.holders, f"{sp.id}: parent does not know its child"
            if parent is not None:
                assert sp.tokens[:len(parent.tokens)] == parent.tokens, f"{sp.id}: not a prefix"
                assert len(parent.tokens) < len(sp.tokens), f"{sp.id}: not longer than parent"
