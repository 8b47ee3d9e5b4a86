"""`parrot bench engine`: prefill and decode speed of the engine, next to transformers,
with the memory-bandwidth floor of a decode step and the fraction of it achieved."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time

import torch

PROMPT_LEN = 128
DECODE_TOKENS = 48


def measure_read_bandwidth(gib: float = 1.0) -> float:
    """GB/s reading a large tensor once (a torch sum over fp32), best of 5."""
    x = torch.ones(int(gib * 2**28), dtype=torch.float32)
    x.sum()
    best = min(_timed(x.sum) for _ in range(5))
    return x.numel() * 4 / best / 1e9


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def measure_engine(args) -> dict:
    from parrot.engine import Engine, EngineConfig, SamplingParams

    engine = await Engine(EngineConfig(dtype=args.dtype, kv_memory_gb=args.kv_memory_gb,
                                       quantization=args.quantization)).start()
    out = {"model": engine.model_name, "num_blocks": engine.stats().num_blocks}
    out["prefill_tok_s"] = await _prefill_rate(engine, args.prefill_len)
    sp = SamplingParams(max_tokens=DECODE_TOKENS, ignore_eos=True)
    for batch in args.batches:
        out[f"decode_ms_b{batch}"] = await _decode_step_ms(engine, batch, sp)
    out["weight_bytes"] = _weight_bytes(engine.runner.model)
    out["kv_bytes_per_token"] = engine.runner.kv_cache[:, :, 0, 0].numel() * engine.runner.kv_cache.element_size()
    await engine.stop()
    return out


async def _prefill_rate(engine, n: int) -> float:
    rates = []
    for rep in range(3):
        ctx = engine.new_context()
        tokens = torch.randint(1000, 40000, (n,), generator=torch.Generator().manual_seed(rep)).tolist()
        start = time.perf_counter()
        await engine.fill(ctx, tokens)
        rates.append(n / (time.perf_counter() - start))
        engine.free(ctx)
    return max(rates)


async def _decode_step_ms(engine, batch: int, sp) -> float:
    async def one(i: int):
        ctx = engine.new_context()
        engine.append(ctx, torch.randint(1000, 40000, (PROMPT_LEN,)).tolist())
        async for _ in engine.generate(ctx, sp):
            pass
        engine.free(ctx)

    await asyncio.gather(*[one(i) for i in range(batch)])
    steps = engine.stats().recent_step_ms[-(DECODE_TOKENS - 8):]  # decode-only steps, all in batch
    return statistics.median(steps)


def _weight_bytes(model) -> int:
    """Bytes a decode step reads: every weight once (the embedding table only by row)."""
    total = 0
    for name, module in model.named_modules():
        packed = getattr(module, "packed", None)
        weight = packed if packed is not None else getattr(module, "weight", None)
        if weight is not None and "embed_tokens" not in name:
            total += weight.numel() * weight.element_size()
    return total


async def measure_shared_prefix_step(dtype: str, cascade: bool, num_forks: int = 32,
                                     prefix_len: int = 2000, private_len: int = 64) -> float:
    """Median decode step (ms) of `num_forks` forks of one `prefix_len`-token context."""
    from parrot.engine import Engine, EngineConfig, SamplingParams

    engine = await Engine(EngineConfig(dtype=dtype, kv_memory_gb=1.0, enable_cascade=cascade,
                                       max_num_batched_tokens=2048)).start()
    parent = engine.new_context()
    await engine.fill(parent, torch.randint(1000, 40000, (prefix_len,)).tolist())
    sp = SamplingParams(max_tokens=24, ignore_eos=True)

    async def one(i: int):
        ctx = engine.fork(parent)
        engine.append(ctx, torch.randint(1000, 40000, (private_len,)).tolist())
        async for _ in engine.generate(ctx, sp):
            pass
        engine.free(ctx)

    await asyncio.gather(*[one(i) for i in range(num_forks)])
    steps = engine.stats().recent_step_ms[-16:]
    await engine.stop()
    return statistics.median(steps)


async def measure_peer(url: str, batches: list[int]) -> dict:
    """Decode ms/token of an OpenAI-compatible server (e.g. vLLM-CPU) at the same sizes:
    `batch` concurrent streams of 128-token prompts, the median gap between tokens."""
    import aiohttp

    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/models") as r:
            model = (await r.json())["data"][0]["id"]
        out = {}
        for batch in batches:
            gaps = await asyncio.gather(*[_peer_stream(http, url, model, i) for i in range(batch)])
            out[f"peer_decode_ms_b{batch}"] = statistics.median(g for gs in gaps for g in gs)
        return out


async def _peer_stream(http, url: str, model: str, seed: int) -> list[float]:
    prompt = torch.randint(1000, 40000, (PROMPT_LEN,), generator=torch.Generator().manual_seed(seed))
    body = {"model": model, "prompt": prompt.tolist(), "max_tokens": DECODE_TOKENS, "stream": True,
            "ignore_eos": True, "temperature": 0}
    stamps = []
    async with http.post(f"{url}/v1/completions", json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data: {"):
                stamps.append(time.perf_counter())
    return [(b - a) * 1000 for a, b in zip(stamps[8:], stamps[9:])]  # decode-only gaps


def measure_transformers(dtype: str) -> float:
    """ms per token of transformers' greedy generate, batch 1, same prompt length."""
    from transformers import AutoModelForCausalLM

    from parrot.engine.model_files import resolve_model_dir

    model_dir, _ = resolve_model_dir(None)
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype)).eval()
    ids = torch.randint(1000, 40000, (1, PROMPT_LEN))
    kw = dict(do_sample=False, pad_token_id=0)
    with torch.inference_mode():
        model.generate(ids, max_new_tokens=4, min_new_tokens=4, **kw)
        t1 = _timed(lambda: model.generate(ids, max_new_tokens=1, min_new_tokens=1, **kw))
        tn = _timed(lambda: model.generate(ids, max_new_tokens=DECODE_TOKENS + 1,
                                           min_new_tokens=DECODE_TOKENS + 1, **kw))
    return (tn - t1) / DECODE_TOKENS * 1000


