"""Load-test `parrot serve` from a loopback client: throughput, TTFT and inter-token latency.

Two workloads, each a fixed number of streaming chat requests with bounded concurrency
and a fixed output length (ignore_eos), after a warm-up request:

  load    distinct short questions (plain OpenAI traffic)
  shared  many users behind one long system prompt, run on a server with the prefix
          cache on and on one with it off; prints the on/off ratio

By default the script starts the servers itself (`python -m parrot serve --port 0`);
`--url` (cache on) and `--url-no-cache` point it at running ones instead.

    python benchmarks/serve_load.py                        # both workloads, own servers
    python benchmarks/serve_load.py --requests 256 --concurrency 64 --max-tokens 32
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
import uuid
from dataclasses import dataclass, field

import aiohttp

from parrot.bench.launcher import ServerProcess


@dataclass
class Result:
    ttft: float = 0.0
    gaps: list[float] = field(default_factory=list)
    e2e: float = 0.0
    completion_tokens: int = 0
    cached_tokens: int = 0


@dataclass
class Run:
    label: str
    wall: float
    results: list[Result]
    prefill_tokens: int

    def summary(self) -> dict:
        tokens = sum(r.completion_tokens for r in self.results)
        gaps = [g for r in self.results for g in r.gaps]
        return {
            "requests": len(self.results), "wall_s": round(self.wall, 2),
            "req_per_s": round(len(self.results) / self.wall, 2),
            "output_tok_per_s": round(tokens / self.wall, 1),
            "ttft_ms": percentiles([r.ttft for r in self.results]),
            "itl_ms": percentiles(gaps), "e2e_ms": percentiles([r.e2e for r in self.results]),
            "cached_prompt_tokens": sum(r.cached_tokens for r in self.results),
            "prefill_tokens_computed": self.prefill_tokens,
        }


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    pick = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))]  # noqa: E731
    return {"p50": round(pick(0.5) * 1e3, 1), "p90": round(pick(0.9) * 1e3, 1),
            "p99": round(pick(0.99) * 1e3, 1), "mean": round(statistics.fmean(values) * 1e3, 1)}


async def stream_chat(session: aiohttp.ClientSession, url: str, messages: list[dict],
                      max_tokens: int) -> Result:
    body = {"messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "ignore_eos": True, "stream": True, "stream_options": {"include_usage": True}}
    result, started, last = Result(), time.perf_counter(), None
    async with session.post(url + "/v1/chat/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.content:
            if not line.startswith(b"data: {"):
                continue
            chunk = json.loads(line[6:])
            if chunk.get("usage"):
                result.completion_tokens = chunk["usage"]["completion_tokens"]
                result.cached_tokens = chunk["usage"]["prompt_tokens_details"]["cached_tokens"]
            if not any(c["delta"].get("content") for c in chunk["choices"]):
                continue
            now = time.perf_counter()
            if last is None:
                result.ttft = now - started
            else:
                result.gaps.append(now - last)
            last = now
    result.e2e = time.perf_counter() - started
    return result


async def get_json(session: aiohttp.ClientSession, url: str) -> dict:
    async with session.get(url) as resp:
        return await resp.json()


async def run_load(url: str, label: str, conversations: list[list[dict]], concurrency: int,
                   max_tokens: int) -> Run:
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=3600)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        await stream_chat(session, url, [{"role": "user", "content": "warm up"}], 4)
        before = (await get_json(session, url + "/v1/parrot/engine_stats"))["num_prefill_tokens"]

        async def one(messages: list[dict]) -> Result:
            async with limit:
                return await stream_chat(session, url, messages, max_tokens)

        started = time.perf_counter()
        results = await asyncio.gather(*(one(m) for m in conversations))
        wall = time.perf_counter() - started
        after = (await get_json(session, url + "/v1/parrot/engine_stats"))["num_prefill_tokens"]
    return Run(label, wall, list(results), after - before)


def distinct_questions(count: int) -> list[list[dict]]:
    return [[{"role": "user", "content": f"Question {i}: describe the number {i * 7919} "
              "in one sentence."}] for i in range(count)]


def shared_system_prompt(count: int, words: int) -> list[list[dict]]:
    tag = uuid.uuid4().hex  # a fresh prefix: no earlier run can have cached it
    rules = " ".join(f"Rule {i}: answer politely and cite source {i}." for i in range(words // 8))
    system = f"[{tag}] You are the help desk of a large library. {rules}"
    return [[{"role": "system", "content": system},
             {"role": "user", "content": f"User {i}: where can I find book number {i}?"}]
            for i in range(count)]


def print_run(run: Run) -> None:
    print(f"\n== {run.label}")
    for key, value in run.summary().items():
        print(f"  {key:24s} {value}")


async def with_server(url: str | None, flags: list[str], work) -> Run:
    if url is not None:
        return await work(url)
    server = ServerProcess(flags)
    started = await asyncio.to_thread(server.start)
    try:
        return await work(started)
    finally:
        await asyncio.to_thread(server.stop)


async def main(args: argparse.Namespace) -> None:
    flags = ["--dtype", args.dtype, "--kv-memory-gb", str(args.kv_memory_gb),
             "--max-num-seqs", str(args.concurrency), *args.server_flag]
    shared = shared_system_prompt(args.shared_users, args.system_words)

    async def load_then_shared(url: str) -> Run:
        print_run(await run_load(url, f"load: {args.requests} distinct chats, concurrency "
                                 f"{args.concurrency}", distinct_questions(args.requests),
                                 args.concurrency, args.max_tokens))
        return await run_load(url, "shared system prompt, prefix cache ON", shared,
                              args.concurrency, args.max_tokens)

    on = await with_server(args.url, flags, load_then_shared)
    print_run(on)
    off = await with_server(args.url_no_cache, [*flags, "--no-prefix-caching"], lambda url:
                            run_load(url, "shared system prompt, prefix cache OFF", shared,
                                     args.concurrency, args.max_tokens))
    print_run(off)
    a, b = on.summary(), off.summary()
    print(f"\nprefix cache on/off: throughput x{a['req_per_s'] / b['req_per_s']:.2f}, "
          f"mean TTFT x{b['ttft_ms']['mean'] / a['ttft_ms']['mean']:.2f} lower, "
          f"prefill tokens computed {a['prefill_tokens_computed']} vs "
          f"{b['prefill_tokens_computed']}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", help="a running server (prefix cache on) instead of starting one")
    p.add_argument("--url-no-cache", help="a running server started with --no-prefix-caching")
    p.add_argument("--requests", type=int, default=128, help="requests of the load workload")
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--max-tokens", type=int, default=32, help="output tokens per request")
    p.add_argument("--shared-users", type=int, default=64, help="requests of the shared workload")
    p.add_argument("--system-words", type=int, default=600, help="size of the shared system prompt")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kv-memory-gb", type=float, default=1.0)
    p.add_argument("--server-flag", action="append", default=[],
                   help="extra flag for the started servers (repeatable)")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
