"""Multi-level cascade (shared-prefix) attention in plain torch ops.

Sequences whose block tables start with the same physical block ids share that prefix's
K/V. The prefix tree of block tables gives the levels: level 0 is the outermost shared run
(e.g. a system prompt), level 1 a run shared by a subgroup (e.g. a document), ...; the last,
private level is each sequence's own suffix. Each group's queries attend to the group's
shared blocks in one kernel call per group (the shared K/V is read once per group, not
once per request); the partial outputs are merged by log-sum-exp.

Only blocks strictly before every new token of a member are shareable
(`(kv_len - q_len) // block_size` blocks): a block holding a new token, or a partially
filled tail block, stays private. So every query sees all of its shared KV (no causal mask
at shared levels) and every private part holds at least the new tokens.

All log-sum-exps are base e (natural log), float32. FlashInfer's are base 2.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .batch import AttentionBatch
from .attention_ops import merge_state, visible_attention
from .paged_attention import GatherWorkspace, PagedPlan, paged_attention, plan_paged, run_in_place


class CascadeLimits(NamedTuple):
    """When sequences sharing a run of blocks are worth a group (one kernel call): >= min_seqs
    members sharing >= min_blocks blocks whose tokens, read once instead of once per member,
    save >= min_saved_tokens token reads ((members - 1) * run tokens)."""

    min_seqs: int = 2
    min_blocks: int = 1
    min_saved_tokens: int = 0

    def worth(self, num_seqs: int, num_blocks: int, block_size: int) -> bool:
        return (num_seqs >= self.min_seqs and num_blocks >= self.min_blocks
                and (num_seqs - 1) * num_blocks * block_size >= self.min_saved_tokens)


class CascadeGroup(NamedTuple):
    """Sequences sharing `blocks` (whole blocks, positions [start, start + len) * block_size)."""

    level: int
    seq_ids: list[int]  # batch indices, in DFS (lexicographic block-table) order
    start_block: int  # index in the block tables where the shared run starts
    blocks: Tensor  # [num_shared_blocks] long: the shared physical block ids
    rows: Tensor  # [M] long, ascending: query rows of every member sequence
    offset: int  # where `blocks` start in CascadePlan.shared_blocks
    row_slice: slice | None  # the same rows when they are one run (no gather/scatter needed)


class CascadePlan(NamedTuple):
    """One step's levels. Per sequence: the blocks of its groups, outermost first, then its
    private blocks, are exactly its block table (see check_integrity)."""

    groups: list[CascadeGroup]  # sorted by level, outermost first
    shared_blocks: Tensor  # [sum of group sizes] long: every group's blocks, concatenated
    shared_depths: list[int]  # per sequence: number of leading blocks covered by groups
    private: PagedPlan  # the private level: each sequence's suffix table[shared_depth:]
    private_batch: AttentionBatch  # the batch the private plan was made from

    @property
    def num_levels(self) -> int:
        """Shared levels plus the private level."""
        return 1 + (max(g.level for g in self.groups) + 1 if self.groups else 0)

    def check_integrity(self, batch: AttentionBatch, block_size: int) -> None:
        """Raise AssertionError unless the levels tile every sequence's KV exactly once,
        shared blocks precede all new tokens, and each group lists its members' queries."""
        starts, covered = batch.query_starts(), [[] for _ in range(batch.num_seqs)]
        for group in self.groups:
            assert len(group.seq_ids) >= 2 and group.blocks.numel() >= 1
            rows = [r for i in group.seq_ids for r in range(starts[i], starts[i] + batch.q_lens[i])]
            assert sorted(rows) == group.rows.tolist()
            if group.row_slice is not None:
                assert list(range(group.row_slice.start, group.row_slice.stop)) == sorted(rows)
            for i in group.seq_ids:
                assert len(covered[i]) == group.start_block
                covered[i] += group.blocks.tolist()
        for i, (q_len, kv_len, table) in enumerate(zip(batch.q_lens, batch.kv_lens, batch.block_tables)):
            depth = self.shared_depths[i]
            assert len(covered[i]) == depth and depth * block_size <= kv_len - q_len
            num_blocks = -(-kv_len // block_size)
            assert covered[i] + self.private_batch.block_tables[i][: num_blocks - depth] == table[:num_blocks]
            assert self.private_batch.kv_lens[i] == kv_len - depth * block_size


def shareable_prefixes(batch: AttentionBatch, block_size: int) -> list[list[int]]:
    """Leading whole blocks of each sequence that precede all of its new tokens."""
    return [
        table[: (kv_len - q_len) // block_size]
        for q_len, kv_len, table in zip(batch.q_lens, batch.kv_lens, batch.block_tables)
    ]


def find_groups(
    prefixes: list[list[int]], block_size: int = 1, limits: CascadeLimits = CascadeLimits(),
) -> list[tuple[int, list[int], int, int]]:
    """Prefix tree of block lists -> groups (level, seq_ids, start_block, end_block).

    Sorting the block lists lexicographically is a DFS of the tree, so every group is a
    contiguous run of the sorted order and its common prefix is that of its first and
    last member. A group is kept when `limits` says it is worth a kernel call; a group
    not kept leaves its run to its subgroups (their runs start where it started) or to
    its members' private levels.
    """
    order = sorted(range(len(prefixes)), key=lambda i: prefixes[i])
    groups: list[tuple[int, list[int], int, int]] = []

    def worth(num_seqs: int, start: int, end: int) -> bool:
        return limits.worth(num_seqs, end - start, block_size)

    _split(order, prefixes, 0, 0, 0, worth, groups)
    return sorted(groups, key=lambda g: g[0])


def _split(seq_ids, prefixes, depth, start, level, worth, groups) -> None:
    """seq_ids all agree on blocks [0, depth); blocks [start, depth) are not yet in a kept
    group. Split them by the block at `depth`."""
    run: list[int] = []
    for i in seq_ids + [-1]:  # -1: sentinel flushing the last run
        key = prefixes[i][depth] if i >= 0 and len(prefixes[i]) > depth else None
        if run and (key is None or key != prefixes[run[0]][depth]):
            if len(run) >= 2:
                end = _common_prefix_len(prefixes[run[0]], prefixes[run[-1]])
                if worth(len(run), start, end):
                    groups.append((level, run, start, end))
                    _split(run, prefixes, end, end, level + 1, worth, groups)
                else:
                    _split(run, prefixes, end, start, level, worth, groups)
            run = []
        if key is not None:
            run.append(i)


def _common_prefix_len(a: list[int], b: list[int]) -> int:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return n


def plan_cascade(
    batch: AttentionBatch, block_size: int, limits: CascadeLimits = CascadeLimits(),
    device: torch.device | str = "cpu", in_place: bool = False,
) -> CascadePlan:
    """Plan one step. `groups` holds the groups worth a call (see find_groups); when it is
    empty, run plain paged attention."""
    prefixes = shareable_prefixes(batch, block_size)
    found = find_groups(prefixes, block_size, limits)
    depths = [0] * batch.num_seqs
    for _, ids, _, end in found:
        for i in ids:
            depths[i] = max(depths[i], end)
    groups, offset, starts = [], 0, batch.query_starts()
    for level, ids, start, end in found:
        rows = sorted(r for i in ids for r in range(starts[i], starts[i] + batch.q_lens[i]))
        blocks = _long(prefixes[ids[0]][start:end], device)
        run = slice(rows[0], rows[-1] + 1) if rows[-1] - rows[0] + 1 == len(rows) else None
        groups.append(CascadeGroup(level, ids, start, blocks, _long(rows, device), offset, run))
        offset += end - start
    shared_blocks = torch.cat([g.blocks for g in groups]) if groups else _long([], device)
    private_batch = AttentionBatch(
        list(batch.q_lens),
        [kv_len - d * block_size for kv_len, d in zip(batch.kv_lens, depths)],
        [table[d:] for table, d in zip(batch.block_tables, depths)],
    )
    private = plan_paged(private_batch, block_size, device, in_place)
    return CascadePlan(groups, shared_blocks, depths, private, private_batch)


def _long(values: list[int], device) -> Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def cascade_attention(
    q: Tensor, k_cache: Tensor, v_cache: Tensor, plan: CascadePlan,
    private_workspace: GatherWorkspace | None = None,
    shared_workspace: GatherWorkspace | None = None,
    use_fused: bool = True,
) -> Tensor:
    """q: [T, Hq, D] -> [T, Hq, D]. K/V caches: [num_blocks, block_size, Hkv, D].

    Private level first (batched paged attention in the cache dtype, with lse), then each
    group's queries attended against its shared blocks in one kernel call: read in place
    and merged in place by Parrot's CPU kernels, or (torch) the blocks gathered in one pass
    for all groups. Each level's output is rounded to q's dtype once (as FlashInfer's
    cascade does); the merges run in float32, the torch path's result rounded once at the
    end, the in-place path's after each merge (as FlashInfer's in-place merge). Workspaces:
    reusable gather buffers for the private decode blocks and for `plan.shared_blocks`.
    """
    out, lse = paged_attention(q, k_cache, v_cache, plan.private, True, private_workspace, use_fused)
    if not plan.groups:
        return out
    if plan.private.in_place:
        return _merge_groups_in_place(q, k_cache, v_cache, plan, out.contiguous(), lse)
    out = out.float()
    block_size = k_cache.shape[1]
    shared_workspace = shared_workspace or GatherWorkspace(plan.shared_blocks.numel(), k_cache)
    k_all, v_all = shared_workspace.gather(k_cache, v_cache, plan.shared_blocks)
    k_all, v_all = k_all.flatten(0, 1), v_all.flatten(0, 1)  # [shared tokens, Hkv, D]
    for group in plan.groups:
        tokens = slice(group.offset * block_size, (group.offset + group.blocks.numel()) * block_size)
        rows = _query_rows(group)
        o_g, lse_g = visible_attention(q[rows], k_all[tokens], v_all[tokens], use_fused)
        if group.row_slice is not None:  # one run of rows: views, no gather or scatter
            out[rows], lse[rows] = merge_state(out[rows], lse[rows], o_g.float(), lse_g)
            continue
        o_m, lse_m = merge_state(out.index_select(0, rows), lse.index_select(0, rows), o_g.float(), lse_g)
        out.index_copy_(0, rows, o_m)
        lse.index_copy_(0, rows, lse_m)
    return out.to(q.dtype)


def _query_rows(group: CascadeGroup) -> slice | Tensor:
    """The group's query rows: one run of rows as a slice (views), else their indices."""
    return group.row_slice if group.row_slice is not None else group.rows


def _merge_groups_in_place(q: Tensor, k_cache: Tensor, v_cache: Tensor, plan: CascadePlan,
                           out: Tensor, lse: Tensor) -> Tensor:
    """Parrot's CPU kernels: each group's queries over its blocks where they lie, merged
    into the private level's out (q's dtype) and lse in place."""
    block_size = k_cache.shape[1]
    for group in plan.groups:
        rows = _query_rows(group)
        o_g, lse_g = run_in_place(q[rows], k_cache, v_cache, group.blocks, group.blocks.numel() * block_size,
                                  causal=False)
        if group.row_slice is not None:  # one run of rows: contiguous views, merged where they are
            torch.ops.parrot.merge_attention_state_(out[rows], lse[rows], o_g, lse_g)
            continue
        o_m, lse_m = out.index_select(0, rows), lse.index_select(0, rows)
        torch.ops.parrot.merge_attention_state_(o_m, lse_m, o_g, lse_g)
        out.index_copy_(0, rows, o_m)
        lse.index_copy_(0, rows, lse_m)
    return out
