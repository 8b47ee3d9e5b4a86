"""FlashInfer backend: page tables and the step plan on CPU; the backend's use of the
wrappers on CPU against a stand-in module (fake_flashinfer); kernels on CUDA (marked gpu)."""

from __future__ import annotations

import inspect
import random

import pytest
import torch

from kernels_reference import BlockPool, bf16_close, forked_batch, private_batch, random_cache, reference_attention
from parrot_kernels import AttentionBatch, TorchAttentionBackend, make_backend, plan_cascade
from parrot_kernels import flashinfer_backend
from parrot_kernels.backend import uses_flashinfer
from parrot_kernels.flashinfer_backend import FlashInferAttentionBackend, flashinfer_available, page_table, plan_step

HEAD_DIM = 64  # FlashInfer's FA2 kernels need head_dim >= 64
# What the GPU tests compile: bf16 at head_dim 64 and 128 (scripts/flashinfer_prebuild.py).
GPU_DTYPES = {"bfloat16": torch.bfloat16}
GPU_HEAD_DIMS = {"d64": 64, "d128": 128}


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


def test_float32_on_cuda_takes_the_torch_backend(monkeypatch):
    """FlashInfer has no float32 kernels: a float32 CUDA cache runs the torch backend even
    where flashinfer imports (stood in for here); 16-bit CUDA caches run FlashInfer."""
    monkeypatch.setattr(flashinfer_backend, "flashinfer_available", lambda: True)
    cuda = torch.device("cuda")
    assert uses_flashinfer(cuda, torch.bfloat16) and uses_flashinfer(cuda, torch.float16)
    assert not uses_flashinfer(cuda, torch.float32)
    assert not uses_flashinfer(torch.device("cpu"), torch.bfloat16)
    cache = torch.zeros(1, 2, 4, 16, 2, 8)  # float32; the device argument says where it runs
    assert isinstance(make_backend(cache, "cuda", enable_cascade=False), TorchAttentionBackend)
    monkeypatch.setattr(flashinfer_backend, "flashinfer_available", lambda: False)
    assert not uses_flashinfer(cuda, torch.bfloat16)


needs_flashinfer = pytest.mark.skipif(not flashinfer_available(), reason="needs CUDA and flashinfer")


def run_cuda(batch, cache, num_q_heads, enable_cascade, seed=1):
    gen = torch.Generator().manual_seed(seed)
    T, Hkv, D, dtype = batch.num_tokens, cache.shape[4], cache.shape[5], cache.dtype
    q, k, v = (torch.randn(T, h, D, generator=gen).to(dtype) for h in (num_q_heads, Hkv, Hkv))
    cuda_cache = cache.cuda()
    backend = FlashInferAttentionBackend(cuda_cache, enable_cascade=enable_cascade, num_q_heads=num_q_heads)
    backend.prepare(batch)
    assert backend.is_cascade_step == (enable_cascade and bool(plan_cascade(batch, cache.shape[3]).groups))
    out = backend.forward(q.cuda(), k.cuda(), v.cuda(), 0).cpu()
    ref, _ = reference_attention(q, cuda_cache[0].cpu(), batch)
    return out, ref


@pytest.mark.gpu
@needs_flashinfer
@pytest.mark.parametrize("dtype", list(GPU_DTYPES.values()), ids=list(GPU_DTYPES))
@pytest.mark.parametrize("head_dim", list(GPU_HEAD_DIMS.values()), ids=list(GPU_HEAD_DIMS))
@pytest.mark.parametrize("group", [1, 3, 4, 8], ids=lambda g: f"group{g}")
@pytest.mark.parametrize("q_lens", [[1] * 6, [1, 7, 1, 30, 2, 1]], ids=["decode", "mixed"])
@pytest.mark.parametrize("block_size", [1, 16], ids=lambda b: f"block{b}")
def test_flashinfer_plain(dtype, head_dim, group, q_lens, block_size):
    rng = random.Random(group)
    kv_lens = [q + rng.randint(0, 50) for q in q_lens]
    batch = private_batch(q_lens, kv_lens, block_size, BlockPool(500, rng))
    out, ref = run_cuda(batch, random_cache(1, 500, block_size, 2, head_dim, dtype), 2 * group, False)
    bf16_close(out, ref, steps=3)


