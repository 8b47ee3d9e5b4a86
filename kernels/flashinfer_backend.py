"""FlashInfer attention backend for CUDA (flashinfer >= 0.2; API checked against 0.6).

FlashInfer is imported lazily, inside functions, so this module imports on CPU-only
machines. Its tests are marked `gpu`.

Cache layout: our per-layer views `kv_cache[layer, 0]` and `kv_cache[layer, 1]` are each
[num_blocks, block_size, Hkv, D], exactly FlashInfer's "NHD" page layout for one of K or V.
We pass them as the tuple `(k_cache, v_cache)`, which FlashInfer accepts; its single-tensor
form would need [num_blocks, 2, block_size, Hkv, D] (K and V interleaved per page), which is
not our layout, so no copy or re-layout is needed.

Planning: `prepare` builds FlashInfer's CSR page tables as CPU int32 tensors; the wrappers'
`plan` runs once per step, at the first `forward` (the number of query heads and the query
dtype are known only then), and every layer reuses it.

Cascade: the same groups and levels as the torch backend (cascade.plan_cascade). Each
shared level runs one BatchPrefillWithPagedKVCacheWrapper (causal=False: shared KV precedes
every member's queries) over the queries of that level's groups, one FlashInfer "request"
per group, so a group's pages are read once for all its queries; the private level runs a
causal prefill (or a decode wrapper when every q_len is 1) over all sequences; states are
merged with flashinfer.merge_state_in_place (FlashInfer's lse is base 2, used only here).
MultiLevelCascadeAttentionWrapper runs the same per-level prefill wrappers and merges, but
every one of its levels must cover every query, so a sequence outside a level (an unrelated
request, a shallower branch) would need a group with no KV pages, which FlashInfer's
kernels and merges have turned into NaN (flashinfer#4051, #4452). Running each level on its
own query subset avoids empty groups altogether.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .batch import AttentionBatch
from .cascade import CascadePlan, plan_cascade
from .paged_attention import slot_mapping, write_kv

WORKSPACE_BYTES = 128 * 1024 * 1024  # FlashInfer's recommended float workspace


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


class SharedLevel(NamedTuple):
    rows: Tensor  # [M] long, on device: query rows of the level's groups, group by group
    table: PageTable  # one request per group


def shared_levels(plan: CascadePlan, block_size: int, device) -> list[SharedLevel]:
    """Group the cascade's groups by level; each group becomes one FlashInfer request."""
    levels: list[SharedLevel] = []
    for level in range(plan.num_levels - 1):
        groups = [g for g in plan.groups if g.level == level]
        table = page_table(
            [g.rows.numel() for g in groups],
            [g.blocks.numel() * block_size for g in groups],
            [g.blocks.tolist() for g in groups],
            block_size,
        )
        table = table._replace(is_decode=False)  # several queries per request
        levels.append(SharedLevel(torch.cat([g.rows for g in groups]).to(device), table))
    return levels