def measure_startup(dtype: str, kv_memory_gb: float) -> dict:
    """Process start to first token (model conversion cached), and resident memory then."""
    code = (
        "import asyncio, time, psutil, os\n"
        "t0 = float(os.environ['T0'])\n"
        "from parrot.engine import Engine, EngineConfig, SamplingParams\n"
        "async def main():\n"
        f"    e = await Engine(EngineConfig(dtype='{dtype}', kv_memory_gb={kv_memory_gb})).start()\n"
        "    ctx = e.new_context(); e.append(ctx, e.tokenizer.encode('Hello'))\n"
        "    async for _ in e.generate(ctx, SamplingParams(max_tokens=1)): break\n"
        "    print(time.time() - t0, psutil.Process().memory_info().rss)\n"
        "    await e.stop()\n"
        "asyncio.run(main())\n"
    )
    env = dict(os.environ, T0=str(time.time()))
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, rss = res.stdout.split()[-2:]
    return {"startup_s": float(seconds), "rss_gib": int(rss) / 2**30}


def report(r: dict) -> str:
    bw = r["read_gb_s"]
    lines = [f"model {r['model']} ({r['dtype']}), {torch.get_num_threads()} threads, "
             f"read bandwidth {bw:.1f} GB/s (measured)",
             f"start to first token   {r['startup_s']:.1f} s   resident memory {r['rss_gib']:.2f} GiB "
             f"(KV pool {r['kv_memory_gb']} GiB)",
             f"prefill                {r['prefill_tok_s']:.0f} tokens/s ({r['prefill_len']}-token prompts)"]
    for b in r["batches"]:
        ms = r[f"decode_ms_b{b}"]
        floor_bytes = r["weight_bytes"] + b * (PROMPT_LEN + DECODE_TOKENS) * r["kv_bytes_per_token"]
        floor_ms = floor_bytes / bw / 1e6
        lines.append(f"decode batch {b:<3}       {ms:6.1f} ms/step  {b * 1000 / ms:7.0f} tokens/s  "
                     f"floor {floor_ms:.1f} ms ({floor_bytes / 1e6:.0f} MB read) -> {floor_ms / ms:.0%} of floor")
    if "shared_step_ms_cascade" in r:
        on, off = r["shared_step_ms_cascade"], r["shared_step_ms_plain"]
        lines.append(f"32 forks of a 2000-token prefix: decode step {off:.1f} ms plain, {on:.1f} ms "
                     f"cascade -> {off / on:.2f}x")
    for b in r["batches"]:
        if f"peer_decode_ms_b{b}" in r:
            peer = r[f"peer_decode_ms_b{b}"]
            lines.append(f"peer server batch {b:<3} {peer:6.1f} ms/token ({r['peer_url']}) -> Parrot is "
                         f"{peer / r[f'decode_ms_b{b}']:.2f}x its speed")
    if "hf_ms_per_token" in r:
        hf = r["hf_ms_per_token"]
        lines.append(f"transformers generate  {hf:6.1f} ms/token (batch 1)  -> Parrot batch 1 is "
                     f"{hf / r['decode_ms_b1']:.2f}x faster")
    return "\n".join(lines)


def add_engine_parser(bench_subparsers, parents) -> None:
    p = bench_subparsers.add_parser("engine", parents=parents, description=__doc__,
                                    help="engine speed: prefill, decode, start-up, memory")
    _add_args(p)
    p.set_defaults(func=lambda args: run(args) or 0)


def _add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--kv-memory-gb", type=float, default=1.0)
    p.add_argument("--quantization", choices=("int8",))
    p.add_argument("--prefill-len", type=int, default=1024)
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--peer-url", help="an OpenAI-compatible server on the same model (e.g. "
                   "vLLM-CPU) to measure at the same sizes, in the same run")
    p.add_argument("--no-shared-prefix", action="store_true",
                   help="skip the 32-forks decode step, cascade vs plain attention")
    p.add_argument("--json", help="also write the results here")


def run(args: argparse.Namespace) -> None:
    r = {"dtype": args.dtype, "kv_memory_gb": args.kv_memory_gb, "batches": args.batches,
         "prefill_len": args.prefill_len}
    r.update(measure_startup(args.dtype, args.kv_memory_gb))
    r.update(asyncio.run(measure_engine(args)))
    if args.peer_url:
        r["peer_url"] = args.peer_url
        r.update(asyncio.run(measure_peer(args.peer_url.rstrip("/"), args.batches)))
    if not args.no_shared_prefix:
        for cascade, key in ((True, "shared_step_ms_cascade"), (False, "shared_step_ms_plain")):
            r[key] = asyncio.run(measure_shared_prefix_step(args.dtype, cascade))
    if not args.no_transformers:
        r["hf_ms_per_token"] = measure_transformers(args.dtype)
    r["read_gb_s"] = measure_read_bandwidth()
    print(report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="parrot bench engine", description=__doc__)
    _add_args(parser)
    run(parser.parse_args())
