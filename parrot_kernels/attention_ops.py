"""Attention math on gathered (contiguous or strided) K/V: tensors in, tensors out.

GQA: query head i reads kv head `i // g`, g = num_q_heads // num_kv_heads. The g query
heads of a kv head are folded into extra query rows, so K/V are never repeated per q head.
Softmax scale is 1/sqrt(head_dim). Every log-sum-exp here is float32 and base e (natural
log); FlashInfer's is base 2 (lse_e = lse_2 * ln 2).

Two implementations of each op: torch's fused CPU flash-attention kernel
(`aten::_scaled_dot_product_flash_attention_for_cpu`, which also returns the lse and never
materializes the scores), and a plain bmm + softmax reference in float32 used when the
fused kernel is absent (other devices, old torch) or `use_fused=False` (tests).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

PREFILL_QUERY_CHUNK = 512  # query rows per call of prefill_attention (bounds mask / score memory)


def _fused_kernel(device: torch.device):
    if device.type != "cpu":
        return None
    return getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def causal_mask(q_len: int, kv_len: int, device=None) -> Tensor:
    """Bottom-right aligned causal mask [q_len, kv_len], True = visible.

    Query i sits at position kv_len - q_len + i and sees kv positions <= that.
    """
    q_pos = torch.arange(kv_len - q_len, kv_len, device=device)
    return torch.arange(kv_len, device=device)[None, :] <= q_pos[:, None]


def fold_heads(q: Tensor, num_kv_heads: int) -> Tensor:
    """[M, Hq, D] -> [Hkv, g * M, D]: row j * M + m holds query m's head h * g + j."""
    num_rows, num_q_heads, head_dim = q.shape
    group = num_q_heads // num_kv_heads
    q = q.reshape(num_rows, num_kv_heads, group, head_dim).movedim(0, 2)  # [Hkv, g, M, D]
    return q.reshape(num_kv_heads, group * num_rows, head_dim)


def unfold_heads(out: Tensor, lse: Tensor, num_rows: int) -> tuple[Tensor, Tensor]:
    """Inverse of fold_heads: out [Hkv, g * M, D] -> [M, Hq, D], lse [Hkv, g * M] -> [M, Hq]."""
    num_kv_heads, rows, head_dim = out.shape
    group = rows // num_rows
    out = out.reshape(num_kv_heads, group, num_rows, head_dim).movedim(2, 0)
    lse = lse.reshape(num_kv_heads, group, num_rows).movedim(2, 0)
    return out.reshape(num_rows, -1, head_dim), lse.reshape(num_rows, -1)


def attention(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, use_fused: bool = True
) -> tuple[Tensor, Tensor]:
    """Core op. q: [B, Hkv, R, D]; k, v: [B, Hkv, N, D] (any strides); mask: bool
    broadcastable to [B, Hkv, R, N] (True = visible) or None. Every row must see >= 1 key.

    Returns out [B, Hkv, R, D] and lse [B, Hkv, R] float32 (base e). The fused kernel
    computes in k's dtype with float32 accumulation (a bf16 out is rounded once); the bmm
    path computes and returns float32.
    """
    fused = _fused_kernel(q.device) if use_fused else None
    if fused is not None:
        bias = None
        if mask is not None:  # the kernel takes an additive mask in q's dtype
            bias = torch.zeros(mask.shape, dtype=k.dtype, device=q.device).masked_fill_(~mask, float("-inf"))
        out, lse = fused(q.to(k.dtype), k, v, attn_mask=bias)
        return out, lse.float()
    scores = torch.matmul(q.float() * (1.0 / math.sqrt(q.shape[-1])), k.float().transpose(-1, -2))
    if mask is not None:
        scores.masked_fill_(~mask, float("-inf"))
    return softmax_times_v(scores, v.float())


