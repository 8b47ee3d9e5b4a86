"""Typed reads of JSON request fields; every failure is an ApiError naming the field."""
from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from parrot.server.errors import ApiError

_MISSING = object()
MAX_DEPTH = 64  # JSON nesting any valid request stays far below
_CHECKED_TYPES = frozenset({str, dict, list})  # json.loads makes exactly these types


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object: 413 if too large, 400 if it is not UTF-8, not
    JSON, not an object, nested deeper than MAX_DEPTH, or holds a string that is not valid
    Unicode (an unpaired surrogate escape such as "\\ud800")."""
    raw = await request.read()  # raises HTTPRequestEntityTooLarge past client_max_size
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(f"request body is not valid UTF-8 (byte {e.start})") from None
    try:
        body = json.loads(text)
    except ValueError as e:
        raise ApiError(f"request body is not valid JSON: {e}") from None
    except RecursionError:
        raise ApiError(f"request body is nested deeper than {MAX_DEPTH} levels") from None
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object")
    check_json_tree(body)
    return body


def check_json_tree(body: Any) -> None:
    """400 naming the field if `body` nests deeper than MAX_DEPTH or holds a string (key or
    value) that cannot be encoded as UTF-8. Iterative: no recursion on hostile input."""
    stack: list[tuple[Any, str, int]] = [(body, "", 0)]
    while stack:
        value, path, depth = stack.pop()
        if depth > MAX_DEPTH:
            top = path.split(".", 1)[0].split("[", 1)[0]  # the field it started in
            raise ApiError(f"request body is nested deeper than {MAX_DEPTH} levels "
                           f"(in '{top}')", param=top)
        if isinstance(value, str):
            _check_unicode(value, path)
        elif isinstance(value, dict):
            for key, item in value.items():
                _check_unicode(key, path)
                stack.append((item, f"{path}.{key}" if path else key, depth + 1))
        elif isinstance(value, list) and not _CHECKED_TYPES.isdisjoint(map(type, value)):
            stack.extend((item, f"{path}[{i}]", depth + 1) for i, item in enumerate(value)
                         if type(item) in _CHECKED_TYPES)  # numbers need no check


def _check_unicode(text: str, path: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        where = f"'{path}'" if path else "request body"
        raise ApiError(f"{where} is not valid Unicode: unpaired surrogate "
                       f"{text[e.start]!r} at character {e.start}", param=path or None) from None


class Fields:
    """Reads fields of one JSON object; unknown fields are ignored."""

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body

    def _get(self, name: str) -> Any:
        value = self.body.get(name, _MISSING)
        return _MISSING if value is None else value

    def integer(self, name: str, default: Any = None, *, lo: int | None = None,
            hi: int | None = None) -> Any:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ApiError(f"'{name}' must be an integer, got {_show(value)}", param=name)
        _check_range(name, value, lo, hi)
        return value

    def number(self, name: str, default: Any = None, *, lo: float | None = None,
              hi: float | None = None) -> Any:
        value = self._get(name)
        if value is _MISSING:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ApiError(f"'{name}' must be a number, got {_show(value)}", param=name)
        _check_range(name, value, lo, hi)
        return float(value)

    def boolean(self, name: str, default: bool = False) -> bool:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, bool):
            raise ApiError(f"'{name}' must be a boolean, got {_show(value)}", param=name)
        return value

    def string(self, name: str, default: Any = None) -> Any:
        value = self._get(name)
        if value is _MISSING:
            return default
        if not isinstance(value, str):
            raise ApiError(f"'{name}' must be a string, got {_show(value)}", param=name)
        return value

    def str_list(self, name: str, *, max_items: int) -> list[str]:
        """A string or a list of strings (OpenAI's `stop`)."""
        value = self._get(name)
        if value is _MISSING:
            return []
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise ApiError(f"'{name}' must be a string or a list of strings", param=name)
        if len(items) > max_items:
            raise ApiError(f"'{name}' may hold at most {max_items} items", param=name)
        return items

    def int_list(self, name: str) -> list[int]:
        value = self._get(name)
        if value is _MISSING:
            return []
        if not is_token_list(value):
            raise ApiError(f"'{name}' must be a list of non-negative integers", param=name)
        return value

    def object(self, name: str) -> dict[str, Any]:
        value = self._get(name)
        if value is _MISSING:
            return {}
        if not isinstance(value, dict):
            raise ApiError(f"'{name}' must be an object, got {_show(value)}", param=name)
        return value

    def reject_truthy(self, name: str, reason: str = "is not supported") -> None:
        if self.body.get(name):
            raise ApiError(f"'{name}' {reason}", param=name)


def is_token_list(value: Any) -> bool:
    return isinstance(value, list) and all(
        isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value)


def _check_range(name: str, value: float, lo: float | None, hi: float | None) -> None:
    if lo is not None and value < lo:
        raise ApiError(f"'{name}' must be >= {lo}, got {value}", param=name)
    if hi is not None and value > hi:
        raise ApiError(f"'{name}' must be <= {hi}, got {value}", param=name)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, (bytes, bytearray)) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
