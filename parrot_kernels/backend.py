"""The engine's attention backend: interface, the torch implementation, and the factory."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from .batch import AttentionBatch
from .cascade import CascadeLimits, CascadePlan, cascade_attention, plan_cascade
from .paged_attention import (
    BufferPool, DecodePlan, GatherWorkspace, InPlaceStep, PagedPlan, paged_attention, plan_paged, slot_mapping, write_kv,
)


class AttentionBackend(Protocol):
    """Attention over the engine's paged KV cache.

    kv_cache: [num_layers, 2, num_blocks, block_size, num_kv_heads, head_dim] (0 = K, 1 = V).
    Call `prepare` once per step (builds every index tensor and plan), then `forward` once
    per layer with that step's new tokens, in batch order.
    """

    def prepare(self, batch: AttentionBatch) -> None: ...

    @property
    def is_cascade_step(self) -> bool:
        """Whether the prepared step reads some shared prefix once per group."""
        ...

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        """q: [T, Hq, D]; k, v: [T, Hkv, D]. Writes k/v into kv_cache[layer] at the new
        tokens' slots, then returns the attention output [T, Hq, D] in q's dtype."""
        ...


_NO_DECODES = DecodePlan(torch.empty(0, dtype=torch.long), torch.empty(0, dtype=torch.long), None, 0,
                         torch.empty(0, 0, dtype=torch.int32), torch.empty(0, dtype=torch.int32))


class TorchAttentionBackend:
    """Backend in plain torch ops (CPU; also runs on any device torch supports).

    With `enable_cascade`, sequences sharing whole leading blocks run multi-level cascade
    attention, reading each shared prefix once per group, where `cascade_limits` says a
    group is worth its call; otherwise batched paged attention. `use_fused=False` swaps
    torch's fused CPU attention kernel for the plain bmm path. `use_kernels` (a bf16 CPU
    cache, `cpu_ops` loaded): decodes read the paged cache in place with Parrot's kernel,
    and the model may write K/V itself (`kv_target`, then `attend`).
    """

    # Measured on a 2-core CPU at SmolLM2's shape (bf16, 32 decodes, one layer): a group
    # call costs ~0.1 ms, about the gather of ~2,000 tokens of KV; 32 sequences sharing
    # 32 tokens ran 0.84x plain with cascade, 64 tokens 0.98x, 128 tokens 1.10x.
    DEFAULT_LIMITS = CascadeLimits(min_saved_tokens=2048)
    # With Parrot's CPU kernels nothing is gathered, and plain decode attention reads a
    # prefix its batch shares from cache after the first member, so the shared level (the
    # prefill kernel over the group's queries, merged in place) pays only for many members.
    # Whole decode steps, SmolLM2 bf16, 2-core AVX2 EPYC, forks x shared tokens, plain /
    # cascade: 3 x 600 0.90x, 4 x 420 0.92x, 8 x 700 1.01x, 10 x 700 1.02x, 16 x 1,000
    # 1.11x, 32 x 512 1.09x, 32 x 2,000 1.29x (`parrot bench engine`'s shared-prefix step).
    # 2-core Intel Xeon with AVX-512 (no AMX), alternated step by step: 4 x 1,008 0.82x,
    # 8 x 704 0.84x, 8 x 1,008 0.87x, 12 x 1,008 0.92x, 16 x 1,008 1.03x, 32 x 2,000 1.24x.
    KERNEL_LIMITS = CascadeLimits(min_seqs=16, min_saved_tokens=10_000)

    def __init__(
        self,
        kv_cache: Tensor,
        enable_cascade: bool = True,
        cascade_limits: CascadeLimits | None = None,
        use_fused: bool = True,
        use_kernels: bool = False,
    ) -> None:
        if kv_cache.dim() != 6 or kv_cache.shape[1] != 2:
            raise ValueError(f"kv_cache must be [layers, 2, blocks, block_size, Hkv, D], got {tuple(kv_cache.shape)}")
        self.kv_cache = kv_cache
        # per-layer (K, V) views, made once: a view costs ~2 us, and a step made 4 per layer
        self._layers = [(kv_cache[i, 0], kv_cache[i, 1]) for i in range(kv_cache.shape[0])]
        self.block_size = kv_cache.shape[3]
        self.enable_cascade = enable_cascade
        self.cascade_limits = cascade_limits or (self.KERNEL_LIMITS if use_kernels else self.DEFAULT_LIMITS)
        self.use_fused = use_fused  # torch's fused CPU attention kernel; False: bmm reference path
        self.use_kernels = use_kernels
        self._slots: Tensor | None = None  # [T] long: cache slot of each new token
        self._plan: PagedPlan | None = None  # plain plan, or the cascade's private level
        self._cascade: CascadePlan | None = None  # set when this step runs cascade
        self._workspace: GatherWorkspace | None = None  # decode gather buffers, reused per layer
        self._shared_workspace: GatherWorkspace | None = None  # cascade shared-block buffers
        self._pool = BufferPool()  # the workspaces' memory, kept across steps

    @property
    def is_cascade_step(self) -> bool:
        return self._cascade is not None

    def prepare(self, batch: AttentionBatch) -> None:
        batch.check_integrity(self.block_size, self.kv_cache.shape[2])
        device = self.kv_cache.device
        self._slots = slot_mapping(batch, self.block_size).to(device)
        self._cascade = None
        if self.enable_cascade:
            cascade = plan_cascade(batch, self.block_size, self.cascade_limits, device, self.use_kernels)
            # Without groups the private level is the whole batch: reuse it as the plain plan.
            self._cascade = cascade if cascade.groups else None
            self._plan = cascade.private
        else:
            self._plan = plan_paged(batch, self.block_size, device, self.use_kernels)
        layer_cache, decode = self.kv_cache[0, 0], self._plan.decode
        self._workspace = None
        if decode is not None and not decode.in_place:
            self._workspace = GatherWorkspace(decode.blocks.numel(), layer_cache, self._pool, "decode")
        shared = self._cascade.shared_blocks.numel() if self._cascade and not self.use_kernels else 0
        self._shared_workspace = GatherWorkspace(shared, layer_cache, self._pool, "shared") if shared else None

    def forward(self, q: Tensor, k: Tensor, v: Tensor, layer: int) -> Tensor:
        k_cache, v_cache, slots = self.kv_target(layer)
        write_kv(k_cache, v_cache, k, v, slots)
        return self.attend(q, layer)

    def kv_target(self, layer: int) -> tuple[Tensor, Tensor, Tensor]:
        """(k_cache, v_cache, slots): where this step's new K/V of `layer` go."""
        if self._slots is None:
            raise RuntimeError("prepare() must be called before forward()")
        return (*self._layers[layer], self._slots)

    def in_place_step(self) -> InPlaceStep | None:
        """The whole-step runner's inputs when the prepared step reads the cache in place
        (decodes and prefill chunks alike) and each cascade group, if any, is one run of
        rows; else None."""
        plan, groups = self._plan, self._cascade.groups if self._cascade is not None else []
        if self._slots is None or not plan.in_place or any(g.row_slice is None for g in groups):
            return None
        decode, prefills = plan.decode, plan.prefills
        if decode is None:
            decode = _NO_DECODES
        return InPlaceStep(self.kv_cache, self._slots, decode.rows, decode.tables, decode.kv_lens,
                           [p.row_start for p in prefills], [p.q_len for p in prefills],
                           [p.kv_len for p in prefills], [p.blocks for p in prefills],
                           [g.row_slice.start for g in groups], [g.row_slice.stop - g.row_slice.start for g in groups],
                           [g.blocks for g in groups])

    def attend(self, q: Tensor, layer: int) -> Tensor:
        """q: [T, Hq, D] -> [T, Hq, D] in q's dtype; this step's K/V already written."""
        if self._slots is None:
            raise RuntimeError("prepare() must be called before forward()")
        if q.shape[0] != self._slots.numel():
            raise ValueError(f"got {q.shape[0]} query rows, batch has {self._slots.numel()} tokens")
        k_cache, v_cache = self._layers[layer]
        q_cache = q.to(k_cache.dtype)
        if self._cascade is not None:
            out = cascade_attention(
                q_cache, k_cache, v_cache, self._cascade, self._workspace, self._shared_workspace, self.use_fused
            )
        else:
            out = paged_attention(q_cache, k_cache, v_cache, self._plan, False, self._workspace, self.use_fused)
        return out.to(q.dtype)


