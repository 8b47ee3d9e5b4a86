"""The aiohttp application factory: state on typed keys, every route in one place."""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from aiohttp import web

from parrot.manager import Manager
from parrot.server import middlewares, native_api, openai_api, status_api
from parrot.server.config import ServerConfig
from parrot.server.keys import CONFIG, ENGINES, MANAGER, METRICS
from parrot.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from parrot.engine import Engine


def create_app(engines: list[Engine], config: ServerConfig | None = None) -> web.Application:
    """An app serving already-started `engines`; whoever started them stops them."""
    if not engines:
        raise ValueError("create_app needs at least one engine")
    config = config or ServerConfig()
    app = web.Application(
        client_max_size=config.max_body_bytes,
        middlewares=[middlewares.count_requests, middlewares.errors, middlewares.api_key])
    app[ENGINES] = list(engines)
    app[CONFIG] = config
    app[METRICS] = ServerMetrics()
    app.cleanup_ctx.append(manager_lifetime)
    add_routes(app)
    return app


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", openai_api.completions)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_get("/v1/parrot/engine_stats", status_api.engine_stats)
    app.router.add_get("/health", status_api.health)
    app.router.add_get("/metrics", status_api.metrics)
    app.add_routes(native_api.routes)


async def manager_lifetime(app: web.Application) -> AsyncIterator[None]:
    """The Semantic-Variable manager lives as long as the app; closing it frees its KV."""
    manager = Manager(app[ENGINES])
    app[MANAGER] = manager
    try:
        yield
    finally:
        await manager.close()
