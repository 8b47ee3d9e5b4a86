"""FlashInfer backend: page tables and the step plan on CPU; the backend's use of the
wrappers on CPU against a stand-in module (fake_flashinfer); kernels on CUDA (marked gpu)."""

from __future__ import annotations

import inspect
import random
import sys

import pytest
import torch

from kernels_reference import BlockPool, forked_batch, private_batch, random_cache, reference_attention
from parrot_kernels import AttentionBatch, TorchAttentionBackend, make_backend, plan_cascade
from parrot_kernels.flashinfer_backend import FlashInferAttentionBackend, flashinfer_available, page_table, plan_step

HEAD_DIM = 64


def test_page_table_csr():
    t = page_table([1, 3], [17, 5], [[4, 5, 9], [7]], block_size=16)
    assert t.qo_indptr.tolist() == [0, 1, 4] and t.kv_indptr.tolist() == [0, 2, 3]
    assert t.kv_indices.tolist() == [4, 5, 7] and t.kv_last_page_len.tolist() == [1, 5]
    assert t.qo_indptr.dtype == torch.int32 and not t.is_decode
    assert page_table([1, 1], [16, 1], [[3], [2]], 16).kv_last_page_len.tolist() == [16, 1]


def test_step_plan_levels():
    batch = AttentionBatch([1, 1, 2], [40, 35, 34], [[1, 2, 3], [1, 2, 4], [1, 5, 6]])
    plan = plan_step(batch, 16)
    *shared, private = plan.levels
    # level 0 (block 1) holds every query in batch order; level 1 (block 2) only seqs 0, 1
    assert shared[0].rows is None and shared[1].rows.tolist() == [0, 1]
    assert [level.table.kv_indices.tolist() for level in shared] == [[1], [2]]
    assert all(level.table.kv_last_page_len.tolist() == [16] and not level.causal for level in shared)
    assert private.causal and private.rows is None and private.table.kv_indices.tolist() == [3, 4, 5, 6]
    assert plan.is_cascade and not plan.is_multilevel
    assert plan_step(batch, 16, enable_cascade=False).levels[0].table.kv_indices.tolist() == [1, 2, 3, 1, 2, 4, 1, 5, 6]


def test_step_plan_is_multilevel_when_every_level_covers_the_batch():
    tables = [[1, 2, 3], [1, 2, 4], [1, 6, 7], [1, 6, 8]]  # system prompt 1 -> documents 2, 6
    plan = plan_step(AttentionBatch([1] * 4, [40] * 4, tables), 16)
    assert plan.is_multilevel and len(plan.levels) == 3
    assert [level.table.kv_indices.tolist() for level in plan.levels[:2]] == [[1], [2, 6]]
    out_of_order = [tables[0], tables[2], tables[1], tables[3]]  # groups not contiguous
    assert not plan_step(AttentionBatch([1] * 4, [40] * 4, out_of_order), 16).is_multilevel
    unrelated = tables[:2] + [[9, 5, 10]]  # the third request shares nothing
    assert not plan_step(AttentionBatch([1] * 3, [40] * 3, unrelated), 16).is_multilevel
    assert plan_step(AttentionBatch([1, 1], [5, 9], [[1], [2]]), 16).is_decode


def test_make_backend_on_cpu_is_torch():
    cache = torch.zeros(1, 2, 4, 16, 2, 8)
    assert isinstance(make_backend(cache, "cpu", enable_cascade=False), TorchAttentionBackend)


needs_flashinfer = pytest.mark.skipif(not flashinfer_available(), reason="needs CUDA and flashinfer")


def run_cuda(batch, cache, num_q_heads, enable_cascade, seed=1):
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


# The backend driving a CPU stand-in for flashinfer (see fake_flashinfer.py): checks the
# page tables, levels, row subsets, base-2 merges and plan-once contract, not the kernels.

