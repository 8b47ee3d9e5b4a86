"""Runs workloads in every mode: servers, repeats, counters around each run.

Servers: by default a Parrot server with the prefix cache on (for `parrot` and
`baseline+cache`) and one with `--no-prefix-caching` (for `baseline`), started one after
the other, each loading its model alone. Both then stay up, but only one is ever busy: the
runs are sequential, and an idle server uses no CPU (measured: 0.0 CPU-s in 10 s).
Runs interleave the modes, repeat by repeat, rotating which goes first, so that a change
in the machine's background load hits every mode alike; the first full run used one
server phase after the other, and load drift between the phases (load average 3 vs 5)
swamped every ratio. Every run gets a fresh tag (no cross-run cache hits), and besides
wall time it records the server's CPU seconds, which contention inflates far less.
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
from parrot.bench.baseline_runtime import BaselineRuntime, local_chat_template
from parrot.bench.latency_proxy import LatencyProxy
from parrot.bench.parrot_runtime import ParrotRuntime
from parrot.bench.runtime import Clock, Sample
from parrot.bench.workload import Workload
from parrot.protocol.chat_render import RenderChat

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
    rtt_ms: float = 0.0  # emulated client-server round trip (a LatencyProxy per server)


@dataclass
class Target:
    """A server and the modes it serves: `url` if given, else one the runner starts."""

    modes: list[str]
    url: str | None
    prefix_caching: bool  # of the server to start (when url is None)
    pid: int | None = None  # of a started server (for its CPU time)
    model: str | None = None
    client_url: str | None = None  # where the workload's clients connect (a proxy with --rtt-ms)


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
    server_cpu_s: float | None  # CPU seconds of a started server during the run
    loadavg: float

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = [s._asdict() for s in self.samples]
        return data


def plan(options: Options) -> list[Target]:
    targets: dict[Any, Target] = {}
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
        targets.setdefault(key, Target([], url, cache)).modes.append(mode)
    return list(targets.values())


def run_order(modes: list[str], repeat: int) -> list[str]:
    """The modes rotated by `repeat`: each mode goes first equally often."""
    k = repeat % len(modes)
    return modes[k:] + modes[:k]


async def run_all(workloads: list[Workload], options: Options) -> list[RunResult]:
    import aiohttp
    from tqdm import tqdm

    targets = plan(options)
    by_mode = {mode: t for t in targets for mode in t.modes}
    modes = [m for m in MODES if m in by_mode]
    # the baseline client renders role blocks with the model's chat template, as Parrot does
    render_chat = local_chat_template(options.model) if set(modes) - {PARROT} else None
    results: list[RunResult] = []
    bar = tqdm(total=len(workloads) * options.repeats * len(modes), unit="run",
               desc="bench apps", disable=not options.progress, dynamic_ncols=True)
    connector = aiohttp.TCPConnector(limit=0)
    async with contextlib.AsyncExitStack() as stack:
        http = await stack.enter_async_context(aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=None)))
        for target in targets:  # one at a time: each loads its model alone
            stack.enter_context(_server(target, options, bar))
            target.model = options.baseline_model or await servers.served_model(http, target.url)
            await servers.warm_up(http, target.url, target.model, native=PARROT in target.modes)
            target.client_url = target.url
            if options.rtt_ms > 0:
                proxy = await stack.enter_async_context(LatencyProxy(target.url, options.rtt_ms / 1000))
                target.client_url = proxy.url
        for workload in workloads:
            for repeat in range(options.repeats):
                for mode in run_order(modes, repeat):
                    bar.set_description(f"{workload.name} {mode} #{repeat + 1}")
                    result = await run_once(workload, mode, repeat, by_mode[mode], http,
                                            render_chat)
                    results.append(result)
                    bar.set_postfix_str(f"last {result.seconds:.1f}s")
                    bar.update()
    bar.close()
    return results


async def run_once(workload: Workload, mode: str, repeat: int, target: Target,
                   http: Any, render_chat: RenderChat | None = None) -> RunResult:
    """One run of `workload` in `mode`, with engine counters and CPU time read around it."""
    url = target.url
    tag = f"{workload.name}-{mode}-{repeat}-{secrets.token_hex(4)}"
    before = await servers.wait_idle(http, url)
    cpu_before = servers.cpu_seconds(target.pid)
    clock = Clock()
    client_url = target.client_url or url  # counters and idle checks go to the server directly
    runtime = ParrotRuntime(client_url, clock) if mode == PARROT else \
        BaselineRuntime(client_url, mode, clock, http, target.model, render_chat)
    start = time.perf_counter()
    await workload.run(runtime, tag)
    seconds = time.perf_counter() - start
    after = await servers.wait_idle(http, url)
    cpu_after = servers.cpu_seconds(target.pid)
    usage = asdict(runtime.usage) if isinstance(runtime, BaselineRuntime) else None
    return RunResult(workload.name, mode, repeat, tag, seconds, runtime.samples,
                     servers.counter_delta(before, after), usage,
                     None if after is None else after.get("num_used_blocks"),
                     None if cpu_before is None else cpu_after - cpu_before,
                     os.getloadavg()[0])


@contextlib.contextmanager
def _server(target: Target, options: Options, bar: Any):
    if target.url is not None:
        target.url = target.url.rstrip("/")
        yield
        return
    label = "on" if target.prefix_caching else "off"
    log_dir = options.log_dir or Path(tempfile.mkdtemp(prefix="parrot-bench-"))
    bar.write(f"starting parrot serve (prefix cache {label}) for {', '.join(target.modes)}; "
              f"log in {log_dir}")
    server = servers.start_parrot(prefix_caching=target.prefix_caching, dtype=options.dtype,
                                  model=options.model, extra_args=options.serve_args,
                                  log_dir=log_dir)
    target.url, target.pid = server.url, server.proc.pid
    try:
        yield
    finally:
        server.stop()


def run(workloads: list[Workload], options: Options) -> list[RunResult]:
    return asyncio.run(run_all(workloads, options))
