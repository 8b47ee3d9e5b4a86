"""Decode attention with a long shared prefix: cascade vs plain paged, per layer, on CPU.

32 requests share a 2,000-token prefix and hold 64 private tokens each (SmolLM2-135M
attention shape: 9 q heads, 3 kv heads, head_dim 64). Prints ms per layer, the cascade
speed-up over plain paged attention measured in the same run, and the KV bytes read per
second: plain reads every request's KV (sum of kv_lens); cascade reads the shared prefix
once, so its "unique" GB/s counts the bytes it must read and "effective" the plain bytes.

Run: .venv/bin/python benchmarks/kernels_cascade.py [--iters 20] [--block-size 16]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from parrot_kernels import AttentionBatch, TorchAttentionBackend

NUM_REQUESTS, PREFIX_TOKENS, PRIVATE_TOKENS = 32, 2000, 64
NUM_Q_HEADS, NUM_KV_HEADS, HEAD_DIM = 9, 3, 64


def build_batch(block_size: int, num_blocks: int) -> AttentionBatch:
    """Shared prefix blocks (the last may be partial: its tail is copied per request,
    as a prefix cache does) then private blocks, all at random physical ids."""
    ids = list(range(num_blocks))
    random.Random(0).shuffle(ids)
    num_shared = PREFIX_TOKENS // block_size
    shared, free = ids[:num_shared], ids[num_shared:]
    kv_len = PREFIX_TOKENS + PRIVATE_TOKENS
    num_private = -(-kv_len // block_size) - num_shared
    tables = [shared + free[i * num_private : (i + 1) * num_private] for i in range(NUM_REQUESTS)]
    return AttentionBatch([1] * NUM_REQUESTS, [kv_len] * NUM_REQUESTS, tables)


def time_layer(backend, batch, q, k, v, iters: int) -> tuple[float, float]:
    """(prepare ms per step, forward ms per layer), forward averaged over `iters` layers."""
    start = time.perf_counter()
    backend.prepare(batch)
    prepare_ms = (time.perf_counter() - start) * 1e3
    backend.forward(q, k, v, 0)  # warm-up
    start = time.perf_counter()
    for _ in range(iters):
        out = backend.forward(q, k, v, 0)
    assert not torch.isnan(out).any()
    return prepare_ms, (time.perf_counter() - start) * 1e3 / iters


def run(dtype: torch.dtype, block_size: int, iters: int) -> None:
    num_blocks = -(-PREFIX_TOKENS // block_size) + NUM_REQUESTS * (-(-PRIVATE_TOKENS // block_size) + 1) + 1
    cache = torch.randn(1, 2, num_blocks, block_size, NUM_KV_HEADS, HEAD_DIM).to(dtype)
    batch = build_batch(block_size, num_blocks)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(NUM_REQUESTS, NUM_Q_HEADS, HEAD_DIM, generator=gen).to(dtype)
    k, v = (torch.randn(NUM_REQUESTS, NUM_KV_HEADS, HEAD_DIM, generator=gen).to(dtype) for _ in range(2))
    results = {}
    for name, enable in (("plain", False), ("cascade", True)):
        backend = TorchAttentionBackend(cache, enable_cascade=enable)
        results[name] = time_layer(backend, batch, q, k, v, iters)
        assert backend.is_cascade_step == enable
    token_bytes = 2 * NUM_KV_HEADS * HEAD_DIM * cache.element_size()  # K and V of one position
    plain_bytes = sum(batch.kv_lens) * token_bytes
    unique_bytes = (PREFIX_TOKENS + NUM_REQUESTS * PRIVATE_TOKENS) * token_bytes
    (plain_prep, plain_ms), (casc_prep, casc_ms) = results["plain"], results["cascade"]
    print(f"{str(dtype):15} bs={block_size:<3} plain {plain_ms:7.2f} ms/layer ({plain_bytes / plain_ms / 1e6:5.1f} GB/s)"
          f" | cascade {casc_ms:6.2f} ms/layer ({unique_bytes / casc_ms / 1e6:5.1f} GB/s unique,"
          f" {plain_bytes / casc_ms / 1e6:6.1f} GB/s effective) | speed-up {plain_ms / casc_ms:5.1f}x"
          f" | prepare/step plain {plain_prep:.2f} ms, cascade {casc_prep:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=20)
    parser.add_argument("--block-size", type=int, nargs="+", default=[16])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {NUM_REQUESTS} requests x "
          f"({PREFIX_TOKENS} shared + {PRIVATE_TOKENS} private) tokens, Hq={NUM_Q_HEADS} Hkv={NUM_KV_HEADS} D={HEAD_DIM}")
    for block_size in args.block_size:
        for dtype in (torch.float32, torch.bfloat16):
            run(dtype, block_size, args.iters)


if __name__ == "__main__":
    main()
