"""An app with only the native API, over FakeEngine - for UNIT tests of the HTTP layer."""
from __future__ import annotations

from aiohttp import web

from parrot.manager import Manager
from parrot.server import middlewares
from parrot.server.app import add_native_routes
from parrot.server.config import ServerConfig
from parrot.server.keys import CONFIG, MANAGER
from tests.manager.fake_engine import FakeEngine


def make_fake_app(engines: list[FakeEngine] | None = None, *,
                  request_log: list[str] | None = None, **manager_kwargs) -> web.Application:
    """`request_log`, if given, receives "METHOD /path" of every request the app serves."""
    extra = [] if request_log is None else [_logging(request_log)]
    app = web.Application(middlewares=[*extra, middlewares.errors])
    app[CONFIG] = ServerConfig()
    app[MANAGER] = Manager(engines or [FakeEngine()], **manager_kwargs)
    add_native_routes(app)

    async def close_manager(app: web.Application) -> None:
        await app[MANAGER].close()

    app.on_cleanup.append(close_manager)
    return app


def _logging(log: list[str]):
    @web.middleware
    async def record(request: web.Request, handler) -> web.StreamResponse:
        log.append(f"{request.method} {request.path}")
        return await handler(request)
    return record