def decode_attention(
    q: Tensor, k: Tensor, v: Tensor, is_padding: Tensor | None = None, use_fused: bool = True
) -> tuple[Tensor, Tensor]:
    """One query per sequence against its padded K/V, all sequences in one kernel call.

    q: [B, Hq, D]; k, v: [B, L, Hkv, D] (a gathered, padded batch); is_padding: [B, L] bool.
    Returns out [B, Hq, D] and lse [B, Hq] float32 (base e).
    """
    num_seqs, num_q_heads, head_dim = q.shape
    num_kv_heads = k.shape[2]
    qg = q.reshape(num_seqs, num_kv_heads, num_q_heads // num_kv_heads, head_dim)  # [B, Hkv, g, D]
    mask = None if is_padding is None else ~is_padding[:, None, None, :]  # [B, 1, 1, L]
    out, lse = attention(qg, k.transpose(1, 2), v.transpose(1, 2), mask, use_fused)
    return out.reshape(num_seqs, num_q_heads, head_dim), lse.reshape(num_seqs, num_q_heads)


def visible_attention(q: Tensor, k: Tensor, v: Tensor, use_fused: bool = True) -> tuple[Tensor, Tensor]:
    """Every query sees every key (a cascade's shared level): q: [M, Hq, D]; k, v: [N, Hkv, D].

    Returns out [M, Hq, D] and lse [M, Hq] float32. K/V are read once for all M queries.
    """
    qg = fold_heads(q, k.shape[1])[None]  # [1, Hkv, g * M, D]
    out, lse = attention(qg, k.transpose(0, 1)[None], v.transpose(0, 1)[None], None, use_fused)
    return unfold_heads(out[0], lse[0], q.shape[0])


def prefill_attention(q: Tensor, k: Tensor, v: Tensor, use_fused: bool = True) -> tuple[Tensor, Tensor]:
    """Bottom-right causal attention of one sequence's new tokens, with lse.

    q: [Q, Hq, D]; k, v: [L, Hkv, D] (L >= Q) -> out [Q, Hq, D], lse [Q, Hq] float32.
    With the fused CPU kernel no mask is ever built: the queries see the L - Q cached
    keys fully (one call) and the Q new keys causally (a square, top-left = bottom-right),
    and the two parts merge by log-sum-exp.
    """
    fused = _fused_kernel(q.device) if use_fused else None
    if fused is None:
        return _masked_prefill(q, k, v)
    prior = k.shape[0] - q.shape[0]
    out, lse = _causal_square(q, k[prior:], v[prior:], fused)
    if prior == 0:
        return out, lse
    out_old, lse_old = visible_attention(q, k[:prior], v[:prior], use_fused)
    return merge_state(out_old.float(), lse_old, out.float(), lse)


def _causal_square(q: Tensor, k: Tensor, v: Tensor, fused) -> tuple[Tensor, Tensor]:
    """q: [Q, Hq, D]; k, v: [Q, Hkv, D] -> causal out [Q, Hq, D], lse [Q, Hq] float32."""
    group = q.shape[1] // k.shape[1]
    qh = q.transpose(0, 1)[None].to(k.dtype)  # [1, Hq, Q, D]
    kh = k.transpose(0, 1).repeat_interleave(group, 0)[None]  # [1, Hq, Q, D]
    vh = v.transpose(0, 1).repeat_interleave(group, 0)[None]
    out, lse = fused(qh, kh, vh, is_causal=True)
    return out[0].transpose(0, 1), lse[0].transpose(0, 1).float()


def _masked_prefill(q: Tensor, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """The bmm path with an explicit mask; queries in chunks to bound the score memory."""
    q_len, kv_len = q.shape[0], k.shape[0]
    group = q.shape[1] // k.shape[1]
    kt, vt = k.transpose(0, 1)[None], v.transpose(0, 1)[None]  # [1, Hkv, L, D]
    mask = causal_mask(q_len, kv_len, q.device)
    outs, lses = [], []
    for start in range(0, q_len, PREFILL_QUERY_CHUNK):
        rows = slice(start, start + PREFILL_QUERY_CHUNK)
        qg = fold_heads(q[rows], k.shape[1])[None]  # [1, Hkv, g * C, D]
        out, lse = attention(qg, kt, vt, mask[rows].repeat(group, 1), use_fused=False)
        out, lse = unfold_heads(out[0], lse[0], qg.shape[2] // group)
        outs.append(out)
        lses.append(lse)
    return torch.cat(outs), torch.cat(lses)


def merge_state(o_a: Tensor, lse_a: Tensor, o_b: Tensor, lse_b: Tensor) -> tuple[Tensor, Tensor]:
    """Merge two partial attention states over disjoint KV sets.

    o: [M, H, D] float32; lse: [M, H] float32, base e; lse = -inf marks an empty part
    (its o, which must be finite, is ignored), and two empty parts merge to lse -inf
    without NaN. Part a's weight is exp(lse_a) / (exp(lse_a) + exp(lse_b)) =
    sigmoid(lse_a - lse_b): five kernels, no exp of an unbounded difference.
    """
    lse = torch.logaddexp(lse_a, lse_b)
    w_a = torch.sigmoid((lse_a - lse_b).nan_to_num_(0.0))  # both empty: -inf - -inf = nan
    return torch.lerp(o_b, o_a, w_a[..., None]), lse


def softmax_times_v(scores: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """softmax(scores) @ v and logsumexp(scores), consuming `scores` in place.

    scores: [..., M, N] float32 (-inf = masked); v: [..., N, D] float32.
    Returns out [..., M, D] and lse [..., M] (base e). A fully masked row gives out 0 and
    lse -inf, not NaN. Normalizes the [M, D] output rather than the [M, N] probabilities.
    """
    row_max = scores.amax(dim=-1, keepdim=True)
    row_max.masked_fill_(torch.isinf(row_max), 0.0)
    probs = scores.sub_(row_max).exp_()  # unnormalized, in place
    denom = probs.sum(dim=-1, keepdim=True)
    out = torch.matmul(probs, v) / denom.clamp_min(torch.finfo(torch.float32).tiny)
    return out, (row_max + torch.log(denom)).squeeze(-1)
