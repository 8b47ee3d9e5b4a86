"""Decode attention with a long shared prefix: cascade vs plain paged, per layer, on CPU.

32 requests share a 2,000-token prefix and hold 64 private tokens each (SmolLM2-135M
attention shape: 9 q heads, 3 kv heads, head_dim 64). Prints ms per layer (one backend
`forward`: KV write + attention), the cascade speed-up over plain paged attention measured
in the same run, and KV bytes read per second: plain reads every request's KV (sum of
kv_lens); cascade reads the shared prefix once, so "unique" GB/s counts the bytes it must
read and "effective" the bytes plain reads. For scale, the copy bandwidth of this machine
(a 256 MB tensor copy, bytes read) is measured in the same run. The CPU may be shared, so
each number is the best of several interleaved rounds.

Run: .venv/bin/python benchmarks/kernels_cascade.py [--iters 10] [--block-size 16 1] [--threads N]
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from parrot_kernels import AttentionBatch, TorchAttentionBackend

NUM_REQUESTS, PREFIX_TOKENS, PRIVATE_TOKENS = 32, 2000, 64
NUM_Q_HEADS, NUM_KV_HEADS, HEAD_DIM = 9, 3, 64
ROUNDS = 5  # timing rounds per backend; the best is reported


def build_batch(block_size: int, num_blocks: int) -> AttentionBatch:
    """Shared prefix blocks then private blocks, at random physical ids. A prefix ending
    mid-block has its tail copied per request (as a prefix cache does): private."""
    ids = list(range(num_blocks))
    random.Random(0).shuffle(ids)
    num_shared = PREFIX_TOKENS // block_size
    shared, free = ids[:num_shared], ids[num_shared:]
    kv_len = PREFIX_TOKENS + PRIVATE_TOKENS
    num_private = -(-kv_len // block_size) - num_shared
    tables = [shared + free[i * num_private : (i + 1) * num_private] for i in range(NUM_REQUESTS)]
    return AttentionBatch([1] * NUM_REQUESTS, [kv_len] * NUM_REQUESTS, tables)


def best_ms(fn, iters: int, rounds: int = ROUNDS) -> float:
    """Best over `rounds` of the mean time of `iters` calls, after one warm-up call."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        best = min(best, (time.perf_counter() - start) * 1e3 / iters)
    return best


def copy_bandwidth_gbs() -> float:
    """Bytes read per second by a large tensor copy: a practical memory-bandwidth ceiling."""
    src = torch.randn(64 * 1024 * 1024)  # 256 MB
    dst = torch.empty_like(src)
    ms = best_ms(lambda: dst.copy_(src), iters=3)
    return src.numel() * src.element_size() / ms / 1e6


def run(dtype: torch.dtype, block_size: int, iters: int) -> None:
    num_blocks = -(-PREFIX_TOKENS // block_size) + NUM_REQUESTS * (-(-PRIVATE_TOKENS // block_size) + 1) + 1
    cache = torch.randn(1, 2, num_blocks, block_size, NUM_KV_HEADS, HEAD_DIM).to(dtype)
    batch = build_batch(block_size, num_blocks)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(NUM_REQUESTS, NUM_Q_HEADS, HEAD_DIM, generator=gen).to(dtype)
    k, v = (torch.randn(NUM_REQUESTS, NUM_KV_HEADS, HEAD_DIM, generator=gen).to(dtype) for _ in range(2))
    ms = {}
    for name, enable in (("plain", False), ("cascade", True)):
        backend = TorchAttentionBackend(cache, enable_cascade=enable)
        prepare_ms = best_ms(lambda: backend.prepare(batch), iters=1)
        assert backend.is_cascade_step == enable
        ms[name] = best_ms(lambda: backend.forward(q, k, v, 0), iters)
        ms[name + "_prepare"] = prepare_ms
    report(dtype, block_size, batch, cache.element_size(), ms)


def report(dtype, block_size, batch, element_size, ms) -> None:
    token_bytes = 2 * NUM_KV_HEADS * HEAD_DIM * element_size  # K and V of one position
    plain_gb = sum(batch.kv_lens) * token_bytes / 1e9
    unique_gb = (PREFIX_TOKENS + NUM_REQUESTS * PRIVATE_TOKENS) * token_bytes / 1e9
    plain, cascade = ms["plain"], ms["cascade"]
    print(
        f"{str(dtype)[6:]:8} block {block_size:<3}"
        f" plain {plain:6.2f} ms/layer ({plain_gb / plain * 1e3:5.1f} GB/s)"
        f" | cascade {cascade:5.2f} ms/layer ({unique_gb / cascade * 1e3:4.1f} GB/s unique,"
        f" {plain_gb / cascade * 1e3:5.1f} GB/s effective)"
        f" | speed-up {plain / cascade:5.1f}x"
        f" | prepare/step {ms['plain_prepare']:.2f} / {ms['cascade_prepare']:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="layers per timing round")
    parser.add_argument("--block-size", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, copy bandwidth"
        f" {copy_bandwidth_gbs():.1f} GB/s read; {NUM_REQUESTS} requests x ({PREFIX_TOKENS} shared"
        f" + {PRIVATE_TOKENS} private) tokens, Hq={NUM_Q_HEADS} Hkv={NUM_KV_HEADS} D={HEAD_DIM}, decode"
    )
    for block_size in args.block_size:
        for dtype in (torch.float32, torch.bfloat16):
            run(dtype, block_size, args.iters)


if __name__ == "__main__":
    main()
