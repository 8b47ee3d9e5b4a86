"""The native Parrot API: sessions of Semantic Variables (thin handlers over the manager).

Every route under /v1/sessions/{sid} needs the session's token (session_token.py). Request
bodies are the pydantic models of manager/native_bodies.py; shapes of every request and
answer: docs/semantic-variables.md and /openapi.json. Routes are registered in app.py.
"""
from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import aclosing

from aiohttp import web

from parrot.manager import Manager, ManagerError
from parrot.manager.call_spec import validated
from parrot.manager.native_bodies import (DEFAULT_GET_TIMEOUT_S, MAX_GET_TIMEOUT_S, CallsBody,
                                          OpenSessionBody, SetVariableBody, StreamBody,
                                          StreamSpec, VariablesBody)
from parrot.manager.session import Session
from parrot.protocol.criteria import Criteria
from parrot.server.errors import ApiError, error_body
from parrot.server.keys import MANAGER
from parrot.server.session_token import request_session
from parrot.server.sse import event_bytes, open_stream
from parrot.server.validation import read_json_object


async def open_session(request: web.Request) -> web.Response:
    """Open a session; optionally add `variables` and `calls` and wait for `get` (one round
    trip for a whole small program). A refused batch closes the new session again."""
    raw = await read_json_object(request) if request.can_read_body else {}
    body = validated(OpenSessionBody, raw)  # all checked before anything opens
    if body.get is not None and body.stream is not None:
        raise ApiError("give 'get' or 'stream', not both", param="stream")
    manager = _manager(request)
    session = manager.open_session(body.idle_timeout)
    try:
        _add_graph(manager, session, body)
    except Exception:  # a refused batch (or a bug): the new session must not linger
        await manager.close_session(session, "opening request refused")
        raise
    opened = {"session_id": session.id, "token": session.token,
              "idle_timeout": session.idle_timeout}
    if body.stream is not None:
        return await _stream_opened(request, manager, session, opened, body.stream)
    if body.get is None:
        return web.json_response(opened, status=201)
    wanted = body.get
    try:
        value = await manager.get_variable(session, wanted.var, Criteria.parse(wanted.criteria),
                                           wanted.timeout)
    except ManagerError as e:  # the session stays open: the body says which it is
        error = ApiError.from_manager(e)
        return web.json_response({**error.to_json(), **opened}, status=error.status)
    except asyncio.CancelledError:  # the client left without learning the session's id
        await asyncio.shield(manager.close_session(session, "client disconnected"))
        raise
    return web.json_response({**opened, "id": wanted.var, "value": value}, status=201)


async def close_session(request: web.Request) -> web.Response:
    session = request_session(request)
    await _manager(request).close_session(session)
    return web.json_response({"session_id": session.id, "closed": True})


async def submit_calls(request: web.Request) -> web.Response:
    session = request_session(request)
    body = validated(CallsBody, await read_json_object(request))
    return web.json_response({"calls": _manager(request).submit_calls(session, body)})


async def add_variables(request: web.Request) -> web.Response:
    session = request_session(request)
    variables = _manager(request).add_variables(session, await read_json_object(request))
    return web.json_response({"variables": variables})


async def set_variable(request: web.Request) -> web.Response:
    session = request_session(request)
    body = validated(SetVariableBody, await read_json_object(request))
    _manager(request).set_variable(session, request.match_info["vid"], body.value)
    return web.json_response({"id": request.match_info["vid"], "ready": True})


async def get_variable(request: web.Request) -> web.Response:
    session, var_id = request_session(request), request.match_info["vid"]
    value = await _manager(request).get_variable(session, var_id, _criteria(request),
                                                 _timeout(request))
    return web.json_response({"id": var_id, "value": value})


async def stream_variable(request: web.Request) -> web.StreamResponse:
    """GET: the variable's events. POST: first add the body's queued `variables` and `calls`
    (the client's submit and stream in one round trip). The headers go out once the
    variable is known (an unknown one is a plain 404), so a POST's sender learns at once
    that its graph landed; everything after that is in-band."""
    session, var_id = request_session(request), request.match_info["vid"]
    manager, criteria = _manager(request), _criteria(request)
    if request.method == "POST" and request.can_read_body:
        _add_graph(manager, session, validated(StreamBody, await read_json_object(request)))
    events = manager.stream_variable(session, var_id, criteria)  # unknown: 404
    return await _write_events(await open_stream(request), var_id, events)


async def _stream_opened(request: web.Request, manager: Manager, session: Session, opened: dict,
                         wanted: StreamSpec) -> web.StreamResponse:
    """An opening request's stream: a `session` event, then the variable's events. An
    unknown variable answers 404 plus the session's id (it stays open, as after a failed get)."""
    try:
        events = manager.stream_variable(session, wanted.var, Criteria.parse(wanted.criteria))
    except ManagerError as e:
        error = ApiError.from_manager(e)
        return web.json_response({**error.to_json(), **opened}, status=error.status)
    response = await open_stream(request)
    try:
        await response.write(event_bytes(opened, "session"))
    except ConnectionResetError:  # the client left without learning the session's id
        await manager.close_session(session, "client disconnected")
        return response
    return await _write_events(response, wanted.var, events)


async def _write_events(response: web.StreamResponse, var_id: str,
                        events: AsyncIterator[tuple[str, str]]) -> web.StreamResponse:
    try:
        async with aclosing(events):
            async for event in events:
                await response.write(_event(var_id, event))
    except ConnectionResetError:  # the client left; the call itself keeps running
        return response
    except ManagerError as e:  # the headers are out: report it in-band
        await response.write(event_bytes({**ApiError.from_manager(e).to_json(), "status": e.status},
                                         "error"))
    await response.write_eof()
    return response


async def session_graph(request: web.Request) -> web.Response:
    return web.json_response(_manager(request).graph_json(request_session(request)))


def _add_graph(manager: Manager, session: Session, body: OpenSessionBody | StreamBody) -> None:
    """A body's variables, then its calls (their references then resolve)."""
    if body.variables is not None:
        manager.add_variables(session, VariablesBody.model_construct(variables=body.variables))
    if body.calls is not None:
        manager.submit_calls(session, CallsBody.model_construct(calls=body.calls))


def _event(var_id: str, event: tuple[str, str]) -> bytes:
    kind, text = event
    if kind == "delta":
        data = {"text": text}
    elif kind == "done":
        data = {"id": var_id, "value": text}
    else:
        data = {**error_body(f"variable '{var_id}' was not produced: {text}", status=422),
                "status": 422}
    return event_bytes(data, kind)


def _manager(request: web.Request) -> Manager:
    return request.app[MANAGER]


def _criteria(request: web.Request) -> Criteria:
    try:
        return Criteria.parse(request.query.get("criteria"))
    except ValueError as e:
        raise ApiError(str(e), param="criteria") from None


def _timeout(request: web.Request) -> float:
    raw = request.query.get("timeout", str(DEFAULT_GET_TIMEOUT_S))
    try:
        timeout = float(raw)
    except ValueError:
        timeout = math.nan
    if not 0 < timeout <= MAX_GET_TIMEOUT_S:
        raise ApiError(f"timeout must be a number of seconds in (0, {MAX_GET_TIMEOUT_S:g}], "
                       f"got {raw!r}", param="timeout")
    return timeout

