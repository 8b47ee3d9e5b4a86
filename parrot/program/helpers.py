"""Module-level helpers that act on the active session (`P.variable`, `P.join`, ...)."""
from __future__ import annotations

from typing import Any, Iterable

from parrot.program.session import current_session
from parrot.program.variable import SemanticVariable


def variable(value: str | None = None, name: str | None = None) -> SemanticVariable:
    """A client-owned Semantic Variable in the active session (set now or later with `.set`)."""
    return current_session().variable(value, name)


def join(items: Iterable[Any], sep: str = "\n", name: str | None = None) -> SemanticVariable:
    """`sep.join(items)` as a new variable, computed on the server once every item is ready.

    Items may be SemanticVariables or plain values (rendered with `str`). No client round trip:
    `combine(P.join(parts))` wires every part into `combine` directly.
    """
    return current_session().join(items, sep, name)


def concat(*items: Any, name: str | None = None) -> SemanticVariable:
    """The items' text back to back (`join(items, sep="")`)."""
    return current_session().join(items, "", name)


def numbered(items: Iterable[Any], name: str | None = None) -> SemanticVariable:
    """Items as a numbered list, one per line: "1. first\\n2. second..." (server side)."""
    parts: list[Any] = []
    for i, item in enumerate(items, 1):
        parts += [f"{i}. ", item, "\n"]
    return current_session().join(parts, "", name)
