"""Paged KV cache plumbing: per-step plans, KV writes, block gathers, and the dispatch of
a batch's sequences to batched decode or per-sequence prefill (see attention_ops).

Per-layer cache views: `k_cache`, `v_cache`: [num_blocks, block_size, num_kv_heads, head_dim].
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .attention_ops import decode_attention, prefill_attention
from .batch import AttentionBatch


class DecodePlan(NamedTuple):
    """Index tensors for the batched decode of every q_len == 1 sequence. With `tables`
    set, the decode reads the cache in place (Parrot's CPU kernel); else it gathers."""

    rows: Tensor  # [B] long: query row of each decode sequence
    blocks: Tensor  # [B * max_blocks] long: padded block tables, flattened (pad id 0)
    is_padding: Tensor | None  # [B, max_blocks * block_size] bool: kv position >= kv_len (None: none)
    max_blocks: int
    tables: Tensor | None = None  # [B, max_blocks] int32: the kernel's block tables
    kv_lens: Tensor | None = None  # [B] int32

    @property
    def in_place(self) -> bool:
        return self.tables is not None


class InPlaceStep(NamedTuple):
    """A step's attention inputs for the whole-step runner (`parrot.decoder_layers`) when
    every row reads the cache in place: the whole cache, the new tokens' slots, the decode
    rows with their block tables, the prefill chunks (a cascade step's private level), and
    the cascade groups, each one run of rows over its shared blocks (none: a plain step)."""

    kv_cache: Tensor  # [layers, 2, blocks, block_size, Hkv, D]
    slots: Tensor  # [T] long: each new token's cache slot
    decode_rows: Tensor  # [B] long: the decode sequences' rows (0..T-1 when all are decodes)
    block_tables: Tensor  # [B, max_blocks] int32
    kv_lens: Tensor  # [B] int32
    prefill_starts: list[int]  # each prefill chunk's first row
    prefill_lens: list[int]  # its new tokens
    prefill_kv_lens: list[int]  # its keys (cached and new)
    prefill_blocks: list[Tensor]  # its blocks, long
    group_starts: list[int]  # each cascade group's first row
    group_lens: list[int]  # its rows
    group_blocks: list[Tensor]  # its shared blocks, long


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
    in_place: bool = False  # Parrot's CPU kernels read the paged cache directly


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


def plan_paged(
    batch: AttentionBatch, block_size: int, device: torch.device | str = "cpu", in_place: bool = False,
) -> PagedPlan:
    """Build all index tensors for one step (call once per step, reuse for every layer).
    `in_place`: decodes read the cache through int32 block tables (the CPU kernel)."""
    starts = batch.query_starts()
    decode_ids = [i for i, q_len in enumerate(batch.q_lens) if q_len == 1]
    decode = None
    if decode_ids:
        plan_decode = _plan_decode_in_place if in_place else _plan_decode
        decode = plan_decode(batch, decode_ids, starts, block_size, device)
    prefills = []
    for i, q_len in enumerate(batch.q_lens):
        if q_len > 1:
            num_blocks = -(-batch.kv_lens[i] // block_size)
            blocks = torch.tensor(batch.block_tables[i][:num_blocks], dtype=torch.long, device=device)
            prefills.append(PrefillSeq(starts[i], q_len, batch.kv_lens[i], blocks))
    return PagedPlan(batch.num_tokens, decode, prefills, in_place)


def _padded_tables(batch, seq_ids, block_size, dtype) -> tuple[list[int], Tensor]:
    """kv_lens of `seq_ids` and their block tables, padded with block 0: [B, max_blocks]."""
    kv_lens = [batch.kv_lens[i] for i in seq_ids]
    tables = torch.zeros(len(seq_ids), -(-max(kv_lens) // block_size), dtype=dtype)
    for row, i in enumerate(seq_ids):
        table = batch.block_tables[i][: -(-kv_lens[row] // block_size)]
        tables[row, : len(table)] = torch.tensor(table, dtype=dtype)
    return kv_lens, tables


def _plan_decode(batch, seq_ids, starts, block_size, device) -> DecodePlan:
    kv_lens, padded = _padded_tables(batch, seq_ids, block_size, torch.long)
    max_blocks = padded.shape[1]
    positions = torch.arange(max_blocks * block_size)
    is_padding = positions[None, :] >= torch.tensor(kv_lens)[:, None]  # [B, max_blocks * block_size]
    is_padding = is_padding.to(device) if is_padding.any() else None
    rows = torch.tensor([starts[i] for i in seq_ids], dtype=torch.long)
    return DecodePlan(rows.to(device), padded.flatten().to(device), is_padding, max_blocks)


def _plan_decode_in_place(batch, seq_ids, starts, block_size, device) -> DecodePlan:
    """CPU kernel plan: int32 tables on the CPU (the kernel runs on the CPU; `device` unused)."""
    kv_lens, tables = _padded_tables(batch, seq_ids, block_size, torch.int32)
    rows = torch.tensor([starts[i] for i in seq_ids], dtype=torch.long)
    empty = torch.empty(0, dtype=torch.long)
    return DecodePlan(rows, empty, None, tables.shape[1], tables, torch.tensor(kv_lens, dtype=torch.int32))


def paged_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, plan: PagedPlan, return_lse: bool = False,
    workspace: GatherWorkspace | None = None, use_fused: bool = True,
) -> Tensor | tuple[Tensor, Tensor]:
    """Attention of the new tokens over their sequences' paged KV (already written).

    q: [T, Hq, D] -> out [T, Hq, D] (q's dtype), and lse [T, Hq] float32 (base e) if
    return_lse. Decode sequences run as one batch; prefills one by one (compute-bound).
    workspace: the decode gather buffers, reused across layers (made here if None).
    """
    if plan.decode is not None and not plan.prefills:  # pure decode: rows are 0..T-1 in order
        out, lse = _batched_decode(q, k_cache, v_cache, plan.decode, workspace, use_fused)
        return (out.to(q.dtype), lse) if return_lse else out.to(q.dtype)
    out = torch.empty_like(q)
    lse = torch.empty(q.shape[:2], dtype=torch.float32, device=q.device) if return_lse else None
    if plan.decode is not None:
        rows = plan.decode.rows
        o, l = _batched_decode(q.index_select(0, rows), k_cache, v_cache, plan.decode, workspace, use_fused)
        out.index_copy_(0, rows, o.to(q.dtype))
        if lse is not None:
            lse.index_copy_(0, rows, l)
    for seq in plan.prefills:
        rows = slice(seq.row_start, seq.row_start + seq.q_len)
        if plan.in_place:
            o, seq_lse = run_in_place(q[rows], k_cache, v_cache, seq.blocks, seq.kv_len, causal=True)
        else:
            k, v = gather_kv(k_cache, v_cache, seq.blocks, seq.kv_len)
            o, seq_lse = prefill_attention(q[rows], k, v, use_fused)
        out[rows] = o.to(q.dtype)
        if lse is not None:
            lse[rows] = seq_lse
    return (out, lse) if return_lse else out


def _batched_decode(q, k_cache, v_cache, plan: DecodePlan, workspace, use_fused) -> tuple[Tensor, Tensor]:
    """q: [B, Hq, D], the decode sequences' queries -> out [B, Hq, D], lse [B, Hq]."""
    if plan.in_place:
        scale = 1.0 / math.sqrt(q.shape[-1])
        return torch.ops.parrot.paged_decode_attention(q, k_cache, v_cache, plan.tables, plan.kv_lens, scale)
    workspace = workspace or GatherWorkspace(plan.blocks.numel(), k_cache)
    k, v = workspace.gather(k_cache, v_cache, plan.blocks)  # [B * max_blocks, block_size, Hkv, D]
    num_seqs = q.shape[0]
    k, v = k.view(num_seqs, -1, *k.shape[2:]), v.view(num_seqs, -1, *v.shape[2:])  # [B, L_max, Hkv, D]
    return decode_attention(q, k, v, plan.is_padding, use_fused)


def run_in_place(q: Tensor, k_cache: Tensor, v_cache: Tensor, blocks: Tensor, kv_len: int,
                 causal: bool) -> tuple[Tensor, Tensor]:
    """Parrot's CPU kernel: q [M, Hq, D] over `kv_len` keys in `blocks`, read in place
    (causal: bottom-right aligned) -> out [M, Hq, D], lse [M, Hq] float32."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    return torch.ops.parrot.paged_prefill_attention(q, k_cache, v_cache, blocks, kv_len, causal, scale)


def gather_kv(k_cache: Tensor, v_cache: Tensor, blocks: Tensor, kv_len: int) -> tuple[Tensor, Tensor]:
    """One sequence's K and V: [kv_len, Hkv, D] each."""
    shape = (-1,) + tuple(k_cache.shape[2:])
    k = k_cache.index_select(0, blocks).view(shape)[:kv_len]
    v = v_cache.index_select(0, blocks).view(shape)[:kv_len]
    return k, v


class BufferPool:
    """Grow-only scratch buffers by name, kept across steps: after the first steps no
    gather buffer is allocated (or page-faulted in) again."""

    def __init__(self) -> None:
        self._flat: dict[str, Tensor] = {}

    def take(self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device) -> Tensor:
        numel = math.prod(shape)
        flat = self._flat.get(name)
        if (
            flat is None or flat.numel() < numel or flat.dtype != dtype or flat.device != torch.device(device)
            # an inference tensor cannot be written outside inference mode (and vice versa)
            or flat.is_inference() != torch.is_inference_mode_enabled()
        ):
            flat = self._flat[name] = torch.empty(numel, dtype=dtype, device=device)
        return flat[:numel].view(shape)


class GatherWorkspace:
    """Buffers for gathering K/V blocks (a decode batch, cascade groups) in the cache's dtype,
    made once per step and reused by every layer: on CPU a fresh 100 MB allocation per
    layer costs more, in page faults, than the gather itself. With a `pool`, buffers also
    live across steps."""

    def __init__(
        self, num_blocks: int, k_cache: Tensor, pool: BufferPool | None = None, name: str = "gather",
    ) -> None:
        pool = pool or BufferPool()
        shape, device = (num_blocks,) + tuple(k_cache.shape[1:]), k_cache.device
        self.k = pool.take(name + ".k", shape, k_cache.dtype, device)
        self.v = pool.take(name + ".v", shape, k_cache.dtype, device)

    def gather(self, k_cache: Tensor, v_cache: Tensor, blocks: Tensor) -> tuple[Tensor, Tensor]:
        """Blocks `blocks` of both caches: [len(blocks), block_size, Hkv, D] each."""
        torch.index_select(k_cache, 0, blocks, out=self.k)
        torch.index_select(v_cache, 0, blocks, out=self.v)
        return self.k, self.v
