"""Run the HTTP server until SIGINT/SIGTERM: start engines, serve, drain, stop."""
from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from parrot.engine import Engine, EngineConfig
from parrot.server.app import create_app
from parrot.server.config import ServerConfig

log = logging.getLogger("parrot.serve")


async def serve(engine_configs: list[EngineConfig], config: ServerConfig, host: str,
                port: int) -> None:
    """Serve until a signal. In-flight requests get `config.shutdown_timeout` seconds to
    finish; the rest are cancelled (freeing their KV) before the engines stop."""
    engines: list[Engine] = []
    try:
        for engine_config in engine_configs:
            engines.append(await Engine(engine_config).start())
        runner = web.AppRunner(create_app(engines, config), handler_cancellation=True,
                               shutdown_timeout=1.0)  # the app drains its own requests
        await runner.setup()
        try:
            await web.TCPSite(runner, host, port).start()
            _log_listening(runner, engines, config)
            await _until_signal()
            log.info("shutting down")
        finally:
            await runner.cleanup()
    finally:
        await asyncio.gather(*(engine.stop() for engine in engines))
        log.info("stopped")


def run(main: Coroutine[Any, Any, None]) -> None:
    """Run `main` on uvloop when it is installed, else on the default loop."""
    with asyncio.Runner(loop_factory=_uvloop_factory()) as runner:
        runner.run(main)


def _uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


def _log_listening(runner: web.AppRunner, engines: list[Engine], config: ServerConfig) -> None:
    host, port = runner.addresses[0][:2]
    engine = engines[0]
    stats = engine.stats()
    cfg = engine.config
    log.info("Parrot listening on http://%s:%d serving %s as '%s' (%d engine(s), %s, %s); "
             "KV cache %d blocks x %d = %d tokens per engine, prefix caching %s; "
             "max context %d tokens; API key %s; event loop %s",
             host, port, engine.model_name, config.served_model_name or engine.model_name,
             len(engines), cfg.device, cfg.dtype, stats.num_blocks, cfg.block_size,
             stats.num_blocks * cfg.block_size, "on" if cfg.enable_prefix_caching else "off",
             engine.max_model_len, "required" if config.api_key else "off",
             type(asyncio.get_running_loop()).__module__.split(".")[0])
