"""`parrot generate`: offline generation on the engine, no server."""
from __future__ import annotations

import argparse
import asyncio
import sys
import time


def add_generate_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("prompt", nargs="*", help="prompts (default: one example prompt)")
    p.add_argument("--max-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--raw", action="store_true", help="do not wrap prompts in the chat template")


async def generate(engine_config, args: argparse.Namespace) -> None:
    from parrot.engine import Engine, SamplingParams

    engine = await Engine(engine_config).start()
    prompts = args.prompt or ["Write one sentence about parrots."]
    sampling = SamplingParams(max_tokens=args.max_tokens, temperature=args.temperature,
                              top_p=args.top_p, seed=args.seed)
    start = time.perf_counter()
    try:
        outputs = await asyncio.gather(*[_one(engine, p, sampling, args.raw) for p in prompts])
    finally:
        await engine.stop()
    elapsed = time.perf_counter() - start
    for prompt, (text, n) in zip(prompts, outputs):
        print(f"### {prompt}\n{text}\n")
    total = sum(n for _, n in outputs)
    print(f"[{len(prompts)} prompts, {total} tokens in {elapsed:.2f}s, "
          f"{total / elapsed:.1f} tokens/s]", file=sys.stderr)


async def _one(engine, prompt: str, sampling, raw: bool) -> tuple[str, int]:
    from parrot.server.prompts import chat_token_ids  # tokenized exactly as the chat endpoint does

    tok = engine.tokenizer
    if raw or not getattr(tok, "chat_template", None):
        ids = tok.encode(prompt)
    else:
        ids = chat_token_ids(tok, [{"role": "user", "content": prompt}])
    ctx = engine.new_context()
    engine.append(ctx, ids)
    parts, n = [], 0
    try:
        async for chunk in engine.generate(ctx, sampling):
            parts.append(chunk.text)
            n += len(chunk.token_ids)
    finally:
        engine.free(ctx)
    return "".join(parts), n
