"""The aiohttp application factory: state on typed keys, every route in one place."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from parrot.engine.local_engine import as_client
from parrot.manager import Manager
from parrot.server import (
    dashboard,
    fault_hooks,
    middlewares,
    native_api,
    openai_api,
    openapi,
    render_api,
    status_api,
)
from parrot.server.config import ServerConfig
from parrot.server.keys import CONFIG, ENGINES, IN_FLIGHT, MANAGER, METRICS
from parrot.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from parrot.engine import Engine
    from parrot.engine.client import EngineClient

log = logging.getLogger(__name__)


def create_app(engines: list[Engine | EngineClient],
               config: ServerConfig | None = None) -> web.Application:
    """An app serving already-started `engines` (in-process `Engine`s, or engine clients such
    as `RayEngine`s); whoever started them stops them. Everything past here drives them
    through the engine contract (parrot/engine/client.py)."""
    if not engines:
        raise ValueError("create_app needs at least one engine")
    config = config or ServerConfig()
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[middlewares.track_in_flight, middlewares.count_requests,
                     middlewares.errors, middlewares.api_key])
    app[ENGINES] = [as_client(engine, i) for i, engine in enumerate(engines)]
    app[CONFIG] = config
    app[METRICS] = ServerMetrics(openai_api.served_model(app, None), engines[0].max_model_len)
    app[IN_FLIGHT] = set()
    app.on_shutdown.append(drain_in_flight)
    app.cleanup_ctx.append(manager_lifetime)
    app.cleanup_ctx.append(metrics_lifetime)  # after the manager: it reads the manager
    add_routes(app)
    if config.enable_test_hooks:
        add_test_hooks(app)
    return app


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", openai_api.completions)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_get("/v1/parrot/engine_stats", status_api.engine_stats)
    app.router.add_get("/v1/parrot/app_prefixes", status_api.app_prefixes)
    app.router.add_post("/v1/parrot/render_chat", render_api.render_chat)
    app.router.add_get("/health", status_api.health)
    app.router.add_get("/metrics", status_api.metrics)
    app.router.add_get("/openapi.json", openapi.openapi_json)
    add_native_routes(app)
    add_dashboard_routes(app)


def add_native_routes(app: web.Application) -> None:
    """The Semantic-Variable API (native_api.py)."""
    sessions, variable = "/v1/sessions", "/v1/sessions/{sid}/variables/{vid}"
    app.router.add_post(sessions, native_api.open_session)
    app.router.add_delete(sessions + "/{sid}", native_api.close_session)
    app.router.add_post(sessions + "/{sid}/calls", native_api.submit_calls)
    app.router.add_post(sessions + "/{sid}/variables", native_api.add_variables)
    app.router.add_put(variable, native_api.set_variable)
    app.router.add_get(variable, native_api.get_variable)
    app.router.add_get(variable + "/stream", native_api.stream_variable)
    app.router.add_post(variable + "/stream", native_api.stream_variable)
    app.router.add_get(sessions + "/{sid}/graph", native_api.session_graph)


def add_dashboard_routes(app: web.Application) -> None:
    """The live dashboard: its page and assets (public), its JSON views and SSE stream."""
    app.router.add_get("/dashboard", dashboard.page)
    app.router.add_get(r"/dashboard/{name:dashboard\.(js|css)}", dashboard.asset)
    app.router.add_get("/v1/parrot/dashboard/engine", dashboard.engine_view)
    app.router.add_get("/v1/parrot/dashboard/sessions", dashboard.sessions_view)
    app.router.add_get("/v1/parrot/dashboard/events", dashboard.events)
    app.router.add_get("/v1/sessions/{sid}/dashboard", dashboard.session_view)
    app.router.add_get("/v1/sessions/{sid}/dashboard/variables/{vid}", dashboard.variable_value)


def add_test_hooks(app: web.Application) -> None:
    """Fault injection for tests (fault_hooks.py), only with --enable-test-hooks."""
    log.warning("test hooks are ENABLED (--enable-test-hooks): fault injection is open")
    app.router.add_post("/v1/parrot/test/inject_failure", fault_hooks.inject_failure)


async def manager_lifetime(app: web.Application) -> AsyncIterator[None]:
    """The Semantic-Variable manager lives as long as the app; closing it frees its KV."""
    manager = Manager(app[ENGINES], limits=app[CONFIG].limits)
    app[MANAGER] = manager
    try:
        yield
    finally:
        await manager.close()


async def metrics_lifetime(app: web.Application) -> AsyncIterator[None]:
    """While the app runs, /metrics reads its engines and manager and times engine queues;
    the engines outlive the app, so their observers are removed again."""
    with app[METRICS].watching(app[ENGINES], app[MANAGER]):
        yield


async def drain_in_flight(app: web.Application) -> None:
    """On shutdown (new connections already refused): let running requests finish for
    `shutdown_timeout` seconds, then cancel the rest, which frees their KV."""
    tasks = set(app[IN_FLIGHT])
    if not tasks:
        return
    log.info("waiting for %d in-flight request(s)", len(tasks))
    _, pending = await asyncio.wait(tasks, timeout=app[CONFIG].shutdown_timeout)
    if pending:
        log.info("cancelling %d request(s) still running", len(pending))
        for task in pending:
            task.cancel()
        await asyncio.wait(pending)
