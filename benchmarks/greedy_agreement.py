"""Greedy agreement of an engine variant with the float32 reference, over many prompts.

Each of N chat prompts (default 50) is generated greedily for T tokens (default 32) by the
float32 eager engine (the reference: it matches transformers' float32 forward) and by each
variant (bf16 with the CPU kernels, bf16 eager, bf16 + int8 weight-only decode). Prints,
per variant, the share of prompts whose whole output equals the reference and the mean
share of tokens before the first difference. Greedy outputs of a lower-precision model
diverge somewhere on some prompts; the point is how often, next to the other variants.
Variants run 4 sequences per step, so the int8 variant's decode really uses int8 weights.

Run: .venv/bin/python benchmarks/greedy_agreement.py [--prompts 50] [--tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio

from parrot.engine import Engine, EngineConfig, SamplingParams

TOPICS = ["the moon", "bread", "rivers", "chess", "volcanoes", "the violin", "honey bees", "glass",
          "trains", "the ocean", "winter", "maps", "coffee", "clocks", "deserts", "paper", "owls",
          "bridges", "rain", "salt", "the alphabet", "copper", "tea", "lighthouses", "cats"]
ASKS = ["Write two sentences about {}.", "What is interesting about {}? Answer briefly."]

VARIANTS = {
    "bf16 + CPU kernels (default)": dict(dtype="bfloat16"),
    "bf16 eager (--no-cpu-kernels)": dict(dtype="bfloat16", cpu_kernels=False, linear_kernel="torch"),
    "bf16 + int8 decode (--quantization int8)": dict(dtype="bfloat16", quantization="int8"),
}


def prompts(n: int) -> list[str]:
    return [ASKS[i % len(ASKS)].format(TOPICS[i // len(ASKS) % len(TOPICS)]) for i in range(n)]


async def generate_all(config: EngineConfig, texts: list[str], tokens: int) -> list[list[int]]:
    engine = await Engine(config).start()
    sp = SamplingParams(max_tokens=tokens, temperature=0.0, ignore_eos=True)

    async def one(text: str) -> list[int]:
        ctx = engine.new_context()
        chat = [{"role": "user", "content": text}]
        text = engine.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
        engine.append(ctx, engine.tokenizer.encode(text))
        out = [t async for chunk in engine.generate(ctx, sp) for t in chunk.token_ids]
        engine.free(ctx)
        return out

    try:
        return list(await asyncio.gather(*[one(t) for t in texts]))
    finally:
        await engine.stop()


def agreement(ref: list[list[int]], got: list[list[int]]) -> tuple[float, float]:
    same = sum(r == g for r, g in zip(ref, got)) / len(ref)
    prefix = []
    for r, g in zip(ref, got):
        n = next((i for i, (a, b) in enumerate(zip(r, g)) if a != b), len(r))
        prefix.append(n / len(r))
    return same, sum(prefix) / len(prefix)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=50)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    texts = prompts(args.prompts)
    ref = asyncio.run(generate_all(EngineConfig(dtype="float32", kv_memory_gb=0.5), texts, args.tokens))
    print(f"{args.prompts} prompts x {args.tokens} greedy tokens, reference: float32 eager")
    for name, kw in VARIANTS.items():
        # at most 4 sequences per step: int8 weights serve decode-sized inputs (<= 4 rows)
        got = asyncio.run(generate_all(EngineConfig(kv_memory_gb=0.5, max_num_seqs=4, **kw), texts, args.tokens))
        same, prefix = agreement(ref, got)
        print(f"{name:42s} identical outputs {same:6.1%}   tokens before the first difference {prefix:6.1%}")


if __name__ == "__main__":
    main()
