"""`parrot bench engine`: prefill and decode speed of the engine, next to transformers,
with the memory-bandwidth floor of a decode step and the fraction of it achieved."""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import statistics
import subprocess
import sys
import time

import torch

PROMPT_LEN = 128
DECODE_TOKENS = 48
ROUNDS = 4  # prefill rounds (with a peer: one fill of each a round)
DECODE_ROUNDS = 2
# A pause before each side of a round: right after the peer answered, a fill measured ~20%
# slower than after a second's pause (517-643 vs 525-760 tokens/s, alternated; the peer's
# threads or caches are still settling), and the same holds the other way round.
PAUSE_S = 1.0


def measure_read_bandwidth(gib: float = 1.0) -> float:
    """GB/s reading a large tensor once (a torch sum over fp32), best of 5."""
    x = torch.ones(int(gib * 2**28), dtype=torch.float32)
    x.sum()
    best = min(_timed(x.sum) for _ in range(5))
    return x.numel() * 4 / best / 1e9


def measure_matmul_rate(n: int = 1024) -> dict:
    """GFLOP/s of torch's best square matmul here (float32 and bf16), best of 5: the
    compute floor a prefill token can approach."""
    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b
        best = min(_timed(lambda: a @ b) for _ in range(5))
        out[f"matmul_gflops_{name}"] = 2 * n**3 / best / 1e9
    return out


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


async def measure_engine(args) -> dict:
    """The engine's prefill rate and decode steps; with `args.peer_url`, the peer server's at
    the same sizes, the two measured in alternation (a round each, `ROUNDS` rounds) so that
    a shared host's drift over minutes moves both sides of every ratio."""
    from parrot.engine import Engine, EngineConfig, SamplingParams

    engine = await Engine(EngineConfig(dtype=args.dtype, kv_memory_gb=args.kv_memory_gb,
                                       quantization=args.quantization,
                                       cpu_kernels=not args.no_cpu_kernels,
                                       step_runner=not args.no_step_runner)).start()
    out = {"model": engine.model_name, "num_blocks": engine.stats().num_blocks,
           "kernels": engine.runner.model.uses_kernels, "linear": _linear_kind(engine.runner.model)}
    peer = await Peer.open(args.peer_url.rstrip("/")) if args.peer_url else None
    try:
        if peer:
            await peer.prefill_rate(args.prefill_len)  # warms the peer up
        n = args.prefill_len
        theirs = peer and (lambda: peer.prefill_rate(n))
        rounds = [await _round(lambda: _fill_rate(engine, n, rep), theirs) for rep in range(ROUNDS)]
        out["prefill_tok_s"] = max(ours for ours, _ in rounds)
        if peer:
            out["peer_prefill_tok_s"] = max(theirs for _, theirs in rounds)
            out["prefill_ratios"] = [ours / theirs for ours, theirs in rounds]
        sp = SamplingParams(max_tokens=DECODE_TOKENS, ignore_eos=True)
        for batch in args.batches:
            theirs = peer and (lambda: peer.decode_ms(batch))
            rounds = [await _round(lambda: _decode_step_ms(engine, batch, sp), theirs) for _ in range(DECODE_ROUNDS)]
            out[f"decode_ms_b{batch}"] = min(ours for ours, _ in rounds)
            if peer:
                out[f"peer_decode_ms_b{batch}"] = min(theirs for _, theirs in rounds)
                out[f"decode_ratios_b{batch}"] = [ours / theirs for ours, theirs in rounds]
    finally:
        if peer:
            await peer.close()
    out["weight_bytes"] = _weight_bytes(engine.runner.model)
    out["head_bytes"] = _weight_bytes(engine.runner.model.lm_head) if engine.runner.model.lm_head else 0
    cfg = engine.model_config
    out["attn_flops_per_token"] = 4 * cfg.num_layers * cfg.num_heads * cfg.head_dim * (args.prefill_len / 2)
    out["weight_bytes_per_param"] = 1 if args.quantization == "int8" else torch.finfo(getattr(torch, args.dtype)).bits // 8
    out["kv_bytes_per_token"] = engine.runner.kv_cache[:, :, 0, 0].numel() * engine.runner.kv_cache.element_size()
    await engine.stop()
    return out


