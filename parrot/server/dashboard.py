"""The live dashboard: one static page, a JSON endpoint behind each of its views, and one SSE
stream pushing them all (docs/dashboard.md). Routes are registered in app.py.

Access follows the native API. With a server API key every route here needs it (the
`api_key` middleware) except the page and its two assets, which hold no data. A session's
views need its token (read by session_token.py) and answer 404 for an unknown session or a wrong token. The
sessions list holds ids and counts only, never names, prompts or values.
"""
from __future__ import annotations

import asyncio
import math
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from parrot.manager import Session, snapshot
from parrot.server.errors import ApiError
from parrot.server.keys import ENGINES, IN_FLIGHT, MANAGER
from parrot.server.session_token import request_session
from parrot.server.sse import event_bytes, open_stream
from parrot.server.status_api import stats_to_json, sum_numeric

STATIC_DIR = Path(__file__).parent / "static"
ASSETS = {"dashboard.js": "application/javascript", "dashboard.css": "text/css"}
PAGE_PATHS = ("/dashboard", *(f"/dashboard/{name}" for name in ASSETS))  # public: no data
DEFAULT_INTERVAL_S = 0.5
MIN_INTERVAL_S, MAX_INTERVAL_S = 0.1, 10.0
NO_CACHE = {"Cache-Control": "no-cache"}



async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "dashboard.html", headers=NO_CACHE)


async def asset(request: web.Request) -> web.FileResponse:
    name = request.match_info["name"]
    return web.FileResponse(STATIC_DIR / name,
                            headers={**NO_CACHE, "Content-Type": ASSETS[name]})


async def engine_view(request: web.Request) -> web.Response:
    return web.json_response(engine_json(request.app[ENGINES]))


async def sessions_view(request: web.Request) -> web.Response:
    return web.json_response(sessions_json(request.app))


async def session_view(request: web.Request) -> web.Response:
    session = request_session(request)
    return web.json_response(session_json(request.app, session))


async def variable_value(request: web.Request) -> web.Response:
    session = request_session(request)
    return web.json_response(snapshot.variable_value(session, request.match_info["vid"]))


async def events(request: web.Request) -> web.StreamResponse:
    """SSE: `engine` every tick; `sessions`, and `session` (with `?session=<id>` and its
    token) when they change; `session_closed` once if the watched session goes away."""
    sid = request.query.get("session")
    session = request_session(request, sid) if sid else None  # a bad token: a plain 404
    interval = _interval(request)
    # A viewer's stream never ends by itself: shutdown cancels it rather than drain it.
    request.app[IN_FLIGHT].discard(asyncio.current_task())
    response = await open_stream(request)
    last: dict[str, bytes] = {}
    try:
        while True:
            await _send(response, last, "engine", engine_json(request.app[ENGINES]), force=True)
            await _send(response, last, "sessions", sessions_json(request.app))
            if session is not None and session.is_closed:
                await _send(response, last, "session_closed", {"session_id": session.id})
                session = None
            if session is not None:
                await _send(response, last, "session", session_json(request.app, session))
            await asyncio.sleep(interval)
    except ConnectionResetError:  # the viewer left
        return response


# -- the JSON views ---------------------------------------------------------------------
def engine_json(engines: list[Any]) -> dict:
    """Each engine's counters plus its prefix-cache hit rate, and their totals."""
    per_engine = []
    for index, engine in enumerate(engines):
        stats = stats_to_json(engine.stats())
        per_engine.append({"index": index, "model": engine.model_name, "name": engine.name,
                           "alive": engine.is_alive, "error": engine.error,
                           **stats, "prefix_hit_rate": _hit_rate(stats)})
    totals = {k: v for k, v in sum_numeric(per_engine).items()
              if k not in ("index", "prefix_hit_rate")}
    return {"time": time.time(), "engines": per_engine,
            "totals": {**totals, "prefix_hit_rate": _hit_rate(totals)}}


def sessions_json(app: web.Application) -> dict:
    sessions = snapshot.sessions_summary(app[MANAGER].sessions.values())
    return {"num_sessions": len(sessions), "sessions": sessions}


def session_json(app: web.Application, session: Session) -> dict:
    manager = app[MANAGER]
    return snapshot.session_view(session, manager.engines, manager.executor.runs)


def _hit_rate(stats: dict) -> float | None:
    """Prompt tokens found cached (prefix cache or fork) over all prompt tokens."""
    cached, computed = stats.get("num_cached_tokens", 0), stats.get("num_prefill_tokens", 0)
    return round(cached / (cached + computed), 4) if cached + computed else None


# -- helpers ----------------------------------------------------------------------------
async def _send(response: web.StreamResponse, last: dict[str, bytes], event: str,
                data: dict, force: bool = False) -> None:
    """Write `event` unless its data is what this viewer got last time."""
    chunk = event_bytes(data, event, compact=True)
    if force or last.get(event) != chunk:
        last[event] = chunk
        await response.write(chunk)


def _interval(request: web.Request) -> float:
    raw = request.query.get("interval", str(DEFAULT_INTERVAL_S))
    try:
        interval = float(raw)
    except ValueError:
        interval = math.nan
    if not MIN_INTERVAL_S <= interval <= MAX_INTERVAL_S:
        raise ApiError(f"interval must be a number of seconds in [{MIN_INTERVAL_S:g}, "
                       f"{MAX_INTERVAL_S:g}], got {raw!r}", param="interval")
    return interval
