"""What constrained decoding costs: the grammar engines' per-token mask time, and decode
steps with and without a JSON-schema constraint at batch 1 and 32, in one run.

1. Mask cost. A JSON document (nested object, enum, bounded string, array) is walked token
   by token through llguidance (Parrot's grammar engine) and, when it is installed,
   xgrammar, at SmolLM2's 49,152-token vocabulary and at a 128,000-token vocabulary (SmolLM2's
   plus random byte-level tokens: a stand-in for Llama-3's size, no download). Mean and max
   microseconds per mask, compile time of the schema.
2. Decode steps on the engine (bf16, the CPU kernels): `batch` sequences of 128 random prompt
   tokens generate 48 tokens each, unconstrained and under a JSON schema whose one string
   field must hold >= 600 characters (every step is inside a string: the widest masks).
   Median step time, and the constrained / unconstrained ratio (goal <= 1.10 at batch 32).
3. With --peer-url (vLLM-CPU started as in ../shared/PEERS.md): the same two runs as
   streamed completions there (`response_format` json_schema), the median gap between
   tokens, so both servers' constrained overheads and the Parrot / vLLM ratios sit side by side.
The machine's floors (read bandwidth, matmul rate) are measured in the same run.

Run: .venv/bin/python benchmarks/constrained_decode.py [--peer-url http://127.0.0.1:8100]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

import torch

from parrot.bench.engine_bench import measure_matmul_rate, measure_read_bandwidth
from parrot.engine import Engine, EngineConfig, SamplingParams
from parrot.engine.grammar import JSON_LAYOUT, GrammarCompiler
from parrot.engine.sampling_params import Constraint

DOC_SCHEMA = {
    "type": "object", "additionalProperties": False,
    "required": ["name", "age", "address", "tags", "kind"],
    "properties": {
        "name": {"type": "string"}, "age": {"type": "integer"},
        "address": {"type": "object", "required": ["city", "zip"], "properties": {
            "city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}},
        "tags": {"type": "array", "items": {"type": "string"}},
        "kind": {"enum": ["alpha", "beta", "gamma"]}}}
DOC = json.dumps({"name": "Alice Smith the third of her name", "age": 31,
                  "address": {"city": "Paris", "zip": "75001"}, "tags": ["x", "yy", "zzz"],
                  "kind": "beta"})
LONG_SCHEMA = {"type": "object", "required": ["story"], "additionalProperties": False,
               "properties": {"story": {"type": "string", "minLength": 600}}}
PROMPT_LEN, DECODE_TOKENS = 128, 48


def big_tokenizer(tokenizer, size: int = 128_000):
    """`tokenizer` with random byte-level tokens added to its vocabulary up to `size`."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab, rng = spec["model"]["vocab"], random.Random(0)
    alphabet = "abcdefghijklmnopqrstuvwxyzĠ0123456789{}\":,"
    while len(vocab) < size:
        vocab.setdefault("".join(rng.choice(alphabet) for _ in range(rng.randint(2, 9))),
                         len(vocab))
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                   eos_token=tokenizer.eos_token)


def mask_cost_llguidance(tokenizer) -> dict:
    compiler = GrammarCompiler(tokenizer, len(tokenizer))
    compiler.matcher(Constraint("json_object"))  # builds the tokenizer tables (not counted)
    start = time.perf_counter()
    matcher = compiler.matcher(Constraint("json_schema", json.dumps(DOC_SCHEMA)))
    compile_ms = (time.perf_counter() - start) * 1e3
    times = []
    for token in tokenizer.encode(DOC, add_special_tokens=False):
        start = time.perf_counter()
        compiler.fill_masks([matcher])
        times.append(time.perf_counter() - start)
        assert matcher.consume_token(token), matcher.get_error()
    return _summary(compile_ms, times)


def mask_cost_xgrammar(tokenizer) -> dict | None:
    try:
        import xgrammar as xgr
    except ImportError:
        return None
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=len(tokenizer))
    compiler = xgr.GrammarCompiler(info, max_threads=1)
    start = time.perf_counter()
    schema = {**DOC_SCHEMA}
    compiled = compiler.compile_json_schema(json.dumps(schema), any_whitespace=False,
                                            separators=(JSON_LAYOUT["item_separator"],
                                                        JSON_LAYOUT["key_separator"]))
    compile_ms = (time.perf_counter() - start) * 1e3
    matcher, mask = xgr.GrammarMatcher(compiled), xgr.allocate_token_bitmask(1, len(tokenizer))
    times = []
    for token in tokenizer.encode(DOC, add_special_tokens=False):
        start = time.perf_counter()
        matcher.fill_next_token_bitmask(mask)
        times.append(time.perf_counter() - start)
        assert matcher.accept_token(token)
    return _summary(compile_ms, times)


def _summary(compile_ms: float, times: list[float]) -> dict:
    return {"compile_ms": compile_ms, "tokens": len(times),
            "mean_us": statistics.mean(times) * 1e6, "max_us": max(times) * 1e6}