class FlashInferAttentionBackend:
    """AttentionBackend on FlashInfer (CUDA). Same contract as TorchAttentionBackend."""

    def __init__(
        self,
        kv_cache: Tensor,
        enable_cascade: bool = True,
        cascade_min_seqs: int = 2,
        cascade_min_blocks: int = 1,
    ) -> None:
        if kv_cache.dim() != 6 or kv_cache.shape[1] != 2 or kv_cache.device.type != "cuda":
            raise ValueError("kv_cache must be a CUDA tensor [layers, 2, blocks, block_size, Hkv, D]")
        self.kv_cache = kv_cache
        self.block_size, self.num_kv_heads, self.head_dim = kv_cache.shape[3:]
        self.enable_cascade = enable_cascade
        self.cascade_min_seqs = cascade_min_seqs
        self.cascade_min_blocks = cascade_min_blocks
        self._float_workspace = torch.empty(WORKSPACE_BYTES, dtype=torch.uint8, device=kv_cache.device)
        self._decode_wrapper = None  # made on first use, then reused every step
        self._prefill_wrappers: list = []  # [0]: whole batch / private level; [1:]: shared levels
        self._slots: Tensor | None = None
        self._main: PageTable | None = None  # whole batch, or the cascade's private level
        self._levels: list[SharedLevel] = []
        self._needs_plan = True

    @property
    def is_cascade_step(self) -> bool:
        return bool(self._levels)

    def prepare(self, batch: AttentionBatch) -> None:
        batch.check_integrity(self.block_size, self.kv_cache.shape[2])
        device = self.kv_cache.device
        self._slots = slot_mapping(batch, self.block_size).to(device)
        cascade = None
        if self.enable_cascade:
            cascade = plan_cascade(batch, self.block_size, self.cascade_min_seqs, self.cascade_min_blocks)
        if cascade is not None and cascade.groups:
            self._levels = shared_levels(cascade, self.block_size, device)
            batch = cascade.private_batch
        else:
            self._levels = []
        self._main = page_table(batch.q_lens, batch.kv_lens, batch.block_tables, self.block_size)
        self._needs_plan = True

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        if self._slots is None:
            raise RuntimeError("prepare() must be called before forward()")
        k_cache, v_cache = self.kv_cache[layer, 0], self.kv_cache[layer, 1]
        write_kv(k_cache, v_cache, k, v, self._slots)
        q_cache = q.to(k_cache.dtype)
        if self._needs_plan:
            self._plan(q.shape[1])
            self._needs_plan = False
        paged = (k_cache, v_cache)  # NHD pages, see the module docstring
        main = self._decode_wrapper if self._main.is_decode else self._prefill_wrappers[0]
        if not self._levels:
            return main.run(q_cache, paged).to(q.dtype)
        from flashinfer import merge_state_in_place

        out, lse = main.run(q_cache, paged, return_lse=True)  # lse: base 2
        for level, wrapper in zip(self._levels, self._prefill_wrappers[1:]):
            o_level, lse_level = wrapper.run(q_cache.index_select(0, level.rows), paged, return_lse=True)
            o_rows, lse_rows = out.index_select(0, level.rows), lse.index_select(0, level.rows)
            merge_state_in_place(o_rows, lse_rows, o_level, lse_level)
            out.index_copy_(0, level.rows, o_rows)
            lse.index_copy_(0, level.rows, lse_rows)
        return out.to(q.dtype)

    def _plan(self, num_q_heads: int) -> None:
        """Plan every wrapper of this step once; all layers reuse the plans."""
        dtype = self.kv_cache.dtype
        shape = (num_q_heads, self.num_kv_heads, self.head_dim, self.block_size)
        kinds = dict(q_data_type=dtype, kv_data_type=dtype)
        t = self._main
        if t.is_decode:
            self._decode().plan(
                t.kv_indptr, t.kv_indices, t.kv_last_page_len, *shape, pos_encoding_mode="NONE", **kinds
            )
        else:
            self._prefill(0).plan(
                t.qo_indptr, t.kv_indptr, t.kv_indices, t.kv_last_page_len, *shape, causal=True, **kinds
            )
        for i, level in enumerate(self._levels, start=1):
            t = level.table
            self._prefill(i).plan(
                t.qo_indptr, t.kv_indptr, t.kv_indices, t.kv_last_page_len, *shape, causal=False, **kinds
            )

    def _decode(self):
        if self._decode_wrapper is None:
            from flashinfer import BatchDecodeWithPagedKVCacheWrapper

            # Tensor-core decode handles any GQA group size (SmolLM2's is 3).
            self._decode_wrapper = BatchDecodeWithPagedKVCacheWrapper(
                self._float_workspace, "NHD", use_tensor_cores=True
            )
        return self._decode_wrapper

    def _prefill(self, index: int):
        from flashinfer import BatchPrefillWithPagedKVCacheWrapper

        while len(self._prefill_wrappers) <= index:  # wrappers share the float workspace:
            self._prefill_wrappers.append(  # they run one after another on one stream
                BatchPrefillWithPagedKVCacheWrapper(self._float_workspace, "NHD")
            )
        return self._prefill_wrappers[index]
