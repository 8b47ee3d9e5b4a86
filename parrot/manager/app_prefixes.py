"""Applications' constant prompts, kept on the server for all their sessions.

An application is a semantic function: its template's source text. Its calls begin with the
same text (a GPTs-style app's long system prompt, with the inputs that every call binds to the
same constants), whichever session they come from. The first time two calls of one template
begin with the same >= `min_tokens` tokens, that common beginning, cut to whole KV blocks,
becomes an *app prefix*:
one engine context in a server-wide `PrefixPool` (scope "app"), prefilled once, which later
calls of any session fork (their KV blocks are then the same blocks, so cascade attention
reads them once per step). Each session that used an app prefix holds it by its session id
until the session closes, so a prefix in use is never evicted by the engine's LRU cache; when
its last session closes, its context is freed and its blocks stay in the prefix cache.

A hot app prefix is copied: when its engine runs `replicate_at` calls while another engine
runs none, the next call registers the same prefix on the idle engine (one more prefill), and
each later call forks the copy on the less loaded engine.

Limits: at most `max_per_app` prefixes per template (copies included), and pinned tokens in all at most
`max_kv_share` of the smallest engine's KV pool (which also serves everything else).

Invariants (`check_integrity`): every app prefix is live in the pool, listed under one
template, has no parent, and is held only by open sessions.
"""
from __future__ import annotations

from collections import deque
from typing import Callable, Iterable, NamedTuple

from parrot.manager.prefix import common_prefix_len
from parrot.manager.prefix_pool import PrefixPool, SharedPrefix

SAMPLES_PER_APP = 16  # recent first prompts of a template, compared with each new one


class EngineChoice(NamedTuple):
    """What the scheduler tells app prefixes about its engines."""

    for_new: Callable[[], int]  # the engine for a new app prefix (beside its session's)
    idlest: Callable[[], int]  # the least loaded live engine
    load: Callable[[int], int]  # the calls running or placed on an engine