def cpu_cases(bs):
    return {
        "decode": ("private", [1] * 6, "decode"),
        "mixed": ("private", [1, 7, 1, 30, 2, 1], "prefill"),
        "one_prefix": ([(2 * bs, [(5, 1), (1, 1), (bs + 2, 3), (9, 1)])], "multilevel"),
        "two_documents": ([(bs, [(2 * bs, [(5, 1), (1, 1)]), (bs, [(4, 1), (3, 2)])])], "multilevel"),
        "unrelated_request": ([(2 * bs, [(7, 1), (bs + 3, 1)]), (3, 1)], "levels"),
        "three_levels": ([
            (bs, [(2 * bs, [(5, 1), (1, 1), (bs + 2, 3)]), (bs, [(4, 1), (3, 2)]), (6, 1)]),
            (2 * bs, [(7, 1), (bs + 3, 1)]),
            (3, 1),
        ], "levels"),
    }


def cpu_batch(case, bs, rng):
    if case[0] == "private":
        q_lens = case[1]
        return private_batch(q_lens, [q + rng.randint(0, 50) for q in q_lens], bs, BlockPool(500, rng))
    return forked_batch(case[0], bs, BlockPool(500, rng))


@pytest.fixture
def fake_flashinfer(monkeypatch):
    import fake_flashinfer

    monkeypatch.setitem(sys.modules, "flashinfer", fake_flashinfer)
    return fake_flashinfer


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 3])
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("name", list(cpu_cases(16)))
def test_backend_drives_flashinfer_like_the_reference(fake_flashinfer, name, block_size, group, dtype):
    case = cpu_cases(block_size)[name]
    batch = cpu_batch(case, block_size, random.Random(group))
    cache = random_cache(2, 500, block_size, 2, HEAD_DIM, dtype)
    backend = FlashInferAttentionBackend(cache.clone())
    backend.prepare(batch)
    plan = backend.step_plan
    path = ("multilevel" if plan.is_multilevel else "levels" if plan.is_cascade
            else "decode" if plan.is_decode else "prefill")
    assert path == case[-1]
    gen = torch.Generator().manual_seed(0)
    for layer in range(2):  # two layers: the wrappers are planned once and run once per layer
        q, k, v = (torch.randn(batch.num_tokens, h, HEAD_DIM, generator=gen).to(dtype) for h in (2 * group, 2, 2))
        out = backend.forward(q, k, v, layer)
        ref, _ = reference_attention(q, backend.kv_cache[layer], batch)
        assert not torch.isnan(out).any() and out.dtype == dtype
        error = ((out.double() - ref).abs() / ref.abs().clamp_min(1.0)).max().item()
        assert error < (1e-5 if dtype == torch.float32 else 1e-2)
    wrappers = ([backend._decode_wrapper] if path == "decode" else list(backend._multilevel_wrappers.values())
                if path == "multilevel" else backend._prefill_wrappers[: len(plan.levels)])
    assert [(w.plans, w.runs) for w in wrappers] == [(1, 2)] * len(wrappers)


def test_fake_flashinfer_signatures():
    """The stand-in takes the real package's parameters (where it imports): its required
    ones are the real leading ones, in order; its optional ones exist in the real one."""
    real = pytest.importorskip("flashinfer", reason="flashinfer not installed (the cuda extra)")
    import fake_flashinfer

    for cls in ("BatchPrefillWithPagedKVCacheWrapper", "BatchDecodeWithPagedKVCacheWrapper",
                "MultiLevelCascadeAttentionWrapper"):
        for method in ("__init__", "plan", "run"):
            ours = inspect.signature(getattr(getattr(fake_flashinfer, cls), method)).parameters.values()
            theirs = inspect.signature(getattr(getattr(real, cls), method)).parameters
            required = [p.name for p in ours if p.default is inspect.Parameter.empty]
            assert required == list(theirs)[: len(required)], (cls, method)
            takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in theirs.values())
            optional = [p.name for p in ours if p.default is not inspect.Parameter.empty]
            assert takes_any or set(optional) <= set(theirs), (cls, method, set(optional) - set(theirs))
    merge = inspect.signature(real.merge_state_in_place).parameters
    assert list(inspect.signature(fake_flashinfer.merge_state_in_place).parameters) == list(merge)
