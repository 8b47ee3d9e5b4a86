"""Bounded soak of `parrot serve` over loopback: many concurrent sessions each running a small
Semantic-Variable graph, plus streaming OpenAI chats, for a fixed duration; then checks that
nothing was lost, duplicated or leaked.

Each session worker repeats, until the deadline: open a session, submit a graph (two map
calls on documents tagged with a fresh nonce, a server-side join, a reduce call), get the
final value, read the graph, close the session. Each chat worker repeats a streaming chat.
Every model call uses `ignore_eos`, so its token count is known exactly.

Checks: every round and chat finished exactly once with no error; every call is `done` with
exactly `max_tokens` completion tokens; each join equals its own session's map outputs (no
cross-talk); each chat has one finish chunk, one `[DONE]` and the exact usage; afterwards the
engines go idle with `num_used_blocks == 0` (cached blocks are reported apart); the server's
RSS returns near its warmed-up baseline.

    python benchmarks/load_soak.py                           # 200 sessions, 180 s, own server
    python benchmarks/load_soak.py --sessions 50 --duration 30 --out soak.json
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
import psutil

from parrot.bench.launcher import ServerProcess

SERVER_ARGS = ["--kv-memory-gb", "0.5", "--max-num-seqs", "64"]
CHATML = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n" \
         "<|im_start|>assistant\n"
MAP = CHATML.format(system="You summarize documents in a few words.",
                    user="Summarize: {{input:doc}}") + "{{output:summary}}"
REDUCE = CHATML.format(system="You merge summaries into one sentence.",
                       user="Merge:\n{{input:parts}}") + "{{output:final}}"
TOPICS = ["a river that floods a valley", "bees that carry pollen", "a library's new room",
          "a boat crossing a lake", "a market opening at dawn", "a storm over the hills"]


@dataclass
class Config:
    sessions: int = 200
    chats: int = 16
    duration: float = 180.0
    warmup: float = 30.0  # seconds of the same load before the RSS baseline is taken
    max_tokens: int = 4
    chat_tokens: int = 16
    rss_slack_mb: float = 150.0  # allowed RSS growth over the warmed-up baseline


@dataclass
class Tally:
    rounds: Counter = field(default_factory=Counter)  # (worker, round) -> results seen
    chats: int = 0
    calls_done: int = 0
    errors: list[str] = field(default_factory=list)
    num_429: int = 0

    def fail(self, what: str) -> None:
        self.errors.append(what[:300])


def graph_calls(nonce: str, max_tokens: int) -> list[dict]:
    sampling = {"max_tokens": max_tokens, "ignore_eos": True, "temperature": 0}
    maps = [{"id": f"m{i}", "template": MAP, "inputs": {"doc": f"[{nonce}] A note on "
                                                        f"{TOPICS[hash((nonce, i)) % 6]}."},
             "outputs": {"summary": f"s{i}"}, "sampling": sampling} for i in range(2)]
    join = {"id": "j", "kind": "join", "parts": [nonce, {"var": "s0"}, {"var": "s1"}],
            "sep": "\n", "output": "joined"}
    reduce = {"id": "r", "template": REDUCE, "inputs": {"parts": {"var": "joined"}},
              "outputs": {"final": "final"}, "sampling": sampling}
    return [*maps, join, reduce]


async def session_round(http: aiohttp.ClientSession, url: str, cfg: Config, tally: Tally,
                        key: tuple[int, int]) -> None:
    nonce = uuid.uuid4().hex[:12]
    async with http.post(f"{url}/v1/sessions", json={}) as resp:
        if resp.status == 429:
            tally.num_429 += 1
            return
        created = await _ok_json(resp, "open session")
    base = f"{url}/v1/sessions/{created['session_id']}"
    auth = {"X-Parrot-Session-Token": created["token"]}
    try:
        async with http.post(f"{base}/calls", json={"calls": graph_calls(nonce, cfg.max_tokens)},
                             headers=auth) as resp:
            await _ok_json(resp, "submit")
        async with http.get(f"{base}/variables/final?criteria=latency", headers=auth) as resp:
            final = (await _ok_json(resp, "get final"))["value"]
        async with http.get(f"{base}/graph", headers=auth) as resp:
            graph = await _ok_json(resp, "graph")
        check_graph(graph, nonce, final, cfg, tally)
        tally.rounds[key] += 1
    finally:
        async with http.delete(base, headers=auth) as resp:
            await _ok_json(resp, "close session")


def check_graph(graph: dict, nonce: str, final: str, cfg: Config, tally: Tally) -> None:
    calls = {c["id"]: c for c in graph["calls"]}
    values = {v["id"]: v["value_preview"] for v in graph["variables"]}
    states = {cid: c["state"] for cid, c in calls.items()}
    if states != {"m0": "done", "m1": "done", "j": "done", "r": "done"}:
        raise AssertionError(f"calls not all done: {states}")
    for cid in ("m0", "m1", "r"):
        if calls[cid]["tokens"]["completion"] != cfg.max_tokens:
            raise AssertionError(f"{cid} generated {calls[cid]['tokens']['completion']} tokens")
    if values["joined"] != "\n".join([nonce, values["s0"], values["s1"]]):
        raise AssertionError(f"join does not match its own inputs: {values}")
    if values["final"] != final[:200]:
        raise AssertionError("get and graph disagree on the final value")
    tally.calls_done += 4


async def chat_once(http: aiohttp.ClientSession, url: str, cfg: Config, tally: Tally) -> None:
    topic = uuid.uuid4().hex[:6]
    body = {"messages": [{"role": "user", "content": f"Say something about {topic}."}],
            "max_tokens": cfg.chat_tokens, "ignore_eos": True, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    finishes = dones = 0
    usage = None
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        if resp.status != 200:
            raise AssertionError(f"chat: {resp.status} {await resp.text()}")
        async for line in resp.content:
            if line.strip() == b"data: [DONE]":
                dones += 1
            elif line.startswith(b"data: {"):
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    raise AssertionError(f"chat stream error: {chunk['error']}")
                finishes += sum(c["finish_reason"] is not None for c in chunk["choices"])
                usage = chunk.get("usage") or usage
    if (finishes, dones) != (1, 1) or not usage or usage["completion_tokens"] != cfg.chat_tokens:
        raise AssertionError(f"chat: {finishes} finish chunks, {dones} [DONE], usage {usage}")
    tally.chats += 1


async def _ok_json(resp: aiohttp.ClientResponse, what: str) -> dict:
    if resp.status not in (200, 201):
        raise AssertionError(f"{what}: HTTP {resp.status} {await resp.text()}")
    return await resp.json()


async def repeat(deadline: float, step, tally: Tally) -> int:
    """Run `step(i)` until the deadline; a failure is recorded and the worker goes on."""
    i = 0
    while time.monotonic() < deadline:
        try:
            await step(i)
        except Exception as e:  # noqa: BLE001 - every failure is a counted result
            tally.fail(f"{type(e).__name__}: {e}")
        i += 1
    return i


async def engine_stats(http: aiohttp.ClientSession, url: str) -> dict:
    async with http.get(f"{url}/v1/parrot/engine_stats") as resp:
        return await resp.json()


async def wait_idle(http: aiohttp.ClientSession, url: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        stats = await engine_stats(http, url)
        idle = stats["num_running"] == stats["num_waiting"] == stats["num_contexts"] == 0
        if (idle and stats["num_used_blocks"] == 0) or time.monotonic() > deadline:
            return stats
        await asyncio.sleep(0.25)


class RssSampler:
    """The server's resident memory now, and its peak while `run()` is running."""

    def __init__(self, pid: int | None) -> None:
        self.process = None if pid is None else psutil.Process(pid)
        self.peak = 0.0

    def now(self) -> float | None:
        return None if self.process is None else self.process.memory_info().rss / 2**20

    async def run(self) -> None:
        while self.process is not None:
            self.peak = max(self.peak, self.now())
            await asyncio.sleep(0.5)