class AppPrefixes:
    def __init__(self, pool: PrefixPool, min_tokens: int = 64, max_per_app: int = 32,
                 max_kv_share: float = 0.25, replicate_at: int = 8) -> None:
        assert pool.scope == "app"
        self.pool = pool
        self.min_tokens = min_tokens
        self.max_per_app = max_per_app
        self.max_kv_share = max_kv_share
        self.replicate_at = replicate_at
        self._max_tokens: int | None = None  # read from the engines at the first registration
        self._bs: int | None = None  # likewise
        self.by_app: dict[str, list[SharedPrefix]] = {}
        self.samples: dict[str, deque[list[int]]] = {}

    def prefix_for(self, app: str, tokens: list[int], session_id: str, priority: int,
                   engines: EngineChoice) -> SharedPrefix | None:
        """The app prefix a call of template `app` with first prompt `tokens` should fork
        (now held by `session_id`), registering one when this call and an earlier one of the
        same template begin alike, or a copy of a hot one; None when there is none."""
        self._prune(app)
        sp = self._registered(app, tokens, engines.load)
        if sp is None:
            sp = self._register(app, tokens, session_id, priority, engines.for_new)
        elif self._is_hot(sp, engines):
            sp = self._copy(app, sp, session_id, priority, engines.idlest()) or sp
        if sp is not None:
            sp.holders.add(session_id)
        return sp

    def release_session(self, session_id: str) -> None:
        """`session_id` closed: let go of every app prefix it held."""
        self.pool.release_holder(session_id)
        for app in list(self.by_app):
            self._prune(app)

    @property
    def num_tokens(self) -> int:
        return sum(len(sp.tokens) for sp in self.pool.prefixes.values())

    def _registered(self, app: str, tokens: list[int],
                    load: Callable[[int], int]) -> SharedPrefix | None:
        """The longest live prefix of `app` that `tokens` starts with (and goes beyond); of
        its copies, the one on the least loaded engine."""
        fits = [sp for sp in self.by_app.get(app, ())
                if len(sp.tokens) < len(tokens) and tokens[:len(sp.tokens)] == sp.tokens]
        return max(fits, key=lambda sp: (len(sp.tokens), -load(sp.engine_index)), default=None)

    def _is_hot(self, sp: SharedPrefix, engines: EngineChoice) -> bool:
        """Its engine runs >= `replicate_at` calls while another engine runs none."""
        return engines.load(sp.engine_index) >= self.replicate_at and engines.load(engines.idlest()) == 0

    def _copy(self, app: str, sp: SharedPrefix, session_id: str, priority: int,
              engine: int) -> SharedPrefix | None:
        """A copy of `sp` on `engine` (None if the limits leave no room)."""
        if not self._has_room(app, len(sp.tokens)):
            return None
        copy = self.pool.create(sp.tokens, engine, priority, None, {session_id})
        self.by_app[app].append(copy)
        return copy

    def _register(self, app: str, tokens: list[int], session_id: str, priority: int,
                  pick_engine: Callable[[], int]) -> SharedPrefix | None:
        samples = self.samples.setdefault(app, deque(maxlen=SAMPLES_PER_APP))
        # the app's prefixes are samples too: a call that diverges inside one registers their
        # common part, so an app's prefixes close in on its constant text
        earlier = [*samples, *(sp.tokens for sp in self.by_app.get(app, ()))]
        depth = min(len(tokens) - 1, max((common_prefix_len(tokens, s) for s in earlier),
                                         default=0))
        depth -= depth % self.block_size()  # whole blocks: see block_size
        if depth < self.min_tokens or not self._has_room(app, depth):
            samples.append(tokens)
            return None
        sp = self.pool.create(tokens[:depth], pick_engine(), priority, None, {session_id})
        self.by_app.setdefault(app, []).append(sp)
        return sp

    def block_size(self) -> int:
        """The engines' KV block size (1 when they do not say). An app prefix of whole blocks
        is found entirely in the prefix cache once a call has computed its text, so its fill
        finishes without a step, and its forks start one step sooner (a partial last block
        would be recomputed first). (Session prefixes keep their partial last block: its
        forks share it, which map-reduce's short prompts need.)"""
        if self._bs is None:
            self._bs = max(1, min(e.status().block_size or 1 for e in self.pool.engines))
        return self._bs

    def _has_room(self, app: str, num_tokens: int) -> bool:
        if self._max_tokens is None:
            self._max_tokens = int(_kv_tokens(self.pool.engines) * self.max_kv_share)
        return (len(self.by_app.get(app, ())) < self.max_per_app
                and self.num_tokens + num_tokens <= self._max_tokens)

    def _prune(self, app: str) -> None:
        """Forget `app`'s freed prefixes; drop the ones whose fill failed."""
        live = []
        for sp in self.by_app.get(app, ()):
            if sp.filled.is_set() and sp.error is not None and not sp.is_freed:
                self.pool.drop(sp)
            if not sp.is_freed:
                live.append(sp)
        if live:
            self.by_app[app] = live
        else:
            self.by_app.pop(app, None)

    async def close(self) -> None:
        await self.pool.close()
        self.by_app.clear()
        self.samples.clear()

    def to_json(self) -> list[dict]:
        return [{**sp.to_json(), "app": _app_name(app)}
                for app, prefixes in self.by_app.items() for sp in prefixes]

    def check_integrity(self, open_sessions: Iterable[str]) -> None:
        self.pool.check_integrity()
        listed = [sp for prefixes in self.by_app.values() for sp in prefixes if not sp.is_freed]
        assert {sp.id for sp in listed} == set(self.pool.prefixes), "app prefixes unlisted"
        sessions = set(open_sessions)
        for sp in listed:
            assert sp.parent is None, f"{sp.id}: an app prefix has a parent"
            assert sp.holders <= sessions, f"{sp.id}: held by a closed session"


def _kv_tokens(engines: list) -> int:
    """Tokens the smallest engine's KV pool holds (unbounded when an engine does not say)."""
    sizes = [getattr(s, "num_blocks", 0) * getattr(s, "block_size", 0)
             for s in (e.stats() for e in engines)]
    return min(sizes) if all(sizes) else 1 << 30


def _app_name(source: str) -> str:
    """A short label for a template (its first line, cut)."""
    first = source.strip().splitlines()[0] if source.strip() else ""
    return first[:60]
