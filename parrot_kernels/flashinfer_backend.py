"""FlashInfer attention backend for CUDA (API checked against flashinfer-python 0.7.2).

FlashInfer is imported lazily, inside functions, so this module imports on CPU-only
machines. The step plan (`plan_step`) is plain CPU code; the kernels' tests are marked
`gpu`, and the backend's use of the wrappers is also tested on CPU against a stand-in
module written from FlashInfer's documented semantics (tests/kernels/fake_flashinfer.py).

Cache layout: our per-layer views `kv_cache[layer, 0]` and `kv_cache[layer, 1]` are each
[num_blocks, block_size, Hkv, D], exactly FlashInfer's "NHD" page layout for one of K or V.
We pass them as the tuple `(k_cache, v_cache)`, which FlashInfer accepts; its single-tensor
form would need [num_blocks, 2, block_size, Hkv, D] (K and V interleaved per page), which is
not our layout, so no copy or re-layout is needed.

Planning: `prepare` builds FlashInfer's CSR page tables as CPU int32 tensors and runs the
wrappers' `plan` once per step, before the forward (given `num_q_heads`; without it, at the
first `forward`); every layer reuses it. Planning inside the layer loop would copy the tables
to the device from pageable memory there, which waits for the layers already queued.

Kernels: every wrapper asks for FlashInfer's FA2 kernels (`backend="fa2"`), one family
whose modules `scripts/flashinfer_prebuild.py` compiles ahead (FlashInfer ships no compiled
kernels; "auto" would add FA3 on Hopper, a second family to JIT-compile). The decode wrapper
uses tensor cores, i.e. the same FA2 prefill module, so one module per (dtype, head_dim) and
FlashInfer's merge ("cascade") module are all a step needs. FA2 needs head_dim >= 64.

A step is a list of levels, each one FlashInfer call (see `plan_step`):
  * no shared prefix: one level over the whole batch, BatchDecodeWithPagedKVCacheWrapper
    when every q_len is 1, else BatchPrefillWithPagedKVCacheWrapper (causal);
  * a cascade: one BatchPrefillWithPagedKVCacheWrapper per level, one request per group,
    the causal private level first over every query, then each non-causal shared level over
    its groups' query rows, merged into the private state with merge_state_in_place. Where a
    level's groups cover the whole batch in batch order (all requests of a step descend from
    one system prompt, or the batch is in DFS order of the context tree) it runs over every
    row with no gather; that is what MultiLevelCascadeAttentionWrapper does, but it cannot
    be given a kernel backend (it would pick FA3 on Hopper). A level that does not cover
    every query cannot be a MultiLevel level anyway: it would need a group with no KV pages,
    which FlashInfer does not define (an empty request's lse is -inf, its merge 0 / 0).
FlashInfer's lse is base 2; it is only ever passed between FlashInfer calls here.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .batch import AttentionBatch
from .cascade import CascadeLimits, CascadePlan, plan_cascade
from .paged_attention import slot_mapping, write_kv

WORKSPACE_BYTES = 128 * 1024 * 1024  # FlashInfer's recommended float workspace
KERNEL_BACKEND = "fa2"  # the one kernel family Parrot uses (see the module docstring)


def flashinfer_available() -> bool:
    """True when CUDA is up and flashinfer imports."""
    if not torch.cuda.is_available():
        return False
    try:
        import flashinfer  # noqa: F401
    except ImportError:
        return False
    return True


class PageTable(NamedTuple):
    """FlashInfer's CSR page table for a list of (queries, pages) requests, CPU int32."""

    qo_indptr: Tensor  # [n + 1]: request r's queries are rows qo_indptr[r]:qo_indptr[r+1]
    kv_indptr: Tensor  # [n + 1]
    kv_indices: Tensor  # [kv_indptr[-1]]: physical page ids
    kv_last_page_len: Tensor  # [n]: valid entries in each request's last page, 1..page_size
    is_decode: bool  # every request has exactly one query


