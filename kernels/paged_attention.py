"""Paged attention in plain torch ops: KV writes, decode and prefill over a paged cache.

Per-layer cache views: `k_cache`, `v_cache`: [num_blocks, block_size, num_kv_heads, head_dim].
GQA: query head i reads kv head `i // g` with `g = num_q_heads // num_kv_heads`.
Softmax scale is 1/sqrt(head_dim). Every log-sum-exp here is in base e (natural log) and
float32; FlashInfer's is base 2 (lse_e = lse_2 * ln 2).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .batch import AttentionBatch

PREFILL_QUERY_CHUNK = 512  # query rows per score matrix on the LSE path (bounds memory)


class DecodePlan(NamedTuple):
    """Index tensors for the batched decode of every q_len == 1 sequence."""

    rows: Tensor  # [B] long: query row of each decode sequence
    blocks: Tensor  # [B * max_blocks] long: padded block tables, flattened (pad id 0)
    mask: Tensor  # [B, 1, max_blocks * block_size] bool: True where kv position < kv_len
    max_blocks: int


class PrefillSeq(NamedTuple):
    """One sequence with q_len > 1, attended on its own (compute-bound)."""

    row_start: int
    q_len: int
    kv_len: int
    blocks: Tensor  # [ceil(kv_len / block_size)] long


class PagedPlan(NamedTuple):
    num_tokens: int
    decode: DecodePlan | None
    prefills: list[PrefillSeq]


def slot_mapping(batch: AttentionBatch, block_size: int) -> Tensor:
    """Flat cache slot (block * block_size + offset) of every new token: [num_tokens] long."""
    slots: list[int] = []
    for q_len, kv_len, table in zip(batch.q_lens, batch.kv_lens, batch.block_tables):
        for pos in range(kv_len - q_len, kv_len):
            slots.append(table[pos // block_size] * block_size + pos % block_size)
    return torch.tensor(slots, dtype=torch.long)


def write_kv(k_cache: Tensor, v_cache: Tensor, k: Tensor, v: Tensor, slots: Tensor) -> None:
    """Store new keys/values in place. k, v: [T, Hkv, D]; slots: [T] long."""
    num_kv_heads, head_dim = k_cache.shape[-2:]
    # .view (not reshape/flatten) so a non-contiguous cache fails loudly instead of copying.
    k_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, k.to(k_cache.dtype))
    v_cache.view(-1, num_kv_heads, head_dim).index_copy_(0, slots, v.to(v_cache.dtype))


def plan_paged(batch: AttentionBatch, block_size: int, device: torch.device | str = "cpu") -> PagedPlan:
    """Build all index tensors for one step (call once per step, reuse for every layer)."""
    starts = batch.query_starts()
    decode_ids = [i for i, q_len in enumerate(batch.q_lens) if q_len == 1]
    decode = _plan_decode(batch, decode_ids, starts, block_size, device) if decode_ids else None
    prefills = []
    for i, q_len in enumerate(batch.q_lens):
        if q_len > 1:
            num_blocks = -(-batch.kv_lens[i] // block_size)
            blocks = torch.tensor(batch.block_tables[i][:num_blocks], dtype=torch.long, device=device)
            prefills.append(PrefillSeq(starts[i], q_len, batch.kv_lens[i], blocks))
    return PagedPlan(batch.num_tokens, decode, prefills)


def _plan_decode(batch, seq_ids, starts, block_size, device) -> DecodePlan:
    kv_lens = [batch.kv_lens[i] for i in seq_ids]
    max_blocks = -(-max(kv_lens) // block_size)
    padded = torch.zeros(len(seq_ids), max_blocks, dtype=torch.long)
    for row, i in enumerate(seq_ids):
        table = batch.block_tables[i][: -(-kv_lens[row] // block_size)]
        padded[row, : len(table)] = torch.tensor(table, dtype=torch.long)
    positions = torch.arange(max_blocks * block_size)
    mask = positions[None, :] < torch.tensor(kv_lens)[:, None]  # [B, max_blocks * block_size]
    rows = torch.tensor([starts[i] for i in seq_ids], dtype=torch.long)
    return DecodePlan(rows.to(device), padded.flatten().to(device), mask[:, None].to(device), max_blocks)


def paged_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, plan: PagedPlan, return_lse: bool = False,
    workspace: tuple[Tensor, Tensor] | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of the new tokens over their sequences' paged KV (already written).

    q: [T, Hq, D] -> out [T, Hq, D] (q's dtype), and lse [T, Hq] float32 if return_lse.
    workspace: optional decode gather buffers (see `decode_attention`).
    """
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
    if plan.decode is not None:
        d = plan.decode
        o, l = decode_attention(q.index_select(0, d.rows), k_cache, v_cache, d, workspace)
        out.index_copy_(0, d.rows, o)
        if lse is not None:
            lse.index_copy_(0, d.rows, l)
    for seq in plan.prefills:
        rows = slice(seq.row_start, seq.row_start + seq.q_len)
        k, v = gather_kv(k_cache, v_cache, seq.blocks, seq.kv_len)
        if lse is None:
            out[rows] = prefill_attention_sdpa(q[rows], k, v)
        else:
            out[rows], lse[rows] = prefill_attention(q[rows], k, v)
    return (out, lse) if return_lse else out


def gather_kv(k_cache: Tensor, v_cache: Tensor, blocks: Tensor, kv_len: int) -> tuple[Tensor, Tensor]:
    """One sequence's K and V: [kv_len, Hkv, D] each."""
    shape = (-1,) + tuple(k_cache.shape[2:])
    k = k_cache.index_select(0, blocks).view(shape)[:kv_len]
    v = v_cache.index_select(0, blocks).view(shape)[:kv_len]
    return k, v


