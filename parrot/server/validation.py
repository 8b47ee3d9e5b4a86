"""The raw-body guards every JSON request passes before its pydantic model (size, UTF-8,
JSON, depth, unpaired surrogates); each failure is an ApiError, naming the field if any."""
from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from parrot.server.errors import ApiError

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
