"""The native Parrot API: sessions of Semantic Variables (thin handlers over the manager).

Every route under /v1/sessions/{sid} needs the session's token in `X-Parrot-Session-Token`
(or, when the server has no API key, `Authorization: Bearer <token>`). An unknown session and a
wrong token both answer 404, so a session's existence never leaks. Shapes of every request
and answer: docs/semantic-variables.md.
"""
from __future__ import annotations

import functools
import json
import math
from contextlib import aclosing
from typing import Awaitable, Callable

from aiohttp import web

from parrot.manager import Manager, ManagerError, Session
from parrot.program.criteria import Criteria
from parrot.server.errors import ApiError, error_body
from parrot.server.keys import CONFIG, MANAGER
from parrot.server.validation import read_json_object

routes = web.RouteTableDef()

TOKEN_HEADER = "X-Parrot-Session-Token"
MAX_GET_TIMEOUT_S = 3600.0
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _api(handler: Handler) -> Handler:
    """Manager refusals become JSON errors with their 4xx status."""
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ManagerError as e:
            raise ApiError.from_manager(e) from None
    return wrapped


@routes.post("/v1/sessions")
@_api
async def open_session(request: web.Request) -> web.Response:
    body = await read_json_object(request) if request.can_read_body else {}
    session = _manager(request).open_session(body.get("idle_timeout"))
    return web.json_response({"session_id": session.id, "token": session.token,
                              "idle_timeout": session.idle_timeout}, status=201)


@routes.delete("/v1/sessions/{sid}")
@_api
async def close_session(request: web.Request) -> web.Response:
    session = _session(request)
    await _manager(request).close_session(session)
    return web.json_response({"session_id": session.id, "closed": True})


@routes.post("/v1/sessions/{sid}/calls")
@_api
async def submit_calls(request: web.Request) -> web.Response:
    session = _session(request)
    calls = _manager(request).submit_calls(session, await read_json_object(request))
    return web.json_response({"calls": calls})


@routes.post("/v1/sessions/{sid}/variables")
@_api
async def add_variables(request: web.Request) -> web.Response:
    session = _session(request)
    variables = _manager(request).add_variables(session, await read_json_object(request))
    return web.json_response({"variables": variables})


@routes.put("/v1/sessions/{sid}/variables/{vid}")
@_api
async def set_variable(request: web.Request) -> web.Response:
    session = _session(request)
    body = await read_json_object(request)
    if "value" not in body:
        raise ApiError("'value' is required", param="value")
    _manager(request).set_variable(session, request.match_info["vid"], body["value"])
    return web.json_response({"id": request.match_info["vid"], "ready": True})


@routes.get("/v1/sessions/{sid}/variables/{vid}")
@_api
async def get_variable(request: web.Request) -> web.Response:
    session, var_id = _session(request), request.match_info["vid"]
    value = await _manager(request).get_variable(session, var_id, _criteria(request),
                                                 _timeout(request))
    return web.json_response({"id": var_id, "value": value})


@routes.get("/v1/sessions/{sid}/variables/{vid}/stream")
@_api
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
@_api
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
    raw = request.query.get("timeout", "300")
    try:
        timeout = float(raw)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout <= MAX_GET_TIMEOUT_S:
        raise ApiError(f"timeout must be a number of seconds in (0, {MAX_GET_TIMEOUT_S:g}], "
                       f"got {raw!r}", param="timeout")
    return timeout
