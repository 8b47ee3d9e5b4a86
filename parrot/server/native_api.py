"""The native Parrot API: sessions of Semantic Variables (thin handlers over the manager).

Every route under /v1/sessions/{sid} needs the session's token in `X-Parrot-Session-Token`
(or, when the server has no API key, `Authorization: Bearer <token>`). An unknown session and a
wrong token both answer 404, so a session's existence never leaks. Shapes of every request
and answer: docs/semantic-variables.md.
"""
from __future__ import annotations

import asyncio
import json
import math
from contextlib import aclosing
from typing import NamedTuple

from aiohttp import web

from parrot.manager import Manager, ManagerError, Session
from parrot.protocol.criteria import Criteria
from parrot.server.errors import ApiError, error_body
from parrot.server.keys import CONFIG, MANAGER
from parrot.server.validation import read_json_object

routes = web.RouteTableDef()

TOKEN_HEADER = "X-Parrot-Session-Token"
MAX_GET_TIMEOUT_S = 3600.0
DEFAULT_GET_TIMEOUT_S = 300.0
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}

@routes.post("/v1/sessions")
async def open_session(request: web.Request) -> web.Response:
    """Open a session; optionally add `variables` and `calls` and wait for `get` (one round
    trip for a whole small program). A refused batch closes the new session again."""
    body = await read_json_object(request) if request.can_read_body else {}
    wanted = _opening_get(body.get("get"))  # checked before anything opens
    manager = _manager(request)
    session = manager.open_session(body.get("idle_timeout"))
    try:
        _add_initial_graph(manager, session, body)
    except Exception:  # a refused batch (or a bug): the new session must not linger
        await manager.close_session(session, "opening request refused")
        raise
    opened = {"session_id": session.id, "token": session.token,
              "idle_timeout": session.idle_timeout}
    if wanted is None:
        return web.json_response(opened, status=201)
    try:
        value = await manager.get_variable(session, wanted.var, wanted.criteria, wanted.timeout)
    except ManagerError as e:  # the session stays open: the body says which it is
        error = ApiError.from_manager(e)
        return web.json_response({**error.to_json(), **opened}, status=error.status)
    except asyncio.CancelledError:  # the client left without learning the session's id
        await asyncio.shield(manager.close_session(session, "client disconnected"))
        raise
    return web.json_response({**opened, "id": wanted.var, "value": value}, status=201)


@routes.delete("/v1/sessions/{sid}")
async def close_session(request: web.Request) -> web.Response:
    session = _session(request)
    await _manager(request).close_session(session)
    return web.json_response({"session_id": session.id, "closed": True})


@routes.post("/v1/sessions/{sid}/calls")
async def submit_calls(request: web.Request) -> web.Response:
    session = _session(request)
    calls = _manager(request).submit_calls(session, await read_json_object(request))
    return web.json_response({"calls": calls})


@routes.post("/v1/sessions/{sid}/variables")
async def add_variables(request: web.Request) -> web.Response:
    session = _session(request)
    variables = _manager(request).add_variables(session, await read_json_object(request))
    return web.json_response({"variables": variables})


@routes.put("/v1/sessions/{sid}/variables/{vid}")
async def set_variable(request: web.Request) -> web.Response:
    session = _session(request)
    body = await read_json_object(request)
    if "value" not in body:
        raise ApiError("'value' is required", param="value")
    _manager(request).set_variable(session, request.match_info["vid"], body["value"])
    return web.json_response({"id": request.match_info["vid"], "ready": True})


@routes.get("/v1/sessions/{sid}/variables/{vid}")
async def get_variable(request: web.Request) -> web.Response:
    session, var_id = _session(request), request.match_info["vid"]
    value = await _manager(request).get_variable(session, var_id, _criteria(request),
                                                 _timeout(request))
    return web.json_response({"id": var_id, "value": value})


@routes.get("/v1/sessions/{sid}/variables/{vid}/stream")
async def stream_variable(request: web.Request) -> web.StreamResponse:
    session, var_id = _session(request), request.match_info["vid"]
    events = _manager(request).stream_variable(session, var_id, _criteria(request))
    async with aclosing(events):
        first = await anext(events)  # an unknown variable is still a plain 404 here
        response = web.StreamResponse(headers=SSE_HEADERS)
        await response.prepare(request)
        try:
            await _send_event(response, var_id, first)
            async for event in events:
                await _send_event(response, var_id, event)
        except ConnectionResetError:  # the client left; the call itself keeps running
            return response
    await response.write_eof()
    return response


@routes.get("/v1/sessions/{sid}/graph")
async def session_graph(request: web.Request) -> web.Response:
    return web.json_response(_manager(request).graph_json(_session(request)))


async def _send_event(response: web.StreamResponse, var_id: str, event: tuple[str, str]) -> None:
    kind, text = event
    if kind == "delta":
        data = {"text": text}
    elif kind == "done":
        data = {"id": var_id, "value": text}
    else:
        data = {**error_body(f"variable '{var_id}' was not produced: {text}", status=422),
                "status": 422}
    await response.write(f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode())


def _manager(request: web.Request) -> Manager:
    return request.app[MANAGER]


def _session(request: web.Request) -> Session:
    token = request.headers.get(TOKEN_HEADER)
    if token is None and not request.app[CONFIG].api_key:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.strip() if scheme.lower() == "bearer" else None
    return _manager(request).session(request.match_info["sid"], token)


def _criteria(request: web.Request) -> Criteria:
    try:
        return Criteria.parse(request.query.get("criteria"))
    except ValueError as e:
        raise ApiError(str(e), param="criteria") from None


def _timeout(request: web.Request) -> float:
    return _parse_timeout(request.query.get("timeout", str(DEFAULT_GET_TIMEOUT_S)), "timeout")


def _parse_timeout(raw: object, param: str) -> float:
    timeout = math.nan
    if isinstance(raw, (str, int, float)) and not isinstance(raw, bool):
        try:
            timeout = float(raw)
        except ValueError:
            pass
    if not 0 < timeout <= MAX_GET_TIMEOUT_S:
        raise ApiError(f"{param} must be a number of seconds in (0, {MAX_GET_TIMEOUT_S:g}], "
                       f"got {raw!r}", param=param)
    return timeout


class _Get(NamedTuple):
    var: str
    criteria: Criteria
    timeout: float


def _opening_get(raw: object) -> _Get | None:
    """The `get` of an opening request: {"var", "criteria"?, "timeout"?} (as GET's params)."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise ApiError("'get' must be an object {\"var\", \"criteria\", \"timeout\"}",
                       param="get")
    var = raw.get("var")
    if not isinstance(var, str) or not var:
        raise ApiError("get.var must be a variable id", param="get.var")
    try:
        criteria = Criteria.parse(raw.get("criteria"))
    except ValueError as e:
        raise ApiError(str(e), param="get.criteria") from None
    return _Get(var, criteria, _parse_timeout(raw.get("timeout", DEFAULT_GET_TIMEOUT_S),
                                              "get.timeout"))


def _add_initial_graph(manager: Manager, session: Session, body: dict) -> None:
    """The opening request's `variables`, then its `calls` (each all-or-nothing)."""
    for field, add in (("variables", manager.add_variables), ("calls", manager.submit_calls)):
        if body.get(field) is not None:
            add(session, {field: body[field]})
