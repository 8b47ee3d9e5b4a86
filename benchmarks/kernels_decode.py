"""Parrot's CPU decode kernels alone, at SmolLM2-135M's shapes (bf16, AVX2 kernels).

1. Projections (`parrot.linear_packed`): one decode step's worth (30 layers of qkv, o,
   gate_up, down, and the lm_head) at M = 1..32 rows: ms per step, GFLOP/s, and the weights'
   GB/s, next to the machine's read bandwidth and matmul rate measured in the same run.
2. Decode attention (`parrot.paged_decode_attention`) at batch B x L cached tokens, per layer,
   over `--caches` distinct caches used in turn (30: a step's working set, out of cache; 1:
   cache-resident), checked against a float64 reference first.

Run: .venv/bin/python benchmarks/kernels_decode.py [--caches 30]. For an A/B of two kernel
versions run it once per checkout (the build cache is keyed by the sources).
"""
from __future__ import annotations

import argparse
import time

import torch

from kernels import cpu_ops
from parrot.bench.engine_bench import measure_matmul_rate, measure_read_bandwidth

HIDDEN, INTERMEDIATE, VOCAB, LAYERS = 576, 1536, 49152, 30
HQ, HKV, D, BS = 9, 3, 64, 16
SHAPES = [(HQ * D + 2 * HKV * D, HIDDEN), (HIDDEN, HQ * D), (2 * INTERMEDIATE, HIDDEN), (HIDDEN, INTERMEDIATE)]


def best_of(fn, reps: int) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def projections(rows: list[int], read_gbs: float, matmul_gflops: float) -> None:
    pack = torch.ops.parrot.pack_linear_weight
    layers = [[(pack(torch.randn(n, k).to(torch.bfloat16)), n, k) for n, k in SHAPES] for _ in range(LAYERS)]
    head = (pack(torch.randn(VOCAB, HIDDEN).to(torch.bfloat16)), VOCAB, HIDDEN)
    params = LAYERS * sum(n * k for n, k in SHAPES) + VOCAB * HIDDEN
    for m in rows:
        xs = {k: torch.randn(m, k).to(torch.bfloat16) for k in (HIDDEN, INTERMEDIATE, HQ * D)}

        def step():
            for layer in layers:
                for w, n, k in layer:
                    torch.ops.parrot.linear_packed(xs[k], w, n, None)
            torch.ops.parrot.linear_packed(xs[HIDDEN], head[0], VOCAB, None)

        s = best_of(step, 5)
        floor = max(params * 2 / read_gbs / 1e9, 2 * params * m / matmul_gflops / 1e9)
        print(f"projections M={m:3d}: {s * 1e3:6.2f} ms per step, {2 * params * m / s / 1e9:6.1f} GFLOP/s, "
              f"weights {params * 2 / s / 1e9:5.1f} GB/s; floor {floor * 1e3:.2f} ms -> {floor / s:.0%}")


def attention(cases: list[tuple[int, int]], caches: int, read_gbs: float) -> None:
    scale = D ** -0.5
    for b, length in cases:
        per = -(-length // BS)
        num_blocks = b * per + 100
        ks = [torch.randn(num_blocks, BS, HKV, D).to(torch.bfloat16) for _ in range(caches)]
        vs = [torch.randn(num_blocks, BS, HKV, D).to(torch.bfloat16) for _ in range(caches)]
        tables = torch.randperm(num_blocks)[: b * per].to(torch.int32).view(b, per).contiguous()
        lens = torch.full((b,), length, dtype=torch.int32)
        q = torch.randn(b, HQ, D).to(torch.bfloat16)
        out, _ = torch.ops.parrot.paged_decode_attention(q, ks[0], vs[0], tables, lens, scale)
        k = ks[0][tables[0].long()].reshape(-1, HKV, D)[:length].double().repeat_interleave(HQ // HKV, 1)
        v = vs[0][tables[0].long()].reshape(-1, HKV, D)[:length].double().repeat_interleave(HQ // HKV, 1)
        ref = torch.einsum("ht,thd->hd", (torch.einsum("hd,thd->ht", q[0].double(), k) * scale).softmax(-1), v)
        assert (out[0].double() - ref).abs().max() < 2e-2, "decode attention disagrees with the reference"
        turn = iter(range(1 << 30))

        def call():
            i = next(turn) % caches
            torch.ops.parrot.paged_decode_attention(q, ks[i], vs[i], tables, lens, scale)

        s = best_of(lambda: [call() for _ in range(60)], 5) / 60
        kv_bytes = b * length * HKV * D * 2 * 2
        print(f"attention B={b:3d} L={length:5d}: {s * 1e6:7.1f} us per layer, KV read {kv_bytes / s / 1e9:5.1f} GB/s "
              f"({kv_bytes / s / 1e9 / read_gbs:.0%} of the read bandwidth), x{LAYERS} layers {s * LAYERS * 1e3:.2f} ms")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--caches", type=int, default=30, help="distinct KV caches used in turn")
    p.add_argument("--rows", type=int, nargs="+", default=[1, 4, 8, 16, 32])
    args = p.parse_args()
    if not cpu_ops.load():
        raise SystemExit("Parrot's CPU kernels are not available here (AVX2 + FMA and a compiler needed)")
    torch.manual_seed(0)
    read_gbs, matmul = measure_read_bandwidth(), measure_matmul_rate()["matmul_gflops_fp32"]
    print(f"read bandwidth {read_gbs:.1f} GB/s, fp32 matmul {matmul:.0f} GFLOP/s (measured now)")
    projections(args.rows, read_gbs, matmul)
    attention([(1, 550), (8, 550), (32, 128), (16, 1000)], args.caches, read_gbs)


if __name__ == "__main__":
    main()
