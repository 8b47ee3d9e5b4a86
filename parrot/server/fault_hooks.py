"""Fault injection for tests: routes that exist only with `parrot serve --enable-test-hooks`.

`POST /v1/parrot/test/inject_failure {"marker": "text"}` makes every engine request whose
context's text contains `marker` (OpenAI requests and Semantic-Variable calls alike) fail
after its next step, through the engine's `FailureInjector` (`engine/failure_injector.py`):
it observes the engine's steps from outside the step loop (the engine client attaches it
on first use, in the engine's own process) and fails the marked requests through the
engine's own failure path, so a test sees exactly what a request failing inside the
engine does - it fails alone and the loop keeps running.
Answer: `{"failed": n}`, the number of requests marked (0 if none is queued or running yet;
poll). The routes sit behind the API key like every other route; they run no code sent by
the client, only mark requests that already exist.
"""
from __future__ import annotations

import logging

from aiohttp import web

from parrot.engine.failure_injector import InjectedFailure  # noqa: F401 - what it raises
from parrot.server.errors import ApiError
from parrot.server.keys import ENGINES
from parrot.server.validation import Fields, read_json_object

log = logging.getLogger(__name__)
routes = web.RouteTableDef()


@routes.post("/v1/parrot/test/inject_failure")
async def inject_failure(request: web.Request) -> web.Response:
    marker = Fields(await read_json_object(request)).string("marker")
    if not marker:
        raise ApiError("'marker' must be a non-empty string", param="marker")
    failed = 0
    for engine in request.app[ENGINES]:  # through the engine contract: local or remote
        if engine.is_alive:
            failed += await engine.inject_failure(marker, f"injected failure ({marker})")
    log.warning("test hook: injected a failure into %d request(s)", failed)
    return web.json_response({"failed": failed})


def add_test_hooks(app: web.Application) -> None:
    log.warning("test hooks are ENABLED (--enable-test-hooks): fault injection is open")
    app.add_routes(routes)
