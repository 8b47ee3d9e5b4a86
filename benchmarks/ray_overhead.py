"""What running an engine as a Ray actor costs, against the same engine in process, in one run.

Both engines run the same model and config, one after the other (never at once), on this
machine; the Ray one is an `EngineActor` on a local Ray instance, driven through
`RayEngine` (the engine contract's remote client), the other through `LocalEngine`.

1. Per call: a generate of 1 token from a 1-token context, `--calls` times in sequence
   (new_context, append, generate, free): mean ms per call each way, and the difference.
2. Per token: `batch` concurrent generations of `--tokens` tokens (ignore_eos) from
   `--prompt` random prompt tokens: decode ms per token (wall time / tokens) each way, and the
   Ray / in-process ratio (goal: within 5% at batch 32).
3. Ray itself: import time, `ray.init` time, and the actor process's resident memory.
4. Ray's floor on this machine, with no engine work: the round trip of an empty async actor
   call, and what Parrot's per-call path is made of, one call that puts an item on an open
   Ray stream and that item's arrival (`Echo`); the per-call overhead of (1) cannot go below
   the latter.

Run: .venv/bin/python benchmarks/ray_overhead.py [--model DIR] [--batch 1 32] [--tokens 64]
(default model: the embedded SmolLM2, bf16). It needs `pip install 'parrot-serve[ray]'`.
"""
from __future__ import annotations

import argparse
import asyncio
import random
import time

from parrot.engine import Engine, EngineConfig, SamplingParams
from parrot.engine.local_engine import LocalEngine


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", help="model directory (default: the embedded SmolLM2)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kv-memory-gb", type=float, default=1.0)
    p.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    p.add_argument("--tokens", type=int, default=64, help="tokens each generation decodes")
    p.add_argument("--prompt", type=int, default=32, help="random prompt tokens")
    p.add_argument("--calls", type=int, default=50, help="1-token calls for the per-call cost")
    p.add_argument("--cpus", type=int, default=None, help="CPUs the engine actor reserves "
                   "(default: all of them, as the in-process engine uses)")
    return p.parse_args()


async def per_call_ms(engine, calls: int) -> float:
    sampling = SamplingParams(max_tokens=1, temperature=0, ignore_eos=True)
    start = time.perf_counter()
    for i in range(calls):
        ctx = engine.new_context()
        engine.append(ctx, [100 + i % 50])
        async for _ in engine.generate(ctx, sampling):
            pass
        engine.free(ctx)
    return (time.perf_counter() - start) / calls * 1000


async def decode_ms_per_token(engine, batch: int, tokens: int, prompt: int) -> float:
    rng = random.Random(0)
    vocab = engine.tokenizer.vocab_size
    sampling = SamplingParams(max_tokens=tokens, temperature=0, ignore_eos=True)
    ctxs = []
    for _ in range(batch):  # prompts filled first: only decode is timed
        ctx = engine.new_context()
        await engine.fill(ctx, [rng.randrange(100, vocab) for _ in range(prompt)])
        ctxs.append(ctx)

    async def one(ctx) -> int:
        n = 0
        async for chunk in engine.generate(ctx, sampling):
            n += len(chunk.token_ids)
        return n

    start = time.perf_counter()
    counts = await asyncio.gather(*(one(ctx) for ctx in ctxs))
    elapsed = time.perf_counter() - start
    for ctx in ctxs:
        engine.free(ctx)
    return elapsed / (sum(counts) / batch) * 1000  # ms per decode step (token of each seq)


async def measure(engine, args: argparse.Namespace) -> dict:
    await per_call_ms(engine, 3)  # warm up
    out = {"call_ms": await per_call_ms(engine, args.calls)}
    for batch in args.batch:
        out[batch] = await decode_ms_per_token(engine, batch, args.tokens, args.prompt)
    return out


