"""Plain paged attention (decode, prefill, mixed) and KV writes against a float64 reference."""

from __future__ import annotations

import random

import pytest
import torch

from kernels_reference import BlockPool, private_batch, random_cache, reference_attention
from parrot_kernels import AttentionBatch, CascadeLimits, TorchAttentionBackend, cpu_ops, paged_attention, plan_paged, slot_mapping, write_kv

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}
HEAD_DIM = 32


def run_backend(batch, cache, num_q_heads, seed=1, enable_cascade=False, layer=0, use_fused=True, use_kernels=False):
    """Random q/k/v for the batch's new tokens; returns (out, q, k, v, backend)."""
    gen = torch.Generator().manual_seed(seed)
    num_kv_heads, dtype = cache.shape[4], cache.dtype
    T = batch.num_tokens
    q = torch.randn(T, num_q_heads, HEAD_DIM, generator=gen).to(dtype)
    k = torch.randn(T, num_kv_heads, HEAD_DIM, generator=gen).to(dtype)
    v = torch.randn(T, num_kv_heads, HEAD_DIM, generator=gen).to(dtype)
    backend = TorchAttentionBackend(cache, enable_cascade=enable_cascade, cascade_limits=CascadeLimits(),
                                    use_fused=use_fused, use_kernels=use_kernels)
    backend.prepare(batch)
    return backend.forward(q, k, v, layer), q, k, v, backend


def max_error(out, q, cache, batch, layer=0):
    ref, _ = reference_attention(q, cache[layer], batch)
    assert not torch.isnan(out).any()
    return (out.double() - ref).abs().max().item()


@pytest.mark.parametrize("use_fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 3, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16])
def test_decode_ragged(dtype, group, block_size, use_fused):
    rng = random.Random(group * 100 + block_size)
    kv_lens = [rng.randint(1, 70) for _ in range(7)]
    pool = BlockPool(600, rng)
    batch = private_batch([1] * 7, kv_lens, block_size, pool)
    cache = random_cache(2, 600, block_size, 2, HEAD_DIM, dtype)
    out, q, *_ = run_backend(batch, cache, 2 * group, layer=1, use_fused=use_fused)
    assert max_error(out, q, cache, batch, layer=1) < TOLERANCE[dtype]


@pytest.mark.skipif(not cpu_ops.load(), reason="Parrot CPU kernels not available here")
@pytest.mark.parametrize("group", [1, 3, 8])
@pytest.mark.parametrize("block_size", [1, 16])
def test_in_place_decode_kernel_in_a_mixed_batch(group, block_size):
    """Decodes read the paged cache in place (no gather buffer), next to prefills (bf16)."""
    rng = random.Random(11 + group + block_size)
    q_lens, kv_lens = [1, 5, 1, 33, 1], [70, 5, 1, 50, 600]
    pool = BlockPool(900, rng)
    batch = private_batch(q_lens, kv_lens, block_size, pool)
    cache = random_cache(2, 900, block_size, 2, HEAD_DIM, torch.bfloat16)
    out, q, _, _, backend = run_backend(batch, cache, 2 * group, layer=1, use_kernels=True)
    assert backend._plan.decode.in_place and backend._workspace is None
    assert max_error(out, q, cache, batch, layer=1) < TOLERANCE[torch.bfloat16]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 4])
@pytest.mark.parametrize("block_size", [1, 16])
def test_mixed_prefill_and_decode(dtype, group, block_size):
    rng = random.Random(7 + group + block_size)
    q_lens = [5, 1, 33, 1, 17, 2]
    kv_lens = [5, 40, 50, 3, 17, 30]  # full prompts, chunked/continued prefills, decodes
    pool = BlockPool(400, rng)
    batch = private_batch(q_lens, kv_lens, block_size, pool)
    cache = random_cache(1, 400, block_size, 2, HEAD_DIM, dtype)
    out, q, *_ = run_backend(batch, cache, 2 * group)
    assert max_error(out, q, cache, batch) < TOLERANCE[dtype]


@pytest.mark.parametrize("use_fused", [True, False])
def test_lse_matches_reference(use_fused):
    rng = random.Random(3)
    batch = private_batch([1, 6, 1, 700], [20, 9, 1, 720], 4, BlockPool(300, rng))  # 700: 2 chunks
    cache = random_cache(1, 300, 4, 2, HEAD_DIM, torch.float32)
    q = torch.randn(batch.num_tokens, 6, HEAD_DIM)
    plan = plan_paged(batch, 4)
    out, lse = paged_attention(q, cache[0, 0], cache[0, 1], plan, return_lse=True, use_fused=use_fused)
    ref_out, ref_lse = reference_attention(q, cache[0], batch)
    assert (out.double() - ref_out).abs().max() < 1e-4
    assert (lse.double() - ref_lse).abs().max() < 1e-4


