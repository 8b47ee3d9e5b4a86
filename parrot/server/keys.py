"""Typed keys for the state the server keeps on its `web.Application`."""
from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from parrot.server.config import ServerConfig
from parrot.server.metrics import ServerMetrics

if TYPE_CHECKING:
    from parrot.engine.client import EngineClient
    from parrot.manager import Manager

ENGINES: web.AppKey[list["EngineClient"]] = web.AppKey("engines")
CONFIG: web.AppKey[ServerConfig] = web.AppKey("config")
METRICS: web.AppKey[ServerMetrics] = web.AppKey("metrics")
MANAGER: web.AppKey["Manager"] = web.AppKey("manager")
IN_FLIGHT: web.AppKey[set[asyncio.Task]] = web.AppKey("in_flight")  # running handlers