@pytest.mark.gpu
@needs_flashinfer
@pytest.mark.parametrize("dtype", list(GPU_DTYPES.values()), ids=list(GPU_DTYPES))
@pytest.mark.parametrize("head_dim", list(GPU_HEAD_DIMS.values()), ids=list(GPU_HEAD_DIMS))
@pytest.mark.parametrize("group", [1, 3, 8], ids=lambda g: f"group{g}")
@pytest.mark.parametrize("block_size", [1, 16], ids=lambda b: f"block{b}")
def test_flashinfer_cascade(dtype, head_dim, group, block_size):
    bs = block_size
    tree = [
        (bs, [(2 * bs, [(5, 1), (1, 1), (bs + 2, 3)]), (bs, [(4, 1), (3, 2)]), (6, 1)]),
        (2 * bs, [(7, 1), (bs + 3, 1)]),
        (3, 1),
    ]
    batch = forked_batch(tree, bs, BlockPool(400, random.Random(group)))
    cache = random_cache(1, 400, bs, 2, head_dim, dtype)
    for enable in (True, False):
        out, ref = run_cuda(batch, cache, 2 * group, enable)
        assert not torch.isnan(out).any()
        bf16_close(out, ref, steps=3)


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bfloat16"])
@pytest.mark.parametrize("group", [1, 3], ids=lambda g: f"group{g}")
@pytest.mark.parametrize("block_size", [1, 16], ids=lambda b: f"block{b}")
@pytest.mark.parametrize("plan_at", ["prepare", "forward"])
@pytest.mark.parametrize("name", list(cpu_cases(16)))
def test_backend_drives_flashinfer_like_the_reference(fake_flashinfer, name, plan_at, block_size, group, dtype):
    case = cpu_cases(block_size)[name]
    batch = cpu_batch(case, block_size, random.Random(group))
    cache = random_cache(2, 500, block_size, 2, HEAD_DIM, dtype)
    num_q_heads = 2 * group if plan_at == "prepare" else None  # None: learnt at the first forward
    backend = FlashInferAttentionBackend(cache.clone(), num_q_heads=num_q_heads)
    backend.prepare(batch)
    plan = backend.step_plan
    path = ("multilevel" if plan.is_multilevel else "levels" if plan.is_cascade
            else "decode" if plan.is_decode else "prefill")
    assert path == case[-1]
    made = [w for w in [backend._decode_wrapper, *backend._prefill_wrappers] if w is not None]
    assert [w.plans for w in made] == [1] * (len(plan.levels) if plan_at == "prepare" else 0)
    gen = torch.Generator().manual_seed(0)
    for layer in range(2):  # two layers: the wrappers are planned once and run once per layer
        q, k, v = (torch.randn(batch.num_tokens, h, HEAD_DIM, generator=gen).to(dtype) for h in (2 * group, 2, 2))
        out = backend.forward(q, k, v, layer)
        ref, _ = reference_attention(q, backend.kv_cache[layer], batch)
        assert not torch.isnan(out).any() and out.dtype == dtype
        error = ((out.double() - ref).abs() / ref.abs().clamp_min(1.0)).max().item()
        assert error < (1e-5 if dtype == torch.float32 else 1e-2)
    wrappers = [backend._decode_wrapper] if path == "decode" else backend._prefill_wrappers
    assert [(w.plans, w.runs) for w in wrappers] == [(1, 2)] * len(plan.levels)
    # one kernel family, the one scripts/flashinfer_prebuild.py compiles; decode on tensor cores
    assert all(w.backend == "fa2" for w in wrappers)
    assert path != "decode" or backend._decode_wrapper.use_tensor_cores


@pytest.mark.gpu  # needs no GPU, only flashinfer (the cuda extra): it runs with the GPU checks
def test_fake_flashinfer_signatures():
    """The stand-in takes the real package's parameters (where it imports): its required
    ones are the real leading ones, in order; its optional ones exist in the real one."""
    real = pytest.importorskip("flashinfer", reason="flashinfer not installed (the cuda extra)")
    import fake_flashinfer

    for cls in ("BatchPrefillWithPagedKVCacheWrapper", "BatchDecodeWithPagedKVCacheWrapper"):
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
