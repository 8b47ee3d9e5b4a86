"""Run the HTTP server until SIGINT/SIGTERM: start engines, serve, drain, stop.

Engines run in this process, or, with a `RayDeployment`, as Ray actors on a Ray cluster
(docs/ray.md); either way the app drives them through the engine contract.
"""
from __future__ import annotations

import asyncio
import gc
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any, NamedTuple

from aiohttp import web

from parrot.engine import Engine, EngineConfig
from parrot.server.app import create_app
from parrot.server.config import ServerConfig

log = logging.getLogger("parrot.serve")


class RayDeployment(NamedTuple):
    """`parrot serve --ray-address ...`: engines as Ray actors (parrot/engine/ray_placement.py)."""

    address: str  # "auto" or HOST:PORT of a running Ray cluster
    engines_per_node: int | None = None
    cpus_per_engine: float = 1.0


async def serve(engine_configs: list[EngineConfig], config: ServerConfig, host: str,
                port: int, ray: RayDeployment | None = None) -> None:
    """Serve until a signal. In-flight requests get `config.shutdown_timeout` seconds to
    finish; the rest are cancelled (freeing their KV) before the engines stop."""
    engines: list[Any] = []
    try:
        if ray is not None:
            engines = await _start_ray_engines(engine_configs, ray)
        for engine_config in engine_configs if ray is None else ():
            engines.append(await Engine(engine_config).start())
        runner = web.AppRunner(create_app(engines, config), handler_cancellation=True,
                               shutdown_timeout=1.0)  # the app drains its own requests
        await runner.setup()
        freeze_startup_heap()
        try:
            await web.TCPSite(runner, host, port).start()
            _log_listening(runner, engines, config)
            await _until_signal()
            log.info("shutting down")
        finally:
            await runner.cleanup()
    finally:
        await asyncio.gather(*(engine.stop() for engine in engines))
        if ray is not None:
            import ray as ray_module

            ray_module.shutdown()
        log.info("stopped")


def freeze_startup_heap() -> None:
    """Take what start-up made (modules, the model's modules, the tokenizer: ~300,000
    objects) out of the cyclic GC's reach: a full collection over it took 230-290 ms on a
    2-core machine, a stall of every running request; then only what serving allocates is
    scanned (as vLLM's engine core freezes its start-up heap)."""
    gc.collect()
    gc.freeze()


async def _start_ray_engines(engine_configs: list[EngineConfig], ray: RayDeployment) -> list:
    try:
        import ray as ray_module
    except ImportError:
        raise SystemExit("--ray-address needs Ray: pip install 'parrot-serve[ray]'") from None
    from parrot.engine.ray_placement import start_ray_engines

    ray_module.init(address=ray.address, log_to_driver=False)
    log.info("connected to Ray at %s: %s", ray.address, ray_module.cluster_resources())
    return await start_ray_engines(engine_configs[0], len(engine_configs),
                                   ray.engines_per_node, ray.cpus_per_engine)


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


def _log_listening(runner: web.AppRunner, engines: list[Any], config: ServerConfig) -> None:
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