async def _round(ours, theirs=None) -> tuple[float, float | None]:
    """One measurement each side, the engine's first (`ours()`, then `theirs()`: coroutine
    functions), with a pause before each side when there is a peer."""
    if theirs is None:
        return await ours(), None
    await asyncio.sleep(PAUSE_S)
    mine = await ours()
    await asyncio.sleep(PAUSE_S)
    return mine, await theirs()


async def _fill_rate(engine, n: int, rep: int) -> float:
    """Tokens/s of one fresh `n`-token fill."""
    ctx = engine.new_context()
    tokens = torch.randint(1000, 40000, (n,), generator=torch.Generator().manual_seed(rep)).tolist()
    start = time.perf_counter()
    await engine.fill(ctx, tokens)
    rate = n / (time.perf_counter() - start)
    engine.free(ctx)
    return rate


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


def _linear_kind(model) -> str:
    kind = getattr(model.layers[0].mlp.down_proj, "packed_for", None) or "torch"
    return f"parrot ({torch.ops.parrot.linear_tiles()} tiles)" if kind == "parrot" else kind


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


class Peer:
    """An OpenAI-compatible server (e.g. vLLM-CPU) on the same model, measured at the engine's
    sizes: a prefill is a fresh prompt (never sent to it before, so its prefix cache cannot
    serve it) with one output token; a decode is `batch` concurrent streams of
    PROMPT_LEN-token prompts, the median gap between their tokens."""

    def __init__(self, http, url: str, model: str) -> None:
        self.http, self.url, self.model = http, url, model
        self._salt = secrets.randbits(30)  # prompts new to its prefix cache, also on a second run

    @classmethod
    async def open(cls, url: str) -> "Peer":
        import aiohttp

        http = aiohttp.ClientSession()
        try:
            async with http.get(f"{url}/v1/models") as r:
                model = (await r.json())["data"][0]["id"]
        except BaseException:
            await http.close()
            raise
        return cls(http, url, model)

    async def close(self) -> None:
        await self.http.close()

    def _seed(self) -> int:
        self._salt += 1
        return self._salt

    async def prefill_rate(self, n: int) -> float:
        gen = torch.Generator().manual_seed(self._seed())
        body = {"model": self.model, "prompt": torch.randint(1000, 40000, (n,), generator=gen).tolist(),
                "max_tokens": 1, "temperature": 0}
        start = time.perf_counter()
        async with self.http.post(f"{self.url}/v1/completions", json=body) as resp:
            await resp.read()
        return n / (time.perf_counter() - start)

    async def decode_ms(self, batch: int) -> float:
        gaps = await asyncio.gather(*[self._stream(self._seed()) for _ in range(batch)])
        return statistics.median(g for gs in gaps for g in gs)

    async def _stream(self, seed: int) -> list[float]:
        prompt = torch.randint(1000, 40000, (PROMPT_LEN,), generator=torch.Generator().manual_seed(seed))
        body = {"model": self.model, "prompt": prompt.tolist(), "max_tokens": DECODE_TOKENS, "stream": True,
                "ignore_eos": True, "temperature": 0}
        stamps = []
        async with self.http.post(f"{self.url}/v1/completions", json=body) as resp:
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


def measure_startup(dtype: str, kv_memory_gb: float, cold_kernels: bool = False) -> dict:
    """Process start to first token (model conversion cached), and resident memory then.
    `cold_kernels`: with an empty CPU-kernel cache, so the start compiles them."""
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
    import tempfile

    with tempfile.TemporaryDirectory() as empty:
        env = dict(os.environ, T0=str(time.time()))
        if cold_kernels:
            env["PARROT_KERNEL_CACHE"] = empty
        res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seconds, rss = res.stdout.split()[-2:]
    if cold_kernels:
        return {"startup_cold_s": float(seconds)}
    return {"startup_s": float(seconds), "rss_gib": int(rss) / 2**30}