def page_table(q_lens: list[int], kv_lens: list[int], tables: list[list[int]], block_size: int) -> PageTable:
    """Requests with kv_len >= 1 each; tables[r] covers at least ceil(kv_lens[r] / block_size)."""
    num_pages = [-(-kv_len // block_size) for kv_len in kv_lens]
    indices = [page for table, n in zip(tables, num_pages) for page in table[:n]]
    return PageTable(
        _indptr(q_lens),
        _indptr(num_pages),
        torch.tensor(indices, dtype=torch.int32),
        torch.tensor([(kv_len - 1) % block_size + 1 for kv_len in kv_lens], dtype=torch.int32),
        all(q == 1 for q in q_lens),
    )


def _indptr(lengths: list[int]) -> Tensor:
    out = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    out[1:] = torch.tensor(lengths, dtype=torch.int32).cumsum(0)
    return out


class Level(NamedTuple):
    """One FlashInfer call: `table`'s requests over the query `rows` (None: every row, in
    batch order). Shared levels see all their KV (not causal); the last level is causal."""

    rows: Tensor | None  # [M] long, on the cache's device
    table: PageTable
    causal: bool


class StepPlan(NamedTuple):
    levels: list[Level]  # shared levels, outermost first, then the private (or whole) level

    @property
    def is_cascade(self) -> bool:
        return len(self.levels) > 1

    @property
    def is_multilevel(self) -> bool:
        """A cascade whose every level covers every query in batch order."""
        return self.is_cascade and all(level.rows is None for level in self.levels)

    @property
    def is_decode(self) -> bool:
        """One level of one query per request: the decode wrapper."""
        return not self.is_cascade and self.levels[0].table.is_decode


def plan_step(
    batch: AttentionBatch, block_size: int, enable_cascade: bool = True,
    limits: CascadeLimits = CascadeLimits(), device: torch.device | str = "cpu",
) -> StepPlan:
    """The step's FlashInfer calls: the same groups and levels as the torch backend."""
    cascade = plan_cascade(batch, block_size, limits) if enable_cascade else None
    return levels_of(batch, cascade, block_size, device)


def levels_of(batch: AttentionBatch, cascade: CascadePlan | None, block_size: int,
              device: torch.device | str = "cpu") -> StepPlan:
    """The step's FlashInfer calls for its cascade plan (None, or no groups: one plain level)."""
    if cascade is None or not cascade.groups:
        whole = page_table(batch.q_lens, batch.kv_lens, batch.block_tables, block_size)
        return StepPlan([Level(None, whole, causal=True)])
    private = cascade.private_batch
    last = Level(None, page_table(private.q_lens, private.kv_lens, private.block_tables, block_size), True)
    return StepPlan(shared_levels(cascade, block_size, batch.num_tokens, device) + [last])


def shared_levels(plan: CascadePlan, block_size: int, num_tokens: int, device) -> list[Level]:
    """Group the cascade's groups by level; each group becomes one FlashInfer request, in
    the order of their first query row. A level whose groups then hold rows
    0..num_tokens-1 in order (each group's rows contiguous, every row covered) gets rows None."""
    levels: list[Level] = []
    for level in range(plan.num_levels - 1):
        groups = sorted((g for g in plan.groups if g.level == level), key=lambda g: g.rows[0].item())
        table = page_table(
            [g.rows.numel() for g in groups],
            [g.blocks.numel() * block_size for g in groups],
            [g.blocks.tolist() for g in groups],
            block_size,
        )
        table = table._replace(is_decode=False)  # several queries per request
        rows = torch.cat([g.rows for g in groups])
        in_order = rows.numel() == num_tokens and torch.equal(rows, torch.arange(num_tokens))
        levels.append(Level(None if in_order else rows.to(device), table, causal=False))
    return levels


class FlashInferAttentionBackend:
    """AttentionBackend on FlashInfer (CUDA). Same contract as TorchAttentionBackend."""

    def __init__(
        self,
        kv_cache: Tensor,
        enable_cascade: bool = True,
        cascade_limits: CascadeLimits | None = None,
        num_q_heads: int | None = None,
    ) -> None:
        if kv_cache.dim() != 6 or kv_cache.shape[1] != 2:
            raise ValueError("kv_cache must be [layers, 2, blocks, block_size, Hkv, D]")
        self.kv_cache = kv_cache
        self.block_size, self.num_kv_heads, self.head_dim = kv_cache.shape[3:]
        self.num_q_heads = num_q_heads  # None: known at the first forward, planned there
        self.enable_cascade = enable_cascade
        # Not measured on a GPU yet: by default every group sharing a block is cascaded.
        self.cascade_limits = cascade_limits or CascadeLimits()
        # Zeroed, not torch.empty: FlashInfer never sees what the allocator held before.
        self._float_workspace = torch.zeros(WORKSPACE_BYTES, dtype=torch.uint8, device=kv_cache.device)
        # Wrappers are made on first use and reused every step; they share the float
        # workspace, which is safe because they run one after another on one stream.
        self._decode_wrapper = None
        self._prefill_wrappers: list = []  # wrapper i runs level i of the step
        self._slots: Tensor | None = None
        self._plan: StepPlan | None = None
        self._needs_plan = True

    @property
    def is_cascade_step(self) -> bool:
        return self._plan is not None and self._plan.is_cascade

    @property
    def float_workspace(self) -> Tensor:
        """FlashInfer's float workspace, shared by every wrapper that runs on this stream."""
        return self._float_workspace

    @property
    def step_plan(self) -> StepPlan | None:
        return self._plan

    def prepare(self, batch: AttentionBatch) -> None:
        self.prepare_with(batch, self.cascade_plan(batch))

    def cascade_plan(self, batch: AttentionBatch) -> CascadePlan | None:
        """The step's cascade groups, host side only; None where it runs plain. The runner
        asks first (a plain decode step may replay a CUDA graph) and hands it to
        `prepare_with`, so a step is planned once."""
        plan = plan_cascade(batch, self.block_size, self.cascade_limits) if self.enable_cascade else None
        return plan if plan is not None and plan.groups else None

    def prepare_with(self, batch: AttentionBatch, cascade: CascadePlan | None) -> None:
        """`prepare`, given the step's `cascade_plan`."""
        batch.check_integrity(self.block_size, self.kv_cache.shape[2])
        device = self.kv_cache.device
        self._slots = slot_mapping(batch, self.block_size).to(device)
        self._plan = levels_of(batch, cascade, self.block_size, device)
        self._needs_plan = self.num_q_heads is None
        if not self._needs_plan:
            self._plan_wrappers(self.num_q_heads)

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        if self._slots is None:
            raise RuntimeError("prepare() must be called before forward()")
        k_cache, v_cache = self.kv_cache[layer, 0], self.kv_cache[layer, 1]
        write_kv(k_cache, v_cache, k, v, self._slots)
        q_cache = q.to(k_cache.dtype)
        if self._needs_plan:
            self._plan_wrappers(q.shape[1])
            self._needs_plan = False
        paged = (k_cache, v_cache)  # NHD pages, see the module docstring
        plan = self._plan
        if not plan.is_cascade:
            wrapper = self._decode_wrapper if plan.is_decode else self._prefill_wrappers[0]
            return wrapper.run(q_cache, paged).to(q.dtype)
        return self._run_levels(q_cache, paged).to(q.dtype)

    def _run_levels(self, q: Tensor, paged) -> Tensor:
        """The private level over every query, then each shared level over its own rows
        (every row, no gather, where the level covers the batch in order)."""
        from flashinfer import merge_state_in_place

        *shared, _ = self._plan.levels
        private = self._prefill_wrappers[len(shared)]  # wrapper i runs level i
        out, lse = private.run(q, paged, return_lse=True)  # lse: base 2
        for level, wrapper in zip(shared, self._prefill_wrappers):
            if level.rows is None:
                o_level, lse_level = wrapper.run(q, paged, return_lse=True)
                merge_state_in_place(out, lse, o_level, lse_level)
                continue
            o_level, lse_level = wrapper.run(q.index_select(0, level.rows), paged, return_lse=True)
            o_rows, lse_rows = out.index_select(0, level.rows), lse.index_select(0, level.rows)
            merge_state_in_place(o_rows, lse_rows, o_level, lse_level)
            out.index_copy_(0, level.rows, o_rows)
            lse.index_copy_(0, level.rows, lse_rows)
        return out

    def _plan_wrappers(self, num_q_heads: int) -> None:
        """Plan this step's wrappers once; all layers reuse the plans."""
        dtype = self.kv_cache.dtype
        shape = (num_q_heads, self.num_kv_heads, self.head_dim, self.block_size)
        kinds = dict(q_data_type=dtype, kv_data_type=dtype)
        levels = self._plan.levels
        if self._plan.is_decode:
            plan_decode(self._decode(), levels[0].table, num_q_heads, self.kv_cache)
        else:
            for i, level in enumerate(levels):
                t = level.table
                self._prefill(i).plan(
                    t.qo_indptr, t.kv_indptr, t.kv_indices, t.kv_last_page_len, *shape,
                    causal=level.causal, **kinds,
                )

    def _decode(self):
        if self._decode_wrapper is None:
            from flashinfer import BatchDecodeWithPagedKVCacheWrapper

            # Tensor-core decode handles any GQA group size (SmolLM2's is 3); on FA2 it
            # runs the prefill module, so decode compiles nothing of its own.
            self._decode_wrapper = BatchDecodeWithPagedKVCacheWrapper(
                self._float_workspace, "NHD", use_tensor_cores=True, backend=KERNEL_BACKEND
            )
        return self._decode_wrapper

    def _prefill(self, index: int):
        from flashinfer import BatchPrefillWithPagedKVCacheWrapper

        while len(self._prefill_wrappers) <= index:
            self._prefill_wrappers.append(
                BatchPrefillWithPagedKVCacheWrapper(self._float_workspace, "NHD", backend=KERNEL_BACKEND)
            )
        return self._prefill_wrappers[index]


def plan_decode(wrapper, table: PageTable, num_q_heads: int, kv_cache: Tensor) -> None:
    """Plan a decode wrapper over `table`'s requests in `kv_cache`'s pages (no RoPE in the
    kernel; q and KV in the cache's dtype)."""
    block_size, num_kv_heads, head_dim = kv_cache.shape[3:]
    wrapper.plan(table.kv_indptr, table.kv_indices, table.kv_last_page_len, num_q_heads, num_kv_heads,
                 head_dim, block_size, pos_encoding_mode="NONE", q_data_type=kv_cache.dtype,
                 kv_data_type=kv_cache.dtype)


class GraphDecodeAttention:
    """Decode attention a CUDA graph can capture, for a fixed `batch_size` of one-token
    requests: FlashInfer's decode wrapper in CUDA-graph mode (`use_cuda_graph=True`, its
    page tables in buffers of fixed address) and the new tokens' cache slots in a static
    tensor. `plan(batch)` runs on the host before each replay and rewrites those buffers;
    rows past the batch's own are padding, one token each at slot 0 of `scratch_block`
    (a block no request owns). The forward is TorchAttentionBackend's contract."""

    is_cascade_step = False

    def __init__(self, kv_cache: Tensor, batch_size: int, max_pages: int, scratch_block: int,
                 num_q_heads: int, float_workspace: Tensor) -> None:
        from flashinfer import BatchDecodeWithPagedKVCacheWrapper

        device = kv_cache.device
        self.kv_cache = kv_cache
        self.batch_size, self.scratch_block, self.num_q_heads = batch_size, scratch_block, num_q_heads
        self.block_size = kv_cache.shape[3]
        self.slots = torch.full((batch_size,), scratch_block * self.block_size, dtype=torch.long, device=device)
        self.wrapper = BatchDecodeWithPagedKVCacheWrapper(
            float_workspace, "NHD", use_cuda_graph=True, use_tensor_cores=True,
            paged_kv_indptr_buffer=torch.zeros(batch_size + 1, dtype=torch.int32, device=device),
            paged_kv_indices_buffer=torch.zeros(max_pages, dtype=torch.int32, device=device),
            paged_kv_last_page_len_buffer=torch.ones(batch_size, dtype=torch.int32, device=device),
            backend=KERNEL_BACKEND,
        )

    def plan(self, batch: AttentionBatch) -> None:
        """The step's page tables and slots, padded to `batch_size` (`batch`: one query per
        request, at most `batch_size` requests)."""
        pad = self.batch_size - len(batch.q_lens)
        if pad < 0 or any(q != 1 for q in batch.q_lens):
            raise ValueError(f"a graph of {self.batch_size} decodes cannot run {batch.q_lens}")
        padded = AttentionBatch(batch.q_lens + [1] * pad, batch.kv_lens + [1] * pad,
                                batch.block_tables + [[self.scratch_block]] * pad)
        table = page_table(padded.q_lens, padded.kv_lens, padded.block_tables, self.block_size)
        plan_decode(self.wrapper, table, self.num_q_heads, self.kv_cache)
        self.slots.copy_(slot_mapping(padded, self.block_size))

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        k_cache, v_cache = self.kv_cache[layer, 0], self.kv_cache[layer, 1]
        write_kv(k_cache, v_cache, k, v, self.slots)
        return self.wrapper.run(q.to(k_cache.dtype), (k_cache, v_cache)).to(q.dtype)