async def run_phase(http: aiohttp.ClientSession, url: str, cfg: Config, tally: Tally,
                    seconds: float) -> int:
    """Every worker repeats its round for `seconds`; how many rounds and chats were tried."""
    deadline = time.monotonic() + seconds
    workers = [repeat(deadline, lambda i, w=w: session_round(http, url, cfg, tally, (w, i)),
                      tally) for w in range(cfg.sessions)]
    workers += [repeat(deadline, lambda i: chat_once(http, url, cfg, tally), tally)
                for _ in range(cfg.chats)]
    return sum(await asyncio.gather(*workers))


async def run_soak(url: str, pid: int | None, cfg: Config) -> dict:
    """A warm-up phase at the same load (then the RSS baseline), the measured phase, and a
    wait for the engine to go idle; the summary."""
    tally, warm, rss = Tally(), Tally(), RssSampler(pid)
    connector = aiohttp.TCPConnector(limit=cfg.sessions + cfg.chats + 8)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=600)) as http:
        await run_phase(http, url, cfg, warm, cfg.warmup)
        before, baseline = await wait_idle(http, url), rss.now()
        started = time.monotonic()
        sampler = asyncio.ensure_future(rss.run())
        attempts = await run_phase(http, url, cfg, tally, cfg.duration)
        wall = time.monotonic() - started
        sampler.cancel()
        after = await wait_idle(http, url)
    tally.errors += warm.errors
    memory = {"baseline": _r(baseline), "peak": _r(rss.peak), "final": _r(rss.now())}
    return summarize(cfg, tally, attempts, wall, before, after, memory)


