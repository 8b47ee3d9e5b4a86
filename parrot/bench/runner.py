"""Runs workloads in every mode: servers one at a time, repeats, counters around each run.

Phases: the modes that share a server run together. By default a Parrot server with the
prefix cache on serves `parrot` and `baseline+cache` (alternating which goes first, repeat
by repeat), then it stops and one with `--no-prefix-caching` serves `baseline`; so two
servers never fight for the cores. Every run gets a fresh tag (no cross-run cache hits).
"""
from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from parrot.bench import servers
from parrot.bench.baseline_runtime import BaselineRuntime
from parrot.bench.parrot_runtime import ParrotRuntime
from parrot.bench.runtime import Clock, Sample
from parrot.bench.workload import Workload

PARROT, BASELINE, BASELINE_CACHE = "parrot", "baseline", "baseline+cache"
MODES = (PARROT, BASELINE, BASELINE_CACHE)


@dataclass
class Options:
    modes: tuple[str, ...] = MODES
    repeats: int = 3
    url: str | None = None  # a running Parrot server (prefix cache on)
    baseline_url: str | None = None  # any OpenAI-compatible server for the baseline modes
    baseline_model: str | None = None
    dtype: str = "bfloat16"
    model: str | None = None
    serve_args: list[str] = field(default_factory=list)
    log_dir: Path | None = None
    progress: bool = True


@dataclass
class Phase:
    """Modes served by one server: `url` if given, else a started one."""

    modes: list[str]
    url: str | None
    prefix_caching: bool  # of the server to start (when url is None)


@dataclass
class RunResult:
    workload: str
    mode: str
    repeat: int
    tag: str
    seconds: float
    samples: list[Sample]
    engine: dict[str, int] | None  # counter deltas (Parrot servers)
    usage: dict[str, int] | None  # summed OpenAI usage (baseline modes)
    used_blocks_after: int | None
    loadavg: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = [s._asdict() for s in self.samples]
        return data


def plan(options: Options) -> list[Phase]:
    phases: dict[Any, Phase] = {}
    for mode in MODES:  # a fixed order: the cache-on server first
        if mode not in options.modes:
            continue
        if mode == PARROT:
            url, cache = options.url, True
        elif mode == BASELINE_CACHE:
            url, cache = options.baseline_url or options.url, True
        else:
            url, cache = options.baseline_url, False
        key = url or ("start", cache)
        phases.setdefault(key, Phase([], url, cache)).modes.append(mode)
    return list(phases.values())


async def run_all(workloads: list[Workload], options: Options) -> list[RunResult]:
    import aiohttp
    from tqdm import tqdm

    results: list[RunResult] = []
    phases = plan(options)
    total = len(workloads) * options.repeats * sum(len(p.modes) for p in phases)
    bar = tqdm(total=total, unit="run", desc="bench apps", disable=not options.progress,
               dynamic_ncols=True)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=None)) as http:
        for phase in phases:
            with _server(phase, options, bar) as url:
                model = options.baseline_model or await servers.served_model(http, url)
                await servers.warm_up(http, url, model, native=PARROT in phase.modes)
                for workload in workloads:
                    for repeat in range(options.repeats):
                        order = phase.modes if repeat % 2 == 0 else phase.modes[::-1]
                        for mode in order:
                            bar.set_description(f"{workload.name} {mode} #{repeat + 1}")
                            result = await run_once(workload, mode, repeat, url, http, model)
                            results.append(result)
                            bar.set_postfix_str(f"last {result.seconds:.1f}s")
                            bar.update()
    bar.close()
    return results


async def run_once(workload: Workload, mode: str, repeat: int, url: str, http: Any,
                   model: str | None) -> RunResult:
    """One run of `workload` in `mode`, with engine counters read around it."""
    tag = f"{workload.name}-{mode}-{repeat}-{secrets.token_hex(4)}"
    before = await servers.wait_idle(http, url)
    clock = Clock()
    runtime = ParrotRuntime(url, clock) if mode == PARROT else \
        BaselineRuntime(url, mode, clock, http, model)
    start = time.perf_counter()
    await workload.run(runtime, tag)
    seconds = time.perf_counter() - start
    after = await servers.wait_idle(http, url)
    usage = asdict(runtime.usage) if isinstance(runtime, BaselineRuntime) else None
    return RunResult(workload.name, mode, repeat, tag, seconds, runtime.samples,
                     servers.counter_delta(before, after), usage,
                     None if after is None else after.get("num_used_blocks"),
                     os.getloadavg()[0])


@contextlib.contextmanager
def _server(phase: Phase, options: Options, bar: Any):
    if phase.url is not None:
        yield phase.url.rstrip("/")
        return
    label = "on" if phase.prefix_caching else "off"
    bar.write(f"starting parrot serve (prefix cache {label}) for {', '.join(phase.modes)}")
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="parrot-bench-"))
    bar.write(f"server log: {log_dir}")
    server = servers.start_parrot(prefix_caching=phase.prefix_caching, dtype=options.dtype,
                                  model=options.model, extra_args=options.serve_args,
                                  log_dir=log_dir)
    try:
        yield server.url
    finally:
        server.stop()


def run(workloads: list[Workload], options: Options) -> list[RunResult]:
    return asyncio.run(run_all(workloads, options))
