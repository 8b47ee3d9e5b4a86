"""Parrot's C++ CPU kernels against float64 references (skipped where they cannot build)."""

import math

import pytest
import torch

from parrot_kernels import cpu_ops, merge_state

pytestmark = pytest.mark.skipif(not cpu_ops.load(), reason="Parrot CPU kernels not available here")
ops = torch.ops.parrot
BF16 = torch.bfloat16


def bf16_close(got: torch.Tensor, want: torch.Tensor, steps: float = 2.0) -> None:
    """Within `steps` bf16 rounding steps of the exact value (absolute below 1)."""
    err = (got.double() - want.double()).abs()
    bound = steps * 2.0**-8 * want.double().abs().clamp_min(1.0)
    assert (err <= bound).all(), f"max err {err.max().item():.4g}, worst ratio {(err / bound).max().item():.3g}"


@pytest.fixture(params=["auto", "fma", "dot"])
def linear_tiles(request):
    """Each kind of tile this build has (AVX-512-BF16 builds: FMA on widened weights and
    vdpbf16ps, whichever the CPU's vendor does not pick by default too)."""
    try:
        tiles = ops.linear_tiles(request.param)
    except RuntimeError as e:  # the build has no such tiles (AVX2 only, or no AVX-512-BF16)
        pytest.skip(str(e).splitlines()[0])
    yield tiles
    ops.linear_tiles("auto")


@pytest.mark.parametrize("rows", [1, 2, 5, 6, 7, 8, 9, 13, 97, 200])
@pytest.mark.parametrize("out_features", [16, 40, 960])
@pytest.mark.parametrize("in_features", [64, 65])
def test_linear_matches_float64(rows, out_features, in_features, linear_tiles):
    torch.manual_seed(rows * 1000 + out_features + in_features)
    w = torch.randn(out_features, in_features, dtype=BF16)
    x = torch.randn(rows, in_features, dtype=BF16)
    bias = torch.randn(out_features, dtype=BF16)
    packed = ops.pack_linear_weight(w)
    assert packed.shape[0] == -(-out_features // 16) and packed.shape[2] == 16
    assert packed.shape[1] in (in_features, in_features + in_features % 2)  # AVX-512-BF16 pads K to pairs
    want = x.double() @ w.double().T + bias.double()
    bf16_close(ops.linear_packed(x, packed, out_features, bias), want, 1.0)
    got32 = ops.linear_packed(x.float(), packed, out_features, None)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), x.double() @ w.double().T, rtol=1e-5, atol=1e-4)
    strided = torch.randn(rows, in_features * 2, dtype=BF16)[:, ::2]  # a non-contiguous x is staged
    bf16_close(ops.linear_packed(strided, packed, out_features, None), strided.double() @ w.double().T, 1.0)


@pytest.mark.parametrize("in_features", [64, 65])
def test_packed_rows_read_the_weight_back(in_features):
    w = torch.randn(40, in_features, dtype=BF16)
    ids = torch.tensor([0, 39, 17, 16, 15, 17])
    assert torch.equal(ops.packed_rows(ops.pack_linear_weight(w), ids, in_features), w[ids])
    with pytest.raises(RuntimeError, match="out of range"):
        ops.packed_rows(ops.pack_linear_weight(w), torch.tensor([48]), in_features)


def test_linear_rejects_mismatched_weight():
    packed = ops.pack_linear_weight(torch.randn(32, 64, dtype=BF16))
    with pytest.raises(RuntimeError, match="does not match"):
        ops.linear_packed(torch.randn(2, 48, dtype=BF16), packed, 32, None)


