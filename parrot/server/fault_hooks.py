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
the client, only mark requests that already exist. app.py registers them, only when enabled.
"""
from __future__ import annotations

import logging
from typing import Annotated

from aiohttp import web
from pydantic import Field

from parrot.engine.failure_injector import InjectedFailure  # noqa: F401 - what it raises
from parrot.manager.call_spec import validated
from parrot.manager.fields import Body, String
from parrot.server.keys import ENGINES
from parrot.server.validation import read_json_object

log = logging.getLogger(__name__)


class InjectFailureBody(Body):
    marker: Annotated[String, Field(min_length=1)]


async def inject_failure(request: web.Request) -> web.Response:
    marker = validated(InjectFailureBody, await read_json_object(request)).marker
    failed = 0
    for engine in request.app[ENGINES]:  # through the engine contract: local or remote
        if engine.is_alive:
            failed += await engine.inject_failure(marker, f"injected failure ({marker})")
    log.warning("test hook: injected a failure into %d request(s)", failed)
    return web.json_response({"failed": failed})