ISA_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16")


def cpu_line(model: str, flags: frozenset[str] | set[str]) -> str:
    """The CPU and the ISA extensions that decide the kernels; where it has no bf16
    arithmetic (neither AVX-512-BF16 nor AMX) a bf16 peer runs emulated bf16, so say so."""
    isa = " ".join(f for f in ISA_FLAGS if f in flags) or "none of " + "/".join(ISA_FLAGS)
    line = f"cpu {model or 'unknown'}: {isa}"
    if not {"avx512_bf16", "amx_bf16"} & set(flags):
        line += ("; no bf16 arithmetic here: a bf16 peer (vLLM --dtype bfloat16) runs it emulated, "
                 "measure its float32 too")
    return line


def _rounds(ratios: list[float] | None) -> str:
    """The ratio of each alternated round, the best side of each run against each other above."""
    if not ratios:
        return ""
    return (f" (rounds alternated: median {statistics.median(ratios):.2f}x, "
            f"{min(ratios):.2f}-{max(ratios):.2f})")


def report(r: dict) -> str:
    bw = r["read_gb_s"]
    params = r["weight_bytes"] / r["weight_bytes_per_param"]
    # a prefill token: the projections without the head (only the last token has logits),
    # plus causal attention over half the prompt on average
    prefill_flops = 2 * (r["weight_bytes"] - r["head_bytes"]) / r["weight_bytes_per_param"] + r["attn_flops_per_token"]
    prefill_floor = r["matmul_gflops"] * 1e9 / prefill_flops
    lines = [f"model {r['model']} ({r['dtype']}), {torch.get_num_threads()} threads, "
             f"read bandwidth {bw:.1f} GB/s (measured)",
             cpu_line(r.get("cpu_model", ""), set(r.get("cpu_flags", ()))),
             f"start to first token   {r['startup_s']:.1f} s   resident memory {r['rss_gib']:.2f} GiB "
             f"(KV pool {r['kv_memory_gb']} GiB)"
             + (f"; {r['startup_cold_s']:.1f} s compiling the CPU kernels" if "startup_cold_s" in r else ""),
             f"matmul rate {r['matmul_gflops']:.0f} GFLOP/s (torch, best of fp32 {r['matmul_gflops_fp32']:.0f} / "
             f"bf16 {r['matmul_gflops_bf16']:.0f}, measured); CPU kernels {'on' if r['kernels'] else 'off'}, "
             f"projections: {r['linear']}",
             f"prefill                {r['prefill_tok_s']:.0f} tokens/s ({r['prefill_len']}-token prompts; "
             f"floor {prefill_floor:.0f} tokens/s at the matmul rate -> {r['prefill_tok_s'] / prefill_floor:.0%})"]
    if "peer_prefill_tok_s" in r:
        peer = r["peer_prefill_tok_s"]
        lines.append(f"peer server prefill    {peer:.0f} tokens/s (over HTTP, 1 output token) -> Parrot is "
                     f"{r['prefill_tok_s'] / peer:.2f}x its rate{_rounds(r.get('prefill_ratios'))}")
    for b in r["batches"]:
        ms = r[f"decode_ms_b{b}"]
        floor_bytes = r["weight_bytes"] + b * (PROMPT_LEN + DECODE_TOKENS) * r["kv_bytes_per_token"]
        floor_ms = floor_bytes / bw / 1e6
        compute_ms = b * 2 * params / r["matmul_gflops"] / 1e6
        floor = max(floor_ms, compute_ms)
        lines.append(f"decode batch {b:<3}       {ms:6.1f} ms/step  {b * 1000 / ms:7.0f} tokens/s  "
                     f"floor {floor:.1f} ms (read {floor_bytes / 1e6:.0f} MB: {floor_ms:.1f} ms; projections "
                     f"at the matmul rate: {compute_ms:.1f} ms) -> {floor / ms:.0%} of floor")
    if "shared_step_ms_cascade" in r:
        on, off = r["shared_step_ms_cascade"], r["shared_step_ms_plain"]
        lines.append(f"32 forks of a 2000-token prefix: decode step {off:.1f} ms plain, {on:.1f} ms "
                     f"cascade -> {off / on:.2f}x")
    for b in r["batches"]:
        if f"peer_decode_ms_b{b}" in r:
            peer = r[f"peer_decode_ms_b{b}"]
            lines.append(f"peer server batch {b:<3} {peer:6.1f} ms/token ({r['peer_url']}) -> Parrot's step is "
                         f"{r[f'decode_ms_b{b}'] / peer:.2f}x its time{_rounds(r.get(f'decode_ratios_b{b}'))}")
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
    p.add_argument("--batches", type=int, nargs="+", help="decode batch sizes (default 1 8 32; on CUDA 1 8 32 64)")
    p.add_argument("--no-transformers", action="store_true")
    p.add_argument("--peer-url", help="an OpenAI-compatible server on the same model (e.g. "
                   "vLLM-CPU) to measure at the same sizes, in the same run")
    p.add_argument("--no-shared-prefix", action="store_true",
                   help="skip the 32-forks decode step, cascade vs plain attention")
    p.add_argument("--no-cpu-kernels", action="store_true", help="the eager torch reference path")
    p.add_argument("--no-step-runner", action="store_true",
                   help="steps layer by layer from Python (the same kernels; to compare)")
    p.add_argument("--cold-start", action="store_true", help="also time a start that compiles the CPU kernels")
    p.add_argument("--json", help="also write the results here")
    g = p.add_argument_group("CUDA (parrot.bench.engine_bench_cuda)")
    g.add_argument("--device", default="cpu", help="cuda: the GPU benchmark (decode batches default 1 8 32 64)")
    g.add_argument("--model", help="model directory (CUDA; default: the embedded SmolLM2)")
    g.add_argument("--shape", help="CUDA: a named shape with random weights (smollm2-135m, llama3-8b)")
    g.add_argument("--load-format", choices=("auto", "dummy"), default="auto",
                   help="dummy: random weights of the model's config (implied by --shape)")
    g.add_argument("--no-cuda-graphs", action="store_true", help="CUDA: eager decode only")
    g.add_argument("--compare-eager", action="store_true", help="CUDA: decode with graphs and eagerly")