async def engine_steps(batches: list[int]) -> dict:
    engine = await Engine(EngineConfig(dtype="bfloat16", kv_memory_gb=1.0)).start()
    constraint = Constraint("json_schema", json.dumps(LONG_SCHEMA))
    out = {}
    for batch in batches:
        for name, c in (("free", None), ("json", constraint)):
            sp = SamplingParams(max_tokens=DECODE_TOKENS, ignore_eos=True, constraint=c,
                                temperature=0.8, seed=0)
            await _generate(engine, 2, sp)  # warm-up
            out[f"{name}_ms_b{batch}"] = await _generate(engine, batch, sp)
    await engine.stop()
    return out


async def _generate(engine: Engine, batch: int, sp: SamplingParams) -> float:
    async def one(i: int) -> None:
        ctx = engine.new_context()
        prompt = torch.randint(1000, 40000, (PROMPT_LEN,),
                               generator=torch.Generator().manual_seed(i)).tolist()
        engine.append(ctx, prompt)
        async for _ in engine.generate(ctx, sp):
            pass
        engine.free(ctx)

    await asyncio.gather(*[one(i) for i in range(batch)])
    return statistics.median(engine.stats().recent_step_ms[-(DECODE_TOKENS - 8):])


async def peer_steps(url: str, batches: list[int]) -> dict:
    import aiohttp

    out = {}
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{url}/v1/models") as r:
            model = (await r.json())["data"][0]["id"]
        for batch in batches:
            for name, fmt in (("free", None), ("json", LONG_SCHEMA)):
                await asyncio.gather(*[_peer_stream(http, url, model, i, fmt) for i in range(2)])
                gaps = await asyncio.gather(*[_peer_stream(http, url, model, i, fmt)
                                              for i in range(batch)])
                out[f"peer_{name}_ms_b{batch}"] = statistics.median(g for gs in gaps for g in gs)
    return out


async def _peer_stream(http, url: str, model: str, seed: int, schema: dict | None) -> list[float]:
    prompt = torch.randint(1000, 40000, (PROMPT_LEN,), generator=torch.Generator().manual_seed(seed))
    text = "Write a long story as JSON: " + " ".join(map(str, prompt.tolist()[:60]))
    body = {"model": model, "messages": [{"role": "user", "content": text}], "stream": True,
            "max_tokens": DECODE_TOKENS, "ignore_eos": True, "temperature": 0.8}
    # no per-request seed: vLLM-CPU 0.32's engine dies on seeded requests here ("CPU
    # Generator does not use offset", in its sampler's bookkeeping)
    if schema is not None:
        body["response_format"] = {"type": "json_schema",
                                   "json_schema": {"name": "story", "schema": schema}}
    stamps = []
    async with http.post(f"{url}/v1/chat/completions", json=body) as resp:
        async for line in resp.content:
            if line.startswith(b"data: {") and b'"content"' in line:
                stamps.append(time.perf_counter())
    return [(b - a) * 1000 for a, b in zip(stamps[8:], stamps[9:])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--peer-url", help="an OpenAI-compatible server to compare (vLLM-CPU)")
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    args = ap.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    floors = {"read_gb_s": measure_read_bandwidth(), **measure_matmul_rate()}
    from parrot.engine.loader import load_tokenizer
    from parrot.engine.model_files import resolve_model_dir

    tokenizer = load_tokenizer(resolve_model_dir(None)[0])
    masks = {}
    for vocab_name, tok in (("49k", tokenizer), ("128k", big_tokenizer(tokenizer))):
        masks[f"llguidance_{vocab_name}"] = mask_cost_llguidance(tok)
        masks[f"xgrammar_{vocab_name}"] = mask_cost_xgrammar(tok)
    steps = asyncio.run(engine_steps(args.batches))
    print(json.dumps({"floors": floors, "masks": masks, "steps": steps}, indent=1), flush=True)
    peer = asyncio.run(peer_steps(args.peer_url, args.batches)) if args.peer_url else {}
    print(json.dumps({"peer": peer}, indent=1))
    print(report(floors, masks, steps, peer, args.batches))


def report(floors: dict, masks: dict, steps: dict, peer: dict, batches: list[int]) -> str:
    lines = [f"floors: read {floors['read_gb_s']:.1f} GB/s, matmul bf16 "
             f"{floors['matmul_gflops_bf16']:.0f} / fp32 {floors['matmul_gflops_fp32']:.0f} GFLOP/s",
             "| grammar engine, vocab | compile ms | mask mean us | mask max us |",
             "|---|---|---|---|"]
    for name, m in masks.items():
        if m is not None:
            lines.append(f"| {name} | {m['compile_ms']:.1f} | {m['mean_us']:.0f} | "
                         f"{m['max_us']:.0f} |")
    lines += ["| batch | Parrot free ms | Parrot json ms | Parrot json/free | vLLM free ms | "
              "vLLM json ms | vLLM json/free | Parrot/vLLM (json) |", "|---|---|---|---|---|---|---|---|"]
    for b in batches:
        free, js = steps[f"free_ms_b{b}"], steps[f"json_ms_b{b}"]
        row = f"| {b} | {free:.1f} | {js:.1f} | {js / free:.3f} |"
        if peer:
            pf, pj = peer[f"peer_free_ms_b{b}"], peer[f"peer_json_ms_b{b}"]
            row += f" {pf:.1f} | {pj:.1f} | {pj / pf:.3f} | {js / pj:.2f} |"
        else:
            row += " - | - | - | - |"
        lines.append(row)
    return "\n".join(lines)


if __name__ == "__main__":
    main()