def test_rms_norm_and_fused_residual():
    torch.manual_seed(0)
    x, res, w = torch.randn(9, 576, dtype=BF16), torch.randn(9, 576, dtype=BF16), torch.randn(576, dtype=BF16)

    def ref(v):
        normed = (v.double() * torch.rsqrt(v.double().pow(2).mean(-1, keepdim=True) + 1e-5))
        return normed * w.double()

    bf16_close(ops.rms_norm(x, None, w, 1e-5), ref(x))
    summed = (x.float() + res.float()).to(BF16)
    res_in = res.clone()
    out = ops.rms_norm(x, res_in, w, 1e-5)
    assert torch.equal(res_in, summed)  # the residual now holds x + residual
    bf16_close(out, ref(summed))


def test_silu_mul():
    torch.manual_seed(1)
    gate_up = torch.randn(5, 2 * 1536, dtype=BF16) * 4
    gate, up = gate_up.double().chunk(2, -1)
    bf16_close(ops.silu_mul(gate_up), torch.nn.functional.silu(gate) * up)


def test_rope_write_kv_rotates_and_stores():
    torch.manual_seed(2)
    hq, hkv, d, t = 9, 3, 64, 5
    qkv = torch.randn(t, (hq + 2 * hkv) * d, dtype=BF16)
    positions = torch.tensor([0, 3, 7, 100, 4095])
    inv = 1.0 / (10000.0 ** (torch.arange(0, d, 2, dtype=torch.float64) / d))
    freqs = torch.outer(torch.arange(4096, dtype=torch.float64), inv)
    cos_sin = torch.cat((freqs.cos(), freqs.sin()), -1).float()
    k_cache, v_cache = torch.zeros(4, 16, hkv, d, dtype=BF16), torch.zeros(4, 16, hkv, d, dtype=BF16)
    slots = torch.tensor([0, 17, 18, 40, 63])
    q = ops.rope_write_kv(qkv, positions, cos_sin, k_cache, v_cache, slots, hq)

    def rotate(x):  # [T, H, D] float64
        c, s = freqs[positions].cos()[:, None], freqs[positions].sin()[:, None]
        x1, x2 = x.chunk(2, -1)
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), -1)

    qf, kf, vf = qkv.double().split([hq * d, hkv * d, hkv * d], -1)
    bf16_close(q, rotate(qf.view(t, hq, d)))
    bf16_close(k_cache.view(-1, hkv, d)[slots], rotate(kf.view(t, hkv, d)))
    assert torch.equal(v_cache.view(-1, hkv, d)[slots], qkv[:, (hq + hkv) * d:].view(t, hkv, d))
    untouched = torch.ones(64, dtype=torch.bool)
    untouched[slots] = False
    assert (k_cache.view(-1, hkv, d)[untouched] == 0).all()


