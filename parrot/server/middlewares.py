"""Request middlewares: in-flight tracking, request counting, errors, API-key check."""
from __future__ import annotations

import asyncio
import hmac
import logging

from aiohttp import web

from parrot.server.dashboard import PAGE_PATHS
from parrot.manager.errors import ManagerError
from parrot.server.errors import ApiError, error_body
from parrot.server.keys import CONFIG, IN_FLIGHT, METRICS

log = logging.getLogger(__name__)

# Open even with an API key: liveness, the API's schema and the dashboard page hold no data.
# /metrics is not here: its counters describe every tenant's traffic.
PUBLIC_PATHS = frozenset({"/health", "/openapi.json", *PAGE_PATHS})


@web.middleware
async def track_in_flight(request: web.Request, handler) -> web.StreamResponse:
    """Remember the running handler tasks, so shutdown can drain and then cancel them."""
    task = asyncio.current_task()
    in_flight = request.app[IN_FLIGHT]
    in_flight.add(task)
    try:
        return await handler(request)
    finally:
        in_flight.discard(task)


@web.middleware
async def errors(request: web.Request, handler) -> web.StreamResponse:
    """Every failure becomes a JSON error body; tracebacks stay in the log. The one place a
    manager refusal (`ManagerError`) becomes its HTTP status."""
    try:
        return await handler(request)
    except ApiError as e:
        return e.to_response()
    except ManagerError as e:
        return ApiError.from_manager(e).to_response()
    except web.HTTPException as e:
        if e.status < 400:
            raise
        custom = e.text and e.text != f"{e.status}: {e.reason}"
        message = e.text if custom else f"{e.reason}: {request.method} {request.path}"
        return web.json_response(error_body(message, status=e.status), status=e.status)
    except Exception:  # noqa: BLE001 - the server keeps serving; the log keeps the trace
        log.exception("unhandled error serving %s %s", request.method, request.path)
        return web.json_response(error_body("internal server error", status=500), status=500)


@web.middleware
async def api_key(request: web.Request, handler) -> web.StreamResponse:
    """With an API key configured, every path but PUBLIC_PATHS needs it (constant-time)."""
    expected = request.app[CONFIG].api_key
    if expected and request.path not in PUBLIC_PATHS:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        given_bytes = given.strip().encode("utf-8", "surrogateescape")  # any header bytes
        if scheme.lower() != "bearer" or not hmac.compare_digest(
                given_bytes, expected.encode()):
            raise ApiError("Invalid or missing API key (send 'Authorization: Bearer <key>')",
                           status=401, code="invalid_api_key")
    return await handler(request)


@web.middleware
async def count_requests(request: web.Request, handler) -> web.StreamResponse:
    """Count answered requests by route and status (outside `errors`: sees the final one)."""
    response = await handler(request)
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[METRICS].count_http(route, response.status)
    return response
