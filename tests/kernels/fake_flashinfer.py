"""A CPU stand-in for the part of `flashinfer` the backend uses, for testing how the backend
drives FlashInfer (page tables, levels, row subsets, base-2 merges, plan once per step)
on machines without CUDA. It is not FlashInfer and says nothing about its kernels: the
`gpu` tests run those.

Written from FlashInfer 0.7.2's documented semantics: CSR page tables (`qo_indptr`,
`kv_indptr`, `kv_indices`, `kv_last_page_len`, int32 on the CPU), NHD pages passed as a
`(k_cache, v_cache)` tuple, causal masks aligned bottom-right, lse in base 2, merges in
place. Strict where FlashInfer is undefined: a request without KV pages raises. Positional
parameter names follow 0.7.2's signatures (checked by test_fake_flashinfer_signatures when
the real package imports). Computes in float64; every wrapper counts its plan and run calls
and keeps the kernel `backend` it was made with.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

LOG2E = 1.0 / math.log(2.0)


class _Table:
    def __init__(self, qo_indptr, kv_indptr, kv_indices, last_page_len, num_qo_heads, num_kv_heads,
                 head_dim, page_size, causal, q_data_type, kv_data_type):
        for t in (qo_indptr, kv_indptr, kv_indices, last_page_len):
            assert t.dtype == torch.int32 and t.device.type == "cpu", "plan takes CPU int32 index tensors"
        num_pages = (kv_indptr[1:] - kv_indptr[:-1]).tolist()
        if any(n < 1 for n in num_pages):
            raise ValueError("a request with no KV pages: undefined in FlashInfer")
        assert all(1 <= n <= page_size for n in last_page_len.tolist()), "last_page_len out of 1..page_size"
        assert len(qo_indptr) == len(kv_indptr) == len(last_page_len) + 1
        self.qo, self.kv = qo_indptr.tolist(), kv_indptr.tolist()
        self.indices, self.last = kv_indices.tolist(), last_page_len.tolist()
        self.heads = (num_qo_heads, num_kv_heads, head_dim)
        self.page_size, self.causal = page_size, causal
        self.q_dtype = q_data_type
        self.kv_dtype = kv_data_type or q_data_type

    def attend(self, q: Tensor, paged) -> tuple[Tensor, Tensor]:
        k_cache, v_cache = paged
        num_qo_heads, num_kv_heads, head_dim = self.heads
        assert q.shape == (self.qo[-1], num_qo_heads, head_dim), f"q {tuple(q.shape)} vs plan"
        assert q.dtype == self.q_dtype and k_cache.dtype == self.kv_dtype, "dtypes differ from the plan"
        assert k_cache.shape[1:] == (self.page_size, num_kv_heads, head_dim), "not NHD pages"
        out = torch.empty(q.shape, dtype=torch.float64)
        lse = torch.empty(q.shape[:2], dtype=torch.float64)
        for r in range(len(self.last)):
            pages = torch.tensor(self.indices[self.kv[r]:self.kv[r + 1]], dtype=torch.long)
            kv_len = (len(pages) - 1) * self.page_size + self.last[r]
            rows = slice(self.qo[r], self.qo[r + 1])
            out[rows], lse[rows] = self._request(q[rows], k_cache, v_cache, pages, kv_len)
        return out.to(q.dtype), (lse * LOG2E).float()

    def _request(self, q, k_cache, v_cache, pages, kv_len):
        group = q.shape[1] // k_cache.shape[2]
        k = k_cache[pages].flatten(0, 1)[:kv_len].double().repeat_interleave(group, 1)  # [L, Hq, D]
        v = v_cache[pages].flatten(0, 1)[:kv_len].double().repeat_interleave(group, 1)
        scores = torch.einsum("qhd,khd->hqk", q.double(), k) / math.sqrt(q.shape[-1])
        if self.causal:
            q_pos = torch.arange(kv_len - q.shape[0], kv_len)
            scores = scores.masked_fill(torch.arange(kv_len)[None, None, :] > q_pos[None, :, None], float("-inf"))
        lse = torch.logsumexp(scores, -1)  # [Hq, Q], base e
        return torch.einsum("hqk,khd->qhd", torch.exp(scores - lse[..., None]), v), lse.T


class _Wrapper:
    def __init__(self, float_workspace_buffer: Tensor, kv_layout: str = "NHD", backend: str = "auto") -> None:
        assert kv_layout == "NHD"
        self.backend = backend
        self.plans = self.runs = 0
        self._table: _Table | None = None

    def run(self, q: Tensor, paged_kv_cache, return_lse: bool = False):
        assert self._table is not None, "run before plan"
        self.runs += 1
        out, lse = self._table.attend(q, paged_kv_cache)
        return (out, lse) if return_lse else out


class BatchPrefillWithPagedKVCacheWrapper(_Wrapper):
    def plan(self, qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len, num_qo_heads,
             num_kv_heads, head_dim_qk, page_size, head_dim_vo=None, custom_mask=None, packed_custom_mask=None,
             causal=False, pos_encoding_mode="NONE", q_data_type="float16", kv_data_type=None):
        assert custom_mask is None and packed_custom_mask is None and pos_encoding_mode == "NONE"
        self.plans += 1
        self._table = _Table(qo_indptr, paged_kv_indptr, paged_kv_indices, paged_kv_last_page_len, num_qo_heads,
                             num_kv_heads, head_dim_qk, page_size, causal, q_data_type, kv_data_type)


class BatchDecodeWithPagedKVCacheWrapper(_Wrapper):
    def __init__(self, float_workspace_buffer: Tensor, kv_layout: str = "NHD", use_cuda_graph: bool = False,
                 use_tensor_cores: bool = False, paged_kv_indptr_buffer: Tensor | None = None,
                 paged_kv_indices_buffer: Tensor | None = None, paged_kv_last_page_len_buffer: Tensor | None = None,
                 backend: str = "auto") -> None:
        super().__init__(float_workspace_buffer, kv_layout, backend)
        self.use_tensor_cores = use_tensor_cores
        self.use_cuda_graph = use_cuda_graph
        self.buffers = (paged_kv_indptr_buffer, paged_kv_indices_buffer, paged_kv_last_page_len_buffer)
        if use_cuda_graph:  # FlashInfer's checks: the three buffers, of one batch size
            assert all(torch.is_tensor(b) for b in self.buffers)
            assert len(paged_kv_indptr_buffer) == len(paged_kv_last_page_len_buffer) + 1

    def plan(self, indptr, indices, last_page_len, num_qo_heads, num_kv_heads, head_dim, page_size,
             pos_encoding_mode="NONE", q_data_type="float16", kv_data_type=None):
        assert pos_encoding_mode == "NONE"
        self.plans += 1
        if self.use_cuda_graph:  # the plan rewrites the fixed buffers the graph reads
            indptr_buf, indices_buf, last_buf = self.buffers
            assert len(indptr) == len(indptr_buf), "a CUDA-graph wrapper's batch size is fixed"
            assert len(indices) <= len(indices_buf), "more pages than the indices buffer holds"
            indptr_buf.copy_(indptr)
            indices_buf[: len(indices)].copy_(indices)
            last_buf.copy_(last_page_len)
            indptr, indices, last_page_len = indptr_buf, indices_buf[: len(indices)], last_buf
        qo_indptr = torch.arange(len(indptr), dtype=torch.int32)  # one query per request
        self._table = _Table(qo_indptr, indptr, indices, last_page_len, num_qo_heads, num_kv_heads,
                             head_dim, page_size, False, q_data_type, kv_data_type)


def merge_state_in_place(v: Tensor, s: Tensor, v_other: Tensor, s_other: Tensor, mask=None) -> None:
    """(v, s) <- merge of two states over disjoint KV; s base 2, float32."""
    assert mask is None and s.dtype == s_other.dtype == torch.float32
    s_new = torch.logaddexp2(s.double(), s_other.double())
    merged = v.double() * torch.exp2(s.double() - s_new)[..., None] + v_other.double() * torch.exp2(
        s_other.double() - s_new)[..., None]
    v.copy_(merged.to(v.dtype))
    s.copy_(s_new.float())
