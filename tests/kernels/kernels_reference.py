"""Float64 reference attention and random paged-batch builders for the kernels tests."""

from __future__ import annotations

import math
import random

import torch

from parrot_kernels import AttentionBatch


def reference_attention(q, kv_cache_layer, batch: AttentionBatch):
    """q: [T, Hq, D]; kv_cache_layer: [2, num_blocks, block_size, Hkv, D] (already written).

    Returns out [T, Hq, D] float64 and lse [T, Hq] float64 (base e)."""
    block_size = kv_cache_layer.shape[2]
    num_q_heads, head_dim = q.shape[1:]
    outs, lses, row = [], [], 0
    for q_len, kv_len, table in zip(batch.q_lens, batch.kv_lens, batch.block_tables):
        pos = torch.arange(kv_len)
        slots = torch.tensor(table)[pos // block_size] * block_size + pos % block_size
        k = kv_cache_layer[0].flatten(0, 1)[slots].double()  # [L, Hkv, D]
        v = kv_cache_layer[1].flatten(0, 1)[slots].double()
        group = num_q_heads // k.shape[1]
        k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)  # [L, Hq, D]
        qs = q[row : row + q_len].double()
        scores = torch.einsum("qhd,khd->hqk", qs, k) / math.sqrt(head_dim)
        q_pos = torch.arange(kv_len - q_len, kv_len)
        scores = scores.masked_fill(pos[None, None, :] > q_pos[None, :, None], float("-inf"))
        lse = torch.logsumexp(scores, -1)  # [Hq, Q]
        outs.append(torch.einsum("hqk,khd->qhd", torch.exp(scores - lse[..., None]), v))
        lses.append(lse.T)
        row += q_len
    return torch.cat(outs), torch.cat(lses)


class BlockPool:
    """Hands out distinct physical block ids in random order."""

    def __init__(self, num_blocks: int, rng: random.Random):
        self.free = list(range(num_blocks))
        rng.shuffle(self.free)

    def take(self, n: int) -> list[int]:
        if n > len(self.free):
            raise RuntimeError("block pool exhausted")
        out, self.free = self.free[:n], self.free[n:]
        return out


def private_batch(q_lens, kv_lens, block_size, pool: BlockPool) -> AttentionBatch:
    """Sequences with no shared blocks."""
    tables = [pool.take(-(-L // block_size)) for L in kv_lens]
    return AttentionBatch(list(q_lens), list(kv_lens), tables)


def forked_batch(tree, block_size, pool: BlockPool) -> AttentionBatch:
    """Sequences sharing whole-block prefixes, described as a tree.

    tree: list of (prefix_tokens, children) nodes; a leaf is (private_tokens, q_len).
    prefix_tokens must be a multiple of block_size for inner nodes (whole shared blocks).
    """
    q_lens, kv_lens, tables = [], [], []

    def walk(node, prefix_blocks, prefix_len):
        tokens, rest = node
        if isinstance(rest, int):  # leaf: private tokens incl. the new ones
            kv_len = prefix_len + tokens
            q_lens.append(rest)
            kv_lens.append(kv_len)
            tables.append(prefix_blocks + pool.take(-(-kv_len // block_size) - len(prefix_blocks)))
            return
        assert tokens % block_size == 0
        blocks = prefix_blocks + pool.take(tokens // block_size)
        for child in rest:
            walk(child, blocks, prefix_len + tokens)

    for root in tree:
        walk(root, [], 0)
    return AttentionBatch(q_lens, kv_lens, tables)


def random_cache(num_layers, num_blocks, block_size, num_kv_heads, head_dim, dtype, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape = (num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim)
    return torch.randn(shape, generator=gen, dtype=torch.float32).to(dtype)


def bf16_close(got: torch.Tensor, want: torch.Tensor, steps: float = 2.0) -> None:
    """Within `steps` bf16 rounding steps (2**-8) of the exact value, relative above 1 and
    absolute below it."""
    err = (got.double() - want.double()).abs()
    bound = steps * 2.0**-8 * want.double().abs().clamp_min(1.0)
    assert (err <= bound).all(), f"max err {err.max().item():.4g}, worst ratio {(err / bound).max().item():.3g}"
