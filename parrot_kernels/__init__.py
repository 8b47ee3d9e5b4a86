"""parrot_kernels: attention over Parrot's paged KV cache (tensors in, tensors out).

GPU libraries (FlashInfer) are imported lazily, so this package imports on CPU-only machines.
All log-sum-exps are base e; FlashInfer's are base 2.
"""

from . import cpu_ops
from .attention_ops import causal_mask, decode_attention, prefill_attention, visible_attention
from .backend import AttentionBackend, TorchAttentionBackend, make_backend
from .batch import AttentionBatch
from .cascade import CascadeGroup, CascadeLimits, CascadePlan, cascade_attention, find_groups, merge_state, plan_cascade
from .paged_attention import BufferPool, InPlaceStep, GatherWorkspace, PagedPlan, paged_attention, plan_paged, slot_mapping, write_kv

__all__ = [
    "AttentionBackend",
    "AttentionBatch",
    "BufferPool",
    "CascadeGroup",
    "CascadeLimits",
    "CascadePlan",
    "GatherWorkspace",
    "InPlaceStep",
    "PagedPlan",
    "TorchAttentionBackend",
    "cascade_attention",
    "cpu_ops",
    "causal_mask",
    "decode_attention",
    "find_groups",
    "make_backend",
    "merge_state",
    "paged_attention",
    "plan_cascade",
    "plan_paged",
    "prefill_attention",
    "slot_mapping",
    "visible_attention",
    "write_kv",
]
