"""parrot_kernels: attention over Parrot's paged KV cache (tensors in, tensors out).

GPU libraries (FlashInfer) are imported lazily, so this package imports on CPU-only machines.
"""

from .backend import AttentionBackend, TorchAttentionBackend, make_backend
from .batch import AttentionBatch
from .cascade import CascadeGroup, CascadePlan, cascade_attention, find_groups, merge_state, plan_cascade
from .paged_attention import (
    causal_mask,
    decode_attention,
    dense_attention,
    paged_attention,
    plan_paged,
    prefill_attention,
    slot_mapping,
    write_kv,
)

__all__ = [
    "AttentionBackend",
    "AttentionBatch",
    "CascadeGroup",
    "CascadePlan",
    "TorchAttentionBackend",
    "cascade_attention",
    "causal_mask",
    "decode_attention",
    "dense_attention",
    "find_groups",
    "make_backend",
    "merge_state",
    "paged_attention",
    "plan_cascade",
    "plan_paged",
    "prefill_attention",
    "slot_mapping",
    "write_kv",
]
