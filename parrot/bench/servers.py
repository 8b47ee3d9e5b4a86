"""The servers a benchmark talks to: started ones (`parrot serve` subprocesses) or given URLs.

Also the few HTTP reads the runner needs around a run: the engine counters
(`/v1/parrot/engine_stats`, Parrot only), the served model's name, a warm-up request.
"""
from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import parrot as P
from parrot.bench.launcher import ServerProcess

COUNTERS = ("num_prefill_tokens", "num_cached_tokens", "num_generated_tokens",
            "num_decode_tokens", "num_preemptions", "num_requests_finished", "num_steps")


def start_parrot(*, prefix_caching: bool, dtype: str, model: str | None,
                 extra_args: list[str], log_dir: Path) -> ServerProcess:
    """Start `parrot serve` and wait until it is healthy (first start loads the model)."""
    args = ["--dtype", dtype, *(["--model", model] if model else []), *extra_args]
    if not prefix_caching:
        args.append("--no-prefix-caching")
    log_dir.mkdir(parents=True, exist_ok=True)
    name = "serve-cache-on.log" if prefix_caching else "serve-cache-off.log"
    server = ServerProcess(args, log_path=log_dir / name)
    server.start()
    return server


async def engine_stats(http: Any, url: str) -> dict[str, Any] | None:
    """Parrot's engine counters (summed over engines), or None for other servers."""
    async with http.get(url + "/v1/parrot/engine_stats") as resp:
        if resp.status != 200:
            return None
        return await resp.json()


def counter_delta(before: dict | None, after: dict | None) -> dict[str, int] | None:
    if before is None or after is None:
        return None
    return {k: after.get(k, 0) - before.get(k, 0) for k in COUNTERS}


async def wait_idle(http: Any, url: str, timeout: float = 5.0) -> dict[str, Any] | None:
    """Stats once nothing runs or waits (session cleanup is asynchronous), or at timeout."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        stats = await engine_stats(http, url)
        if stats is None or (stats.get("num_running", 0) == 0
                             and stats.get("num_waiting", 0) == 0
                             and stats.get("num_used_blocks", 0) == 0):
            return stats
        if asyncio.get_running_loop().time() > deadline:
            return stats
        await asyncio.sleep(0.05)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU seconds of process `pid` so far (all its threads), or None."""
    if pid is None:
        return None
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.Error:
        return None
    return times.user + times.system


async def served_model(http: Any, url: str) -> str | None:
    async with http.get(url + "/v1/models") as resp:
        if resp.status != 200:
            return None
        data = (await resp.json()).get("data") or []
        return data[0]["id"] if data else None


async def warm_up(http: Any, url: str, model: str | None, native: bool) -> None:
    """One small completion (and one Semantic-Variable call on a Parrot server) so the
    first measured run pays no first-request costs."""
    body = {"prompt": "Warm-up: say hello.", "max_tokens": 8, "temperature": 0,
            "ignore_eos": True, **({"model": model} if model else {})}
    async with http.post(url + "/v1/completions", json=body) as resp:
        if resp.status != 200:
            raise RuntimeError(f"warm-up request to {url} failed: HTTP {resp.status}: "
                               f"{await resp.text()}")
        await resp.read()
    if native:
        @P.semantic_function(max_tokens=8, ignore_eos=True)
        def hello(name, reply):
            """Say hello to {{input:name}}: {{output:reply}}"""

        async with P.Session(url):
            await hello("the benchmark").aget()
