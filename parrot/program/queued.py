"""A session's queue of unsent operations: batching, eagerness, what feeds a variable.

An op is ("variables" | "calls", the spec as the native API takes it). A session opens lazily;
when its first server operation is a `get`, the client sends the open, the queued graph and the
`get` in one request, but only if every queued call feeds the variable asked for. Any other
queued call could be the target of a concurrent `get`, which would have to wait for this one's
answer (the session id comes with it), so such sessions open plainly first.
"""
from __future__ import annotations

import itertools
from typing import Any, Iterator

Op = tuple[str, dict]  # ("variables" | "calls", the spec as the native API takes it)


def batches(ops: list[Op]) -> list[tuple[str, list[dict]]]:
    """Consecutive ops of one kind merged into one request, order kept."""
    return [(kind, [spec for _, spec in group])
            for kind, group in itertools.groupby(ops, key=lambda op: op[0])]


def opening_body(ops: list[Op]) -> dict[str, list[dict]]:
    """The ops as the `variables` and `calls` of `POST /v1/sessions`: the server adds the
    variables first, which keeps every reference valid (the client's ids are unique)."""
    body: dict[str, list[dict]] = {}
    for kind, spec in ops:
        body.setdefault(kind, []).append(spec)
    return body


def has_eager(ops: list[Op]) -> bool:
    """True if a queued call must run even if nothing fetches it (so it is sent at once)."""
    return any(spec.get("eager") for kind, spec in ops if kind == "calls")


def only_feeds(ops: list[Op], var_id: str) -> bool:
    """True if every queued call is `var_id`'s producer or an ancestor of it."""
    calls = [spec for kind, spec in ops if kind == "calls"]
    producers = {out: spec for spec in calls for out in _outputs(spec)}
    needed: set[str] = set()
    seen: set[str] = set()
    stack = [var_id]
    while stack:
        var = stack.pop()
        if var in seen or var not in producers:
            continue
        seen.add(var)
        spec = producers[var]
        needed.add(spec["id"])
        stack.extend(_inputs(spec))
    return all(spec["id"] in needed for spec in calls)


def _outputs(spec: dict) -> Iterator[str]:
    for out in spec.get("outputs", {}).values():
        yield from _var(out)
    yield from _var(spec.get("output"))


def _inputs(spec: dict) -> Iterator[str]:
    for value in spec.get("inputs", {}).values():
        yield from _var(value)
    for part in spec.get("parts", []):
        yield from _var(part)
    yield from _var(spec.get("source"))


def _var(binding: Any) -> Iterator[str]:
    if isinstance(binding, dict) and isinstance(binding.get("var"), str):
        yield binding["var"]