@pytest.mark.parametrize("block_size", [1, 16])
def test_backend_writes_kv_at_slots(block_size):
    rng = random.Random(5)
    batch = private_batch([3, 1, 4], [3, 20, 40], block_size, BlockPool(100, rng))
    cache = torch.zeros(2, 2, 100, block_size, 2, HEAD_DIM)
    _, _, k, v, _ = run_backend(batch, cache, 4, layer=1)
    row = 0
    for q_len, kv_len, table in zip(batch.q_lens, batch.kv_lens, batch.block_tables):
        for i, pos in enumerate(range(kv_len - q_len, kv_len)):
            block, offset = table[pos // block_size], pos % block_size
            assert torch.equal(cache[1, 0, block, offset], k[row + i])
            assert torch.equal(cache[1, 1, block, offset], v[row + i])
        row += q_len
    assert cache[0].abs().sum() == 0  # other layers untouched
    assert (cache[1, 0].abs().sum(dim=(-1, -2)) != 0).sum() == batch.num_tokens  # nothing else


def test_slot_mapping_and_write_kv():
    batch = AttentionBatch(q_lens=[2, 1], kv_lens=[5, 3], block_tables=[[7, 2], [4]])
    slots = slot_mapping(batch, block_size=4)
    assert slots.tolist() == [7 * 4 + 3, 2 * 4 + 0, 4 * 4 + 2]
    k_cache = torch.zeros(8, 4, 1, 2)
    v_cache = torch.zeros(8, 4, 1, 2)
    k = torch.arange(6.0).view(3, 1, 2)
    write_kv(k_cache, v_cache, k, -k, slots)
    assert torch.equal(k_cache[2, 0], k[1]) and torch.equal(v_cache[4, 2], -k[2])


def test_check_integrity_rejects_short_block_table():
    with pytest.raises(ValueError):
        AttentionBatch([1], [17], [[0]]).check_integrity(block_size=16)
    with pytest.raises(ValueError):
        AttentionBatch([3], [2], [[0]]).check_integrity(block_size=16)


@pytest.mark.parametrize("enable_cascade", [False, True])
def test_backend_accepts_strided_qkv(enable_cascade):
    """q, k, v as views of one fused qkv projection, as a model produces them."""
    bs, Hq, Hkv = 4, 6, 2
    batch = AttentionBatch([1, 1, 3], [9, 10, 11], [[0, 1, 2], [0, 1, 3], [0, 4, 5]])
    qkv = torch.randn(batch.num_tokens, (Hq + 2 * Hkv) * HEAD_DIM)
    q, k, v = qkv.split([Hq * HEAD_DIM, Hkv * HEAD_DIM, Hkv * HEAD_DIM], dim=-1)
    q, k, v = q.view(-1, Hq, HEAD_DIM), k.view(-1, Hkv, HEAD_DIM), v.view(-1, Hkv, HEAD_DIM)
    outs = []
    for strided in (True, False):
        cache = random_cache(1, 8, bs, Hkv, HEAD_DIM, torch.float32)
        backend = TorchAttentionBackend(cache, enable_cascade=enable_cascade, cascade_limits=CascadeLimits())
        backend.prepare(batch)
        args = (q, k, v) if strided else (q.contiguous(), k.contiguous(), v.contiguous())
        outs.append(backend.forward(*args, 0))
    assert torch.allclose(outs[0], outs[1])
    ref, _ = reference_attention(q, cache[0], batch)
    assert (outs[0].double() - ref).abs().max() < 1e-4


@pytest.mark.parametrize("enable_cascade", [False, True])
def test_steps_of_prefill_then_decode_reuse_one_backend(enable_cascade):
    """An engine-like loop: prefill two forks of a prompt, then decode; every step and layer
    matches the reference (plans and gather buffers are rebuilt per step, reused per layer)."""
    bs, Hq, Hkv, num_layers = 4, 6, 2, 2
    cache = torch.zeros(num_layers, 2, 32, bs, Hkv, HEAD_DIM)
    backend = TorchAttentionBackend(cache, enable_cascade=enable_cascade, cascade_limits=CascadeLimits())
    tables = [[0, 1, 2, 3], [0, 1, 4, 5]]  # an 8-token shared prompt, then private blocks
    steps = [AttentionBatch([8], [8], [tables[0][:2]])]  # prefill the prompt once
    steps += [AttentionBatch([3, 2], [11, 10], tables)]  # each fork prefills its suffix
    steps += [AttentionBatch([1, 1], [11 + n, 10 + n], tables) for n in range(1, 5)]
    gen = torch.Generator().manual_seed(0)
    for step, batch in enumerate(steps):
        backend.prepare(batch)
        for layer in range(num_layers):
            T = batch.num_tokens
            q, k, v = (torch.randn(T, h, HEAD_DIM, generator=gen) for h in (Hq, Hkv, Hkv))
            with torch.inference_mode(step % 2 == 0):  # as the engine runs, and not
                out = backend.forward(q, k, v, layer)
            ref, _ = reference_attention(q, cache[layer], batch)
            assert (out.double() - ref).abs().max() < 1e-4
    assert backend.is_cascade_step == enable_cascade  # the decode steps share 2 blocks