def summarize(cfg: Config, tally: Tally, attempts: int, wall: float, before: dict,
              after: dict, memory: dict) -> dict:
    accounted = len(tally.rounds) + tally.chats + len(tally.errors) + tally.num_429
    summary = {
        "sessions_concurrent": cfg.sessions, "chats_concurrent": cfg.chats,
        "duration_s": round(wall, 1), "attempts": attempts,
        "session_rounds_ok": len(tally.rounds), "calls_done": tally.calls_done,
        "chats_ok": tally.chats, "errors": len(tally.errors), "error_samples": tally.errors[:5],
        "http_429": tally.num_429, "lost": attempts - accounted,
        "duplicated": sum(1 for n in tally.rounds.values() if n > 1),
        "rounds_per_s": round(len(tally.rounds) / wall, 2),
        "generated_tokens": after["num_generated_tokens"] - before["num_generated_tokens"],
        "preemptions": after["num_preemptions"] - before["num_preemptions"],
        "num_used_blocks_after": after["num_used_blocks"],
        "num_cached_blocks_after": after["num_cached_blocks"],
        "num_contexts_after": after["num_contexts"], "rss_mb": memory,
    }
    rss_ok = memory["baseline"] is None or memory["final"] <= memory["baseline"] + cfg.rss_slack_mb
    summary["ok"] = (not tally.errors and summary["duplicated"] == 0 and summary["lost"] == 0
                     and after["num_used_blocks"] == 0 and after["num_contexts"] == 0 and rss_ok)
    return summary


def _r(mb: float | None) -> float | None:
    return None if mb is None else round(mb, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running server (RSS is then not measured)")
    parser.add_argument("--sessions", type=int, default=Config.sessions)
    parser.add_argument("--chats", type=int, default=Config.chats)
    parser.add_argument("--duration", type=float, default=Config.duration)
    parser.add_argument("--warmup", type=float, default=Config.warmup)
    parser.add_argument("--max-tokens", type=int, default=Config.max_tokens)
    parser.add_argument("--server-args", default=" ".join(SERVER_ARGS),
                        help="flags for the server this script starts")
    parser.add_argument("--out", help="also write the summary as JSON here")
    args = parser.parse_args()
    cfg = Config(sessions=args.sessions, chats=args.chats, duration=args.duration,
                 warmup=args.warmup, max_tokens=args.max_tokens)
    if args.url:
        summary = asyncio.run(run_soak(args.url, None, cfg))
    else:
        with ServerProcess(args.server_args.split()) as server:
            summary = asyncio.run(run_soak(server.url, server.proc.pid, cfg))
    text = json.dumps(summary, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