# FlashInfer's kernels exist for these cache dtypes only (its dtype map has no float32).
FLASHINFER_DTYPES = (torch.float16, torch.bfloat16)


def uses_flashinfer(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a cache of `dtype` on `device` runs on FlashInfer: CUDA, a 16-bit dtype, and
    flashinfer importable. float32 on CUDA takes the torch backend."""
    if device.type != "cuda" or dtype not in FLASHINFER_DTYPES:
        return False
    from .flashinfer_backend import flashinfer_available

    return flashinfer_available()


def make_backend(
    kv_cache: Tensor, device: torch.device | str | None = None, enable_cascade: bool = True,
    cascade_min_saved_tokens: int | None = None, use_kernels: bool = False, num_q_heads: int | None = None,
) -> AttentionBackend:
    """FlashInfer where `uses_flashinfer`, else the torch backend (with Parrot's CPU kernels
    if `use_kernels`). `cascade_min_saved_tokens` None: the backend's own default limits.
    `num_q_heads` lets FlashInfer plan each step in `prepare`, before the forward."""
    device = torch.device(device) if device is not None else kv_cache.device
    limits = None if cascade_min_saved_tokens is None else CascadeLimits(min_saved_tokens=cascade_min_saved_tokens)
    if uses_flashinfer(device, kv_cache.dtype):
        from .flashinfer_backend import FlashInferAttentionBackend

        return FlashInferAttentionBackend(kv_cache, enable_cascade, limits, num_q_heads)
    return TorchAttentionBackend(kv_cache, enable_cascade, limits, use_kernels=use_kernels)