def decode_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, plan: DecodePlan,
    workspace: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Batched decode: gather padded K/V once, then one masked bmm per kv head.

    q: [B, Hq, D] -> (out [B, Hq, D], lse [B, Hq] float32).
    workspace: optional preallocated gather buffers [B * max_blocks, block_size, Hkv, D]
    (reused across layers: fresh 100 MB allocations cost more than the gather itself).
    """
    num_seqs, num_q_heads, head_dim = q.shape
    num_kv_heads, q_dtype = k_cache.shape[2], q.dtype
    k_buf, v_buf = workspace if workspace is not None else (None, None)
    k = torch.index_select(k_cache, 0, plan.blocks, out=k_buf) if k_buf is not None else k_cache.index_select(0, plan.blocks)
    v = torch.index_select(v_cache, 0, plan.blocks, out=v_buf) if v_buf is not None else v_cache.index_select(0, plan.blocks)
    k = k.view(num_seqs, -1, num_kv_heads, head_dim)  # [B, L_max, Hkv, D]
    v = v.view(num_seqs, -1, num_kv_heads, head_dim)
    group = num_q_heads // num_kv_heads
    q = (q.float() * (1.0 / math.sqrt(head_dim))).view(num_seqs, num_kv_heads, group, head_dim)
    outs, lses = [], []
    for h in range(num_kv_heads):
        # [B, g, D] @ [B, D, L_max], all in float32 (bf16 scores or probs lose ~1e-2); for
        # float32 caches k[:, :, h] is a strided view that bmm reads without a copy.
        scores = torch.bmm(q[:, h], k[:, :, h].float().transpose(1, 2))
        scores.masked_fill_(~plan.mask, float("-inf"))
        lse = torch.logsumexp(scores, dim=-1)  # [B, g]
        probs = torch.exp(scores - lse[..., None])
        outs.append(torch.bmm(probs, v[:, :, h].float()).to(q_dtype))  # [B, g, D]
        lses.append(lse)
    out = torch.stack(outs, dim=1).view(num_seqs, num_q_heads, head_dim)
    return out, torch.stack(lses, dim=1).view(num_seqs, num_q_heads)


def causal_mask(q_len: int, kv_len: int, device=None) -> Tensor:
    """Bottom-right aligned causal mask [q_len, kv_len], True = visible.

    Query i sits at position kv_len - q_len + i and sees kv positions <= that.
    """
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    return torch.arange(kv_len, device=device)[None, :] <= q_pos[:, None]


def prefill_attention_sdpa(q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q: [Q, Hq, D], k/v: [L, Hkv, D] -> [Q, Hq, D], bottom-right causal, via torch SDPA."""
    q_len, kv_len = q.shape[0], k.shape[0]
    group = q.shape[1] // k.shape[1]
    qh, kh, vh = q.transpose(0, 1), k.transpose(0, 1), v.transpose(0, 1)  # heads first
    if group > 1:
        kh, vh = kh.repeat_interleave(group, 0), vh.repeat_interleave(group, 0)
    if q_len == kv_len:
        out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, is_causal=True)
    else:
        mask = causal_mask(q_len, kv_len, q.device)
        out = torch.nn.functional.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask)
    return out.transpose(0, 1)


def prefill_attention(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Like prefill_attention_sdpa but also returns lse [Q, Hq] (float32, base e)."""
    q_len, kv_len = q.shape[0], k.shape[0]
    mask = causal_mask(q_len, kv_len, q.device)
    outs, lses = [], []
    for start in range(0, q_len, PREFILL_QUERY_CHUNK):
        rows = slice(start, start + PREFILL_QUERY_CHUNK)
        o, l = dense_attention(q[rows], k, v, mask[rows])
        outs.append(o)
        lses.append(l)
    return torch.cat(outs), torch.cat(lses)


def dense_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """All query rows against one contiguous K/V, one bmm per step for all heads.

    q: [M, Hq, D]; k, v: [N, Hkv, D]; mask: [M, N] bool (True = visible) or None.
    Returns out [M, Hq, D] (q's dtype) and lse [M, Hq] float32 (base e; -inf, with out 0,
    for a row that sees nothing).
    """
    num_rows, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[1]
    group = num_q_heads // num_kv_heads
    # [M, Hkv, g, D] -> [Hkv, g * M, D]: every query row of a kv head in one matrix.
    qg = (q.float() * (1.0 / math.sqrt(head_dim))).view(num_rows, num_kv_heads, group, head_dim)
    qg = qg.permute(1, 2, 0, 3).reshape(num_kv_heads, group * num_rows, head_dim)
    scores = torch.bmm(qg, k.float().permute(1, 2, 0))  # [Hkv, g * M, N] float32
    if mask is not None:
        full_mask = mask[None].expand(group, -1, -1).reshape(group * num_rows, -1)
        scores.masked_fill_(~full_mask, float("-inf"))
    lse = torch.logsumexp(scores, dim=-1)  # [Hkv, g * M]
    safe_lse = torch.where(torch.isinf(lse), torch.zeros_like(lse), lse)
    probs = torch.exp(scores - safe_lse[..., None])
    out = torch.bmm(probs, v.float().transpose(0, 1)).to(q.dtype)  # [Hkv, g * M, D]
    out = out.view(num_kv_heads, group, num_rows, head_dim).permute(2, 0, 1, 3)
    lse = lse.view(num_kv_heads, group, num_rows).permute(2, 0, 1)
    return out.reshape(num_rows, num_q_heads, head_dim), lse.reshape(num_rows, num_q_heads)
