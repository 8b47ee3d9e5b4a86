"""Projection calls: a field of a JSON variable as a variable of its own (no model, no client).

`sv["a"]["b"]` on the client becomes a call of kind PROJECT whose input is `sv` and whose
`path` is ("a", "b"). When the input is ready, `run_projection` parses it as JSON and walks
the path: a string field is the value as-is, any other JSON value is its `json.dumps`. A value
that is not JSON, or lacks the field, fails the projection call and the calls downstream of
it (`Graph.fail_call`), with a message naming the path; the session's other calls go on.
"""
from __future__ import annotations

import json
from typing import Any

from parrot.manager.call import Call
from parrot.manager.graph import Graph

MAX_PATH = 32


class ProjectionError(ValueError):
    """The value is not JSON or has no such field."""


def project(text: str, path: tuple[str | int, ...]) -> str:
    """Field `path` of the JSON document `text`, as text."""
    try:
        value: Any = json.loads(text)
    except ValueError:
        raise ProjectionError(f"value is not JSON (starts {text[:60]!r})") from None
    for depth, key in enumerate(path):
        value = _step(value, key, path[:depth + 1])
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _step(value: Any, key: str | int, where: tuple[str | int, ...]) -> Any:
    shown = "".join(f"[{k!r}]" for k in where)
    if isinstance(key, str) and isinstance(value, dict):
        if key not in value:
            raise ProjectionError(f"no field {shown} (fields: {', '.join(map(str, value))})")
        return value[key]
    if isinstance(key, int) and isinstance(value, list):
        if not -len(value) <= key < len(value):
            raise ProjectionError(f"no item {shown}: the array has {len(value)} items")
        return value[key]
    wanted = "an object" if isinstance(key, str) else "an array"
    raise ProjectionError(f"cannot take {shown}: the value there is {_json_type(value)}, "
                          f"not {wanted}")


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             type(None): "null"}
    return names.get(type(value), "a number")


def run_projection(graph: Graph, call: Call) -> list[Call]:
    """Resolve the projection's output from its ready input; the calls that failed if not."""
    for event in ("ready", "started", "first_token"):
        call.stamp(event)
    (source,) = call.input_vars
    (out,) = call.output_vars
    try:
        text = project(graph.value_of(source), call.path)
    except ProjectionError as e:
        return graph.fail_call(call, f"projection of '{source}' failed: {e}")
    graph.variables[out].resolve(text)
    call.finish()
    return []