class Echo:
    """An empty async actor: Ray's own per-call cost, nothing of Parrot's."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue = asyncio.Queue()

    async def ping(self) -> None:
        return None

    async def put(self, item: int) -> None:
        self.queue.put_nowait(item)

    async def events(self):
        while True:
            yield await self.queue.get()


async def ray_floor_ms(calls: int) -> dict:
    """Mean ms of an empty actor call's round trip, and of a call that puts an item on an open
    stream until the item arrives (Parrot's submit + event, with no engine behind it)."""
    import ray

    echo = ray.remote(Echo).options(num_cpus=0, max_concurrency=1000).remote()
    await echo.ping.remote()
    start = time.perf_counter()
    for _ in range(calls):
        await echo.ping.remote()
    ping_ms = (time.perf_counter() - start) / calls * 1000
    stream = echo.events.remote()
    start = time.perf_counter()
    for i in range(calls):
        echo.put.remote(i)
        assert await (await stream.__anext__()) == i
    item_ms = (time.perf_counter() - start) / calls * 1000
    ray.kill(echo)
    return {"ping_ms": ping_ms, "call_and_item_ms": item_ms}


async def run_local(config: EngineConfig, args: argparse.Namespace) -> dict:
    engine = await Engine(config).start()
    try:
        return await measure(LocalEngine(engine), args)
    finally:
        await engine.stop()


async def run_ray(config: EngineConfig, args: argparse.Namespace) -> tuple[dict, dict]:
    start = time.perf_counter()
    import ray

    from parrot.engine.ray_engine import RayEngine
    costs = {"import_s": time.perf_counter() - start}
    start = time.perf_counter()
    ray.init(include_dashboard=False, log_to_driver=False)
    costs["init_s"] = time.perf_counter() - start
    cpus = args.cpus or int(ray.cluster_resources().get("CPU", 1))
    try:
        start = time.perf_counter()
        engine = await RayEngine.start(config, "engine 0", num_cpus=cpus,
                                       max_concurrency=10_000)
        costs["actor_start_s"] = time.perf_counter() - start
        costs["actor_rss_mb"] = await _actor_rss_mb(engine)
        try:
            result = await measure(engine, args)
        finally:
            await engine.stop()
        costs.update(await ray_floor_ms(args.calls * 4))
        return result, costs
    finally:
        ray.shutdown()


async def _actor_rss_mb(engine) -> float | None:
    try:
        import psutil

        pid = int(engine.name.rsplit("pid ", 1)[1].rstrip(")"))
        return psutil.Process(pid).memory_info().rss / 2**20
    except Exception:  # noqa: BLE001 - on another machine: unknown
        return None


def report(local: dict, remote: dict, costs: dict, args: argparse.Namespace) -> None:
    print(f"per call (1-token generate, {args.calls} in sequence): in process "
          f"{local['call_ms']:.2f} ms, Ray {remote['call_ms']:.2f} ms, "
          f"overhead {remote['call_ms'] - local['call_ms']:+.2f} ms")
    for batch in args.batch:
        lo, ra = local[batch], remote[batch]
        print(f"decode at batch {batch:>3}: in process {lo:.2f} ms/token, Ray {ra:.2f} ms/token, "
              f"ratio {ra / lo:.3f} ({(ra / lo - 1) * 100:+.1f}%)")
    rss = costs["actor_rss_mb"]
    print(f"ray: import {costs['import_s']:.2f} s, init {costs['init_s']:.2f} s, actor start "
          f"(model load included) {costs['actor_start_s']:.2f} s, actor RSS "
          f"{'?' if rss is None else f'{rss:.0f} MB'}")
    print(f"ray's floor here (an empty actor, no engine): call round trip {costs['ping_ms']:.2f} ms, "
          f"call + its item on an open stream {costs['call_and_item_ms']:.2f} ms "
          f"(Parrot's per-call overhead above: {remote['call_ms'] - local['call_ms']:+.2f} ms)")


async def main() -> None:
    args = parse_args()
    config = EngineConfig(model=args.model, dtype=args.dtype, kv_memory_gb=args.kv_memory_gb)
    local = await run_local(config, args)
    remote, costs = await run_ray(config, args)
    report(local, remote, costs, args)


if __name__ == "__main__":
    asyncio.run(main())
