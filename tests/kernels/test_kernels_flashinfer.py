"""FlashInfer backend: CPU-side page tables always; kernels on CUDA only (marked gpu)."""

from __future__ import annotations

import random

import pytest
import torch

from kernels_reference import BlockPool, forked_batch, private_batch, random_cache, reference_attention
from parrot_kernels import AttentionBatch, TorchAttentionBackend, make_backend, plan_cascade
from parrot_kernels.flashinfer_backend import flashinfer_available, page_table, shared_levels

HEAD_DIM = 64


def test_page_table_csr():
    t = page_table([1, 3], [17, 5], [[4, 5, 9], [7]], block_size=16)
    assert t.qo_indptr.tolist() == [0, 1, 4] and t.kv_indptr.tolist() == [0, 2, 3]
    assert t.kv_indices.tolist() == [4, 5, 7] and t.kv_last_page_len.tolist() == [1, 5]
    assert t.qo_indptr.dtype == torch.int32 and not t.is_decode
    assert page_table([1, 1], [16, 1], [[3], [2]], 16).kv_last_page_len.tolist() == [16, 1]


def test_shared_levels_cover_group_queries():
    batch = AttentionBatch([1, 1, 2], [40, 35, 34], [[1, 2, 3], [1, 2, 4], [1, 5, 6]])
    levels = shared_levels(plan_cascade(batch, 16), 16, "cpu")
    assert [sorted(level.rows.tolist()) for level in levels] == [[0, 1, 2, 3], [0, 1]]
    assert [level.table.kv_indices.tolist() for level in levels] == [[1], [2]]
    assert all(level.table.kv_last_page_len.tolist() == [16] for level in levels)


def test_make_backend_on_cpu_is_torch():
    cache = torch.zeros(1, 2, 4, 16, 2, 8)
    assert isinstance(make_backend(cache, "cpu", enable_cascade=False), TorchAttentionBackend)


needs_flashinfer = pytest.mark.skipif(not flashinfer_available(), reason="needs CUDA and flashinfer")


def run_cuda(batch, cache, num_q_heads, enable_cascade, seed=1):
    from parrot_kernels.flashinfer_backend import FlashInferAttentionBackend

    gen = torch.Generator().manual_seed(seed)
    T, Hkv, dtype = batch.num_tokens, cache.shape[4], cache.dtype
    q, k, v = (torch.randn(T, h, HEAD_DIM, generator=gen).to(dtype) for h in (num_q_heads, Hkv, Hkv))
    cuda_cache = cache.cuda()
    backend = FlashInferAttentionBackend(cuda_cache, enable_cascade=enable_cascade)
    backend.prepare(batch)
    assert backend.is_cascade_step == (enable_cascade and bool(plan_cascade(batch, cache.shape[3]).groups))
    out = backend.forward(q.cuda(), k.cuda(), v.cuda(), 0).cpu()
    ref, _ = reference_attention(q, cuda_cache[0].cpu(), batch)
    return out, ref


@pytest.mark.gpu
@needs_flashinfer
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 3, 4, 8])
@pytest.mark.parametrize("q_lens", [[1] * 6, [1, 7, 1, 30, 2, 1]])
@pytest.mark.parametrize("block_size", [1, 16])
def test_flashinfer_plain(dtype, group, q_lens, block_size):
    rng = random.Random(group)
    kv_lens = [q + rng.randint(0, 50) for q in q_lens]
    batch = private_batch(q_lens, kv_lens, block_size, BlockPool(500, rng))
    out, ref = run_cuda(batch, random_cache(1, 500, block_size, 2, HEAD_DIM, dtype), 2 * group, False)
    assert (out.double() - ref).abs().max() < 1e-2


@pytest.mark.gpu
@needs_flashinfer
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 3, 8])
@pytest.mark.parametrize("block_size", [1, 16])
def test_flashinfer_cascade(dtype, group, block_size):
    bs = block_size
    tree = [
        (bs, [(2 * bs, [(5, 1), (1, 1), (bs + 2, 3)]), (bs, [(4, 1), (3, 2)]), (6, 1)]),
        (2 * bs, [(7, 1), (bs + 3, 1)]),
        (3, 1),
    ]
    batch = forked_batch(tree, bs, BlockPool(400, random.Random(group)))
    cache = random_cache(1, 400, bs, 2, HEAD_DIM, dtype)
    for enable in (True, False):
        out, ref = run_cuda(batch, cache, 2 * group, enable)
        assert not torch.isnan(out).any()
        assert (out.double() - ref).abs().max() < 1e-2
