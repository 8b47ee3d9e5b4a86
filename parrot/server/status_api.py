"""Handlers that report on the server: /health, /metrics, /v1/parrot/engine_stats,
/v1/parrot/app_prefixes."""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any

from aiohttp import web

from parrot.server.keys import ENGINES, MANAGER, METRICS
from parrot.server.metrics import CONTENT_TYPE


async def health(request: web.Request) -> web.Response:
    """"ok" with every engine alive, "degraded" (still 200) with some lost, 503 with none."""
    engines = [{"index": i, "name": e.name, "alive": e.is_alive,
                **({"error": e.error} if e.error else {})}
               for i, e in enumerate(request.app[ENGINES])]
    num_alive = sum(e["alive"] for e in engines)
    status = "ok" if num_alive == len(engines) else "degraded" if num_alive else "unavailable"
    return web.json_response({"status": status, "engines": engines},
                             status=200 if num_alive else 503)


async def metrics(request: web.Request) -> web.Response:
    """Prometheus text exposition: what the server measured, and the engines' and manager's
    state read now (parrot/server/metrics.py; the names are in docs/metrics.md)."""
    return web.Response(body=request.app[METRICS].render(),
                        headers={"Content-Type": CONTENT_TYPE})


async def engine_stats(request: web.Request) -> web.Response:
    """Every engine's stats under "engines", and their numeric totals at the top level."""
    per_engine = [stats_to_json(engine.stats()) for engine in request.app[ENGINES]]
    return web.json_response({**sum_numeric(per_engine), "engines": per_engine})


async def app_prefixes(request: web.Request) -> web.Response:
    """The applications' constant prompts the manager keeps (manager/app_prefixes.py)."""
    apps = request.app[MANAGER].apps
    return web.json_response({"app_prefixes": apps.to_json(), "num_tokens": apps.num_tokens})


def stats_to_json(stats: Any) -> dict[str, Any]:
    raw = {f.name: getattr(stats, f.name) for f in dataclasses.fields(stats)} \
        if dataclasses.is_dataclass(stats) else dict(stats)
    return {k: _jsonable(v) for k, v in raw.items()}


def sum_numeric(dicts: list[dict[str, Any]]) -> dict[str, Any]:
    totals: dict[str, Any] = {}
    for d in dicts:
        for k, v in d.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                totals[k] = totals.get(k, 0) + v
    return totals


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value):
        return stats_to_json(value)
    if isinstance(value, Iterable):
        return [_jsonable(v) for v in value]
    return str(value)
