"""Admission limits: how much one session, and the whole server, may have queued.

A refusal is an `Overloaded` (429). Those that clear as work finishes (pending calls, the
global queue, open sessions) carry `retry_after` seconds, which the HTTP layer sends as
`Retry-After`; a session's variable cap does not clear (variables live as long as their
session), so it carries none.

The counts are recomputed on each admission by scanning the graphs: O(calls of the
session) for the per-session caps and O(calls of every session) for the global queue, which
the caps themselves bound (`max_sessions * max_session_variables`).
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from parrot.manager.errors import BadRequest, Overloaded


@dataclass(frozen=True)
class Limits:
    max_sessions: int = 10000  # open sessions
    max_session_calls: int = 1024  # unfinished calls (pending or running) in one session
    max_session_variables: int = 16384  # variables of one session, produced ones included
    max_queue: int = 4096  # engine requests waiting + unfinished calls, over every session
    retry_after_s: int = 1  # what a 429 that clears with time tells the client to wait

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_session_calls", "max_session_variables",
                     "max_queue", "retry_after_s"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")


def num_unfinished(graph: Any) -> int:
    return sum(not call.is_finished for call in graph.calls.values())


def queue_length(engines: Iterable[Any], sessions: Iterable[Any]) -> int:
    """Engine requests waiting for a batch slot plus unfinished calls of every session."""
    waiting = sum(getattr(engine.stats(), "num_waiting", 0) for engine in engines)
    return waiting + sum(num_unfinished(s.graph) for s in sessions if not s.is_closed)


def check_sessions(limits: Limits, num_open: int) -> None:
    if num_open >= limits.max_sessions:
        raise Overloaded(f"too many open sessions (limit {limits.max_sessions}); close one "
                         "or retry later", param="session", retry_after=limits.retry_after_s)


def check_calls(limits: Limits, session: Any, num_new: int, num_new_variables: int) -> None:
    """Refuse `num_new` calls creating `num_new_variables` variables in `session`."""
    pending = num_unfinished(session.graph)
    if pending + num_new > limits.max_session_calls:
        raise Overloaded(f"session has {pending} unfinished calls; {num_new} more would "
                         f"exceed its limit of {limits.max_session_calls}", param="calls",
                         retry_after=limits.retry_after_s)
    check_variables(limits, session, num_new_variables)


def check_variables(limits: Limits, session: Any, num_new: int) -> None:
    have = len(session.graph.variables)
    if have + num_new > limits.max_session_variables:
        raise Overloaded(f"session has {have} variables; {num_new} more would exceed its "
                         f"limit of {limits.max_session_variables} (open another session)",
                         param="variables")


def check_queue(limits: Limits, engines: Iterable[Any], sessions: Iterable[Any],
                num_new: int, param: str | None = None) -> None:
    """Refuse `num_new` more units of work when the server's queue is full (429), or when
    they could never fit it (400, naming `param`)."""
    if num_new > limits.max_queue:
        raise BadRequest(f"{num_new} requests at once can never fit the server's queue "
                         f"(limit {limits.max_queue})", param=param)
    length = queue_length(engines, sessions)
    if length + num_new > limits.max_queue:
        raise Overloaded(f"server busy: {length} requests queued (limit {limits.max_queue}); "
                         "retry later", retry_after=limits.retry_after_s)
