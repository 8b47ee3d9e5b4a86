"""Decode attention with a long shared prefix: cascade vs plain paged, per layer.

32 requests share a 2,000-token prefix and hold 64 private tokens each. Prints ms per layer
(one backend `forward`: KV write + attention), the cascade speed-up over plain paged
attention measured in the same run, and KV bytes read per second: plain reads every
request's KV (sum of kv_lens); cascade reads the shared prefix once, so "unique" GB/s counts
the bytes it must read and "effective" the bytes plain reads. For scale, the copy bandwidth
of the device (a 256 MB tensor copy, bytes read) is measured in the same run. Each number
is the best of several interleaved rounds (the CPU may be shared).

On CPU (default): the torch backend, SmolLM2-135M's attention shape (9 q heads, 3 kv heads,
head_dim 64), float32 and bfloat16. With `--device cuda`: bfloat16, the torch backend and
the FlashInfer backend (plain and cascade each), at SmolLM2's shape and Llama-3-8B's (32 q
heads, 8 kv heads, head_dim 128).

Run: .venv/bin/python benchmarks/kernels_cascade.py [--iters 10] [--block-size 16 1] [--threads N]
     python benchmarks/kernels_cascade.py --device cuda    # needs flashinfer (the cuda extra)
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from parrot_kernels import AttentionBatch, TorchAttentionBackend

NUM_REQUESTS, PREFIX_TOKENS, PRIVATE_TOKENS = 32, 2000, 64
SHAPES = {"smollm2": (9, 3, 64), "llama-8b": (32, 8, 128)}  # q heads, kv heads, head_dim
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


def best_ms(fn, iters: int, device: str = "cpu", rounds: int = ROUNDS) -> float:
    """Best over `rounds` of the mean time of `iters` calls, after one warm-up call."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    fn()
    sync()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        sync()
        best = min(best, (time.perf_counter() - start) * 1e3 / iters)
    return best


def copy_bandwidth_gbs(device: str) -> float:
    """Bytes read per second by a large tensor copy: a practical memory-bandwidth ceiling."""
    src = torch.randn(64 * 1024 * 1024, device=device)  # 256 MB
    dst = torch.empty_like(src)
    ms = best_ms(lambda: dst.copy_(src), iters=3, device=device)
    return src.numel() * src.element_size() / ms / 1e6


def backends(device: str):
    """(name, factory(cache, enable_cascade)) of the backends to compare on `device`."""
    found = [("torch", lambda cache, enable: TorchAttentionBackend(cache, enable_cascade=enable))]
    if device == "cuda":
        from parrot_kernels.flashinfer_backend import FlashInferAttentionBackend

        found.insert(0, ("flashinfer", lambda cache, enable: FlashInferAttentionBackend(cache, enable_cascade=enable)))
    return found


def run(dtype: torch.dtype, block_size: int, iters: int, device: str, shape: str) -> None:
    num_q_heads, num_kv_heads, head_dim = SHAPES[shape]
    num_blocks = -(-PREFIX_TOKENS // block_size) + NUM_REQUESTS * (-(-PRIVATE_TOKENS // block_size) + 1) + 1
    cache = torch.randn(1, 2, num_blocks, block_size, num_kv_heads, head_dim, device=device).to(dtype)
    batch = build_batch(block_size, num_blocks)
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(NUM_REQUESTS, num_q_heads, head_dim, generator=gen).to(dtype).to(device)
    k, v = (torch.randn(NUM_REQUESTS, num_kv_heads, head_dim, generator=gen).to(dtype).to(device) for _ in range(2))
    token_bytes = 2 * num_kv_heads * head_dim * cache.element_size()  # K and V of one position
    for name, make in backends(device):
        ms = {}
        for mode, enable in (("plain", False), ("cascade", True)):
            backend = make(cache, enable)
            ms[mode + "_prepare"] = best_ms(lambda: backend.prepare(batch), iters=1, device=device)
            assert backend.is_cascade_step == enable
            ms[mode] = best_ms(lambda: backend.forward(q, k, v, 0), iters, device)
        label = f"{name:10} {shape:8} {str(dtype)[6:]:8} block {block_size:<3}"
        report(label, batch, token_bytes, ms)


def report(label, batch, token_bytes, ms) -> None:
    plain_gb = sum(batch.kv_lens) * token_bytes / 1e9
    unique_gb = (PREFIX_TOKENS + NUM_REQUESTS * PRIVATE_TOKENS) * token_bytes / 1e9
    plain, cascade = ms["plain"], ms["cascade"]
    print(
        f"{label} plain {plain:7.3f} ms/layer ({plain_gb / plain * 1e3:6.1f} GB/s)"
        f" | cascade {cascade:6.3f} ms/layer ({unique_gb / cascade * 1e3:5.1f} GB/s unique,"
        f" {plain_gb / cascade * 1e3:6.1f} GB/s effective)"
        f" | speed-up {plain / cascade:5.1f}x"
        f" | prepare/step {ms['plain_prepare']:.2f} / {ms['cascade_prepare']:.2f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=10, help="layers per timing round")
    parser.add_argument("--block-size", type=int, nargs="+", default=[16])
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} threads"
    print(
        f"torch {torch.__version__}, {where}, copy bandwidth {copy_bandwidth_gbs(args.device):.1f} GB/s read;"
        f" {NUM_REQUESTS} requests x ({PREFIX_TOKENS} shared + {PRIVATE_TOKENS} private) tokens, decode"
    )
    if args.device == "cuda":
        cases = [(torch.bfloat16, shape) for shape in SHAPES]
    else:
        cases = [(torch.float32, "smollm2"), (torch.bfloat16, "smollm2")]
    for block_size in args.block_size:
        for dtype, shape in cases:
            run(dtype, block_size, args.iters, args.device, shape)


if __name__ == "__main__":
    main()