def run(args: argparse.Namespace) -> None:
    cuda = args.device.startswith("cuda")
    args.batches = args.batches or ([1, 8, 32, 64] if cuda else [1, 8, 32])
    if cuda:
        from parrot.bench import engine_bench_cuda

        if args.shape:
            args.load_format = "dummy"
        return engine_bench_cuda.run(args)
    from parrot_kernels import cpu_ops

    r = {"dtype": args.dtype, "kv_memory_gb": args.kv_memory_gb, "batches": args.batches,
         "prefill_len": args.prefill_len, "cpu_model": cpu_ops.cpu_model(),
         "cpu_flags": sorted(f for f in cpu_ops.cpu_flags() if f in ISA_FLAGS)}
    r.update(measure_startup(args.dtype, args.kv_memory_gb))
    if args.cold_start:
        r.update(measure_startup(args.dtype, args.kv_memory_gb, cold_kernels=True))
    r.update(asyncio.run(measure_engine(args)))
    if args.peer_url:
        r["peer_url"] = args.peer_url
    if not args.no_shared_prefix:
        for cascade, key in ((True, "shared_step_ms_cascade"), (False, "shared_step_ms_plain")):
            r[key] = asyncio.run(measure_shared_prefix_step(args.dtype, cascade))
    if not args.no_transformers:
        r["hf_ms_per_token"] = measure_transformers(args.dtype)
    r["read_gb_s"] = measure_read_bandwidth()
    r.update(measure_matmul_rate())
    r["matmul_gflops"] = max(r["matmul_gflops_fp32"], r["matmul_gflops_bf16"])
    print(report(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="parrot bench engine", description=__doc__)
    _add_args(parser)
    run(parser.parse_args())