def reference_decode(q, k_cache, v_cache, tables, kv_lens):
    """float64 attention of one query per sequence over its paged KV -> out, lse."""
    outs, lses = [], []
    group = q.shape[1] // k_cache.shape[2]
    for b, kv_len in enumerate(kv_lens.tolist()):
        slots = [tables[b, p // k_cache.shape[1]].item() * k_cache.shape[1] + p % k_cache.shape[1] for p in range(kv_len)]
        k = k_cache.flatten(0, 1)[slots].double().repeat_interleave(group, 1)  # [L, Hq, D]
        v = v_cache.flatten(0, 1)[slots].double().repeat_interleave(group, 1)
        scores = torch.einsum("hd,lhd->hl", q[b].double(), k) / math.sqrt(q.shape[-1])
        outs.append(torch.einsum("hl,lhd->hd", scores.softmax(-1), v))
        lses.append(scores.logsumexp(-1))
    return torch.stack(outs), torch.stack(lses)


@pytest.mark.parametrize("kv_lens", [[1], [5, 16, 17], [700], [3000, 1], [33] * 12])
# row groups of G = 3, 1, 8, 8 (16 split), 1 (11 is prime), 4, 6, 2: every score width
@pytest.mark.parametrize("heads", [(9, 3), (4, 4), (8, 1), (16, 1), (22, 2), (8, 2), (12, 2), (8, 4)])
def test_paged_decode_attention(kv_lens, heads):
    torch.manual_seed(len(kv_lens) * 7 + kv_lens[0])
    hq, hkv, d, bs = heads[0], heads[1], 64, 16
    num_blocks = sum(-(-n // bs) for n in kv_lens) + 3
    k_cache = torch.randn(num_blocks, bs, hkv, d, dtype=BF16)
    v_cache = torch.randn(num_blocks, bs, hkv, d, dtype=BF16)
    perm = torch.randperm(num_blocks).tolist()  # scattered physical blocks
    max_blocks = max(-(-n // bs) for n in kv_lens)
    tables = torch.zeros(len(kv_lens), max_blocks, dtype=torch.int32)
    for b, n in enumerate(kv_lens):
        for j in range(-(-n // bs)):
            tables[b, j] = perm.pop()
    q = torch.randn(len(kv_lens), hq, d, dtype=BF16)
    lens = torch.tensor(kv_lens, dtype=torch.int32)
    out, lse = ops.paged_decode_attention(q, k_cache, v_cache, tables, lens, 1 / math.sqrt(d))
    want_out, want_lse = reference_decode(q, k_cache, v_cache, tables, lens)
    assert out.dtype == BF16 and lse.dtype == torch.float32
    bf16_close(out, want_out)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-4)


def reference_run(q, k_cache, v_cache, blocks, kv_len, causal):
    """float64 attention of M queries over the first kv_len keys of `blocks`."""
    bs, group = k_cache.shape[1], q.shape[1] // k_cache.shape[2]
    slots = [blocks[p // bs].item() * bs + p % bs for p in range(kv_len)]
    k = k_cache.flatten(0, 1)[slots].double().repeat_interleave(group, 1)  # [L, Hq, D]
    v = v_cache.flatten(0, 1)[slots].double().repeat_interleave(group, 1)
    scores = torch.einsum("mhd,lhd->hml", q.double(), k) / math.sqrt(q.shape[-1])
    if causal:
        pos = torch.arange(kv_len - q.shape[0], kv_len)
        scores.masked_fill_(torch.arange(kv_len)[None, :] > pos[:, None], float("-inf"))
    out = torch.einsum("hml,lhd->mhd", scores.softmax(-1), v)
    return out, scores.logsumexp(-1).T


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("q_len,kv_len", [(1, 1), (5, 5), (17, 40), (33, 33), (100, 700), (3, 1000)])
@pytest.mark.parametrize("heads", [(9, 3), (4, 4), (16, 2)])
@pytest.mark.parametrize("block_size", [1, 16])
def test_paged_prefill_attention(causal, q_len, kv_len, heads, block_size, linear_tiles):
    """On either tile kind: the "dot" one runs the GEMMs on bf16 dot products."""
    torch.manual_seed(q_len * 31 + kv_len + block_size)
    hq, hkv, d = heads[0], heads[1], 64
    num_blocks = -(-kv_len // block_size)
    k_cache = torch.randn(num_blocks + 5, block_size, hkv, d, dtype=BF16)
    v_cache = torch.randn(num_blocks + 5, block_size, hkv, d, dtype=BF16)
    blocks = torch.randperm(num_blocks + 5)[:num_blocks]  # scattered physical blocks
    q = torch.randn(q_len, hq, d, dtype=BF16) * 2
    out, lse = ops.paged_prefill_attention(q, k_cache, v_cache, blocks, kv_len, causal, 1 / math.sqrt(d))
    want_out, want_lse = reference_run(q, k_cache, v_cache, blocks, kv_len, causal)
    bf16_close(out, want_out)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-4)


def test_paged_prefill_attention_refuses_short_blocks():
    cache = torch.zeros(4, 16, 1, 64, dtype=BF16)
    with pytest.raises(RuntimeError, match="does not fit"):
        ops.paged_prefill_attention(torch.zeros(2, 1, 64, dtype=BF16), cache, cache, torch.tensor([0, 1]), 40, True, 0.1)


def test_silu_of_large_negative_gates_is_zero_not_the_gate():
    gate_up = torch.tensor([[-100.0, -89.5, 50.0, 0.0] * 2 + [2.0] * 8], dtype=BF16)
    out = ops.silu_mul(gate_up).float()[0]
    want = torch.nn.functional.silu(gate_up[0, :8].double()) * 2.0
    assert torch.allclose(out.double(), want, atol=1e-3), out


def test_nan_scores_propagate(linear_tiles):
    k = torch.randn(2, 16, 1, 64, dtype=BF16)
    k[0, 3] = float("nan")
    q = torch.randn(1, 1, 64, dtype=BF16)
    out, _ = ops.paged_decode_attention(q, k, k.clone(), torch.tensor([[0]], dtype=torch.int32),
                                        torch.tensor([16], dtype=torch.int32), 0.125)
    assert torch.isnan(out).all()
    out, _ = ops.paged_prefill_attention(q, k, k.clone(), torch.tensor([0]), 16, False, 0.125)
    assert torch.isnan(out).all()


def test_kernels_refuse_out_of_range_indices():
    cache = torch.zeros(2, 16, 1, 64, dtype=BF16)
    qkv = torch.zeros(1, 3 * 64, dtype=BF16)
    cos_sin = torch.zeros(8, 64)
    with pytest.raises(RuntimeError, match="slot out of range"):
        ops.rope_write_kv(qkv, torch.tensor([0]), cos_sin, cache, cache.clone(), torch.tensor([32]), 1)
    with pytest.raises(RuntimeError, match="position out of range"):
        ops.rope_write_kv(qkv, torch.tensor([8]), cos_sin, cache, cache.clone(), torch.tensor([0]), 1)
    q = torch.zeros(1, 1, 64, dtype=BF16)
    with pytest.raises(RuntimeError, match="block id out of range"):
        ops.paged_decode_attention(q, cache, cache, torch.tensor([[5]], dtype=torch.int32),
                                   torch.tensor([3], dtype=torch.int32), 0.125)
    with pytest.raises(RuntimeError, match="exceeds its block table"):
        ops.paged_decode_attention(q, cache, cache, torch.tensor([[0]], dtype=torch.int32),
                                   torch.tensor([17], dtype=torch.int32), 0.125)
    with pytest.raises(RuntimeError, match="block id out of range"):
        ops.paged_prefill_attention(q, cache, cache, torch.tensor([7]), 3, False, 0.125)


def test_unsupported_shapes_keep_the_eager_path():
    assert cpu_ops.supports_shape(576, 1536, 9, 3, 64)
    assert not cpu_ops.supports_shape(576, 1536, 9, 3, 72)  # head_dim % 16
    assert not cpu_ops.supports_shape(576, 1536, 32, 1, 64)  # 32 query heads per kv head


@pytest.mark.parametrize("dtype", [BF16, torch.float32], ids=["bf16", "fp32"])
def test_merge_attention_state_matches_the_torch_merge(dtype):
    torch.manual_seed(5)
    out, o_b = torch.randn(6, 3, 64).to(dtype), torch.randn(6, 3, 64).to(dtype)
    lse, lse_b = torch.randn(6, 3) * 4, torch.randn(6, 3) * 4
    lse[0, 0], lse_b[1, 1] = float("-inf"), float("-inf")  # an empty part weighs nothing
    lse[2, 2] = lse_b[2, 2] = float("-inf")  # two empty parts stay empty, not NaN
    want_out, want_lse = merge_state(out.float(), lse, o_b.float(), lse_b)
    want_out[2, 2] = out[2, 2].float()
    ops.merge_attention_state_(out, lse, o_b, lse_b)
    bf16_close(out, want_out.to(dtype)) if dtype == BF16 else torch.testing.assert_close(out, want_out)
    torch.testing.assert_close(lse, want_lse)
    assert not torch.isnan(out).any()


def test_merge_attention_state_propagates_nan():
    out, lse = torch.zeros(1, 1, 64), torch.zeros(1, 1)
    ops.merge_attention_state_(out, lse, torch.ones(1, 1, 64), torch.tensor([[float("nan")]]))
    assert torch.isnan(out).all() and torch.isnan(lse).all()


def test_prefill_kernel_key_splits_keep_nan_and_match_reference(linear_tiles):
    """Few queries over many keys split their keys across threads (merged by log-sum-exp)."""
    torch.manual_seed(9)
    k = torch.randn(80, 16, 3, 64, dtype=BF16)
    v = torch.randn(80, 16, 3, 64, dtype=BF16)
    q = torch.randn(2, 9, 64, dtype=BF16)
    blocks = torch.randperm(80)[:70]
    out, lse = ops.paged_prefill_attention(q, k, v, blocks, 1100, False, 0.125)
    want_out, want_lse = reference_run(q, k, v, blocks, 1100, False)  # scale 1 / sqrt(64)
    bf16_close(out, want_out)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-4)
    k[blocks[60], 5] = float("nan")  # a key in the last split only
    out, _ = ops.paged_prefill_attention(q, k, v, blocks, 1100, False, 0.125)
    assert torch.isnan(out).all()


@pytest.mark.parametrize("head_dim", [48, 128])
def test_prefill_kernel_bf16_head_dims(head_dim, linear_tiles):
    """128: eight blocks of 16 dims in the dot path's P @ V; 48 (not a multiple of 32): the
    FMA path on every tile kind."""
    torch.manual_seed(head_dim)
    k = torch.randn(40, 16, 2, head_dim, dtype=BF16)
    v = torch.randn(40, 16, 2, head_dim, dtype=BF16)
    q, blocks = torch.randn(37, 8, head_dim, dtype=BF16), torch.randperm(40)[:38]
    out, lse = ops.paged_prefill_attention(q, k, v, blocks, 601, True, 1 / math.sqrt(head_dim))
    want_out, want_lse = reference_run(q, k, v, blocks, 601, True)
    bf16_close(out, want_out)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-4)


def test_prefill_kernel_wide_heads_fp32_queries_and_no_queries():
    torch.manual_seed(11)
    k = torch.randn(70, 16, 1, 128, dtype=BF16)  # head_dim 128, 16 query heads per kv head
    v = torch.randn(70, 16, 1, 128, dtype=BF16)
    q, blocks = torch.randn(3, 16, 128), torch.randperm(70)[:64]
    out, lse = ops.paged_prefill_attention(q, k, v, blocks, 1000, True, 1 / math.sqrt(128))
    want_out, want_lse = reference_run(q, k, v, blocks, 1000, True)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), want_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(lse.double(), want_lse, rtol=1e-5, atol=1e-4)
    out, lse = ops.paged_prefill_attention(q[:0], k, v, blocks, 1000, True, 0.1)
    assert out.shape == (0, 16, 128) and lse.shape == (0, 16)


def test_linear_tiles_refuse_an_unknown_mode():
    with pytest.raises(RuntimeError, match="linear_tiles"):
        ops.linear_tiles("amx")
    assert ops.linear_tiles() in ("avx2", "avx512-fma", "avx512-dot")


@pytest.mark.skipif("avx512_bf16" in cpu_ops.cpu_flags() or "avx512f" not in cpu_ops.cpu_flags(),
                    reason="for AVX-512 CPUs without BF16")
def test_avx512_without_bf16_runs_the_fma_tiles_and_refuses_dot_products():
    assert ops.linear_tiles() == "avx512-fma"
    with pytest.raises(RuntimeError, match="AVX-512-BF16"):
        ops.linear_tiles("dot")
    assert ops.linear_tiles() == "avx512-fma"
