"""Cascade attention: group detection, levels, merging, and equality with plain attention."""

from __future__ import annotations

import random

import pytest
import torch

from kernels_reference import BlockPool, forked_batch, random_cache, reference_attention
from parrot_kernels import AttentionBatch, CascadeLimits, TorchAttentionBackend, cpu_ops, find_groups, merge_state, plan_cascade

TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 1e-2}


def scaled_error(out, ref) -> float:
    """Largest |out - ref| / max(1, |ref|). In bf16 each level's output is rounded once
    before the merge (as FlashInfer's cascade does), so an output may sit one bf16 step
    (2^-6 = 0.0156 between 2 and 4) from the reference: below 1 the bound is absolute,
    above it relative, so values >= 2 are held to bf16's own precision."""
    return ((out.double() - ref).abs() / ref.abs().clamp_min(1.0)).max().item()
HEAD_DIM = 32


def run_both(batch, cache, num_q_heads, seed=1, use_fused=True, min_saved=0, use_kernels=False):
    """Cascade and plain backends on the same random q/k/v. Returns (cascade, plain, q)."""
    gen = torch.Generator().manual_seed(seed)
    num_kv_heads, dtype = cache.shape[4], cache.dtype
    T = batch.num_tokens
    q, k, v = (torch.randn(T, h, HEAD_DIM, generator=gen).to(dtype) for h in (num_q_heads, num_kv_heads, num_kv_heads))
    outs = []
    for enable in (True, False):
        limits = CascadeLimits(min_saved_tokens=min_saved)
        backend = TorchAttentionBackend(cache, enable_cascade=enable, cascade_limits=limits, use_fused=use_fused,
                                        use_kernels=use_kernels)
        backend.prepare(batch)
        groups = plan_cascade(batch, cache.shape[3], limits).groups
        assert backend.is_cascade_step == (enable and bool(groups))
        outs.append(backend.forward(q, k, v, 0))
    return outs[0], outs[1], q


def check(batch, cache, num_q_heads, dtype, use_fused=True, min_saved=0, use_kernels=False):
    cascade, plain, q = run_both(batch, cache, num_q_heads, use_fused=use_fused, min_saved=min_saved,
                                 use_kernels=use_kernels)
    ref, _ = reference_attention(q, cache[0], batch)
    assert not torch.isnan(cascade).any()
    assert scaled_error(cascade, ref) < TOLERANCE[dtype]
    # Each is within TOLERANCE of the reference, so within twice that of each other
    # (in bf16 the two may round a value to neighbouring representable numbers).
    assert scaled_error(cascade, plain.double()) < 2 * TOLERANCE[dtype]


def two_level_tree(bs):
    # system prompt (2 blocks) -> 3 decodes + 1 fork prefilling 5 tokens; + an unrelated pair
    return [
        (2 * bs, [(7, 1), (bs + 3, 1), (1, 1), (9, 5)]),
        (bs, [(2, 1), (bs, 1)]),
    ]


def three_level_tree(bs):
    # system prompt -> two documents -> requests; one request right on the document edge
    return [
        (bs, [
            (2 * bs, [(5, 1), (1, 1), (bs + 2, 3)]),
            (bs, [(4, 1), (3, 2)]),
            (6, 1),
        ]),
    ]


@pytest.mark.parametrize("use_fused", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("group", [1, 3, 4, 8])
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("tree", [two_level_tree, three_level_tree])
def test_cascade_matches_reference_and_plain(dtype, group, block_size, tree, use_fused):
    rng = random.Random(group + block_size)
    batch = forked_batch(tree(block_size), block_size, BlockPool(300, rng))
    plan_cascade(batch, block_size).check_integrity(batch, block_size)
    cache = random_cache(1, 300, block_size, 2, HEAD_DIM, dtype, seed=group)
    check(batch, cache, 2 * group, dtype, use_fused)


@pytest.mark.skipif(not cpu_ops.load(), reason="Parrot CPU kernels not available here")
@pytest.mark.parametrize("group", [1, 3, 8])
@pytest.mark.parametrize("block_size", [1, 16])
@pytest.mark.parametrize("tree", [two_level_tree, three_level_tree])
def test_cascade_over_in_place_decode_kernel(group, block_size, tree):
    """The private level's decodes read the cache in place (Parrot's CPU kernel, bf16)."""
    rng = random.Random(group + block_size)
    batch = forked_batch(tree(block_size), block_size, BlockPool(300, rng))
    cache = random_cache(1, 300, block_size, 2, HEAD_DIM, torch.bfloat16, seed=group)
    check(batch, cache, 2 * group, torch.bfloat16, use_kernels=True)


def test_levels_of_three_level_tree():
    bs = 4
    batch = forked_batch(three_level_tree(bs), bs, BlockPool(100, random.Random(0)))
    plan = plan_cascade(batch, bs)
    plan.check_integrity(batch, bs)
    shape = sorted((g.level, sorted(g.seq_ids), g.start_block, g.blocks.numel()) for g in plan.groups)
    assert shape == [(0, [0, 1, 2, 3, 4, 5], 0, 1), (1, [0, 1, 2], 1, 2), (1, [3, 4], 1, 1)]
    assert plan.num_levels == 3
    assert plan.shared_depths == [3, 3, 3, 2, 2, 1]
    assert all(L >= q for q, L in zip(plan.private_batch.q_lens, plan.private_batch.kv_lens))


def test_prefix_ending_mid_block_stays_private():
    # A has 40 tokens; B shares A's first two blocks but its new token (position 19) lies
    # in the second, partially filled one: only block 0 may be shared by both.
    bs = 16
    batch = AttentionBatch(q_lens=[1, 1, 4], kv_lens=[40, 20, 20], block_tables=[[3, 5, 8], [3, 5], [3, 9]])
    plan = plan_cascade(batch, bs)
    plan.check_integrity(batch, bs)
    assert [(sorted(g.seq_ids), g.blocks.tolist()) for g in plan.groups] == [([0, 1, 2], [3])]
    assert plan.private_batch.block_tables == [[5, 8], [5], [9]]
    for dtype in (torch.float32, torch.bfloat16):
        check(batch, random_cache(1, 10, bs, 2, HEAD_DIM, dtype), 6, dtype)


def test_fork_prefill_is_causal_within_private_part():
    # Two forks of a 32-token prefix each prefill 20 tokens spanning two new blocks.
    bs = 16
    batch = forked_batch([(2 * bs, [(20, 20), (20, 20), (3, 1)])], bs, BlockPool(40, random.Random(1)))
    plan = plan_cascade(batch, bs)
    assert [g.blocks.numel() for g in plan.groups] == [2]
    check(batch, random_cache(1, 40, bs, 1, HEAD_DIM, torch.float32), 4, torch.float32)


def test_groups_need_two_sequences_and_threshold():
    assert find_groups([[1, 2], [1, 3], [4]]) == [(0, [0, 1], 0, 1)]
    assert find_groups([[1, 2], [5, 6]]) == []
    batch = AttentionBatch([1, 1], [9, 9], [[0, 1, 2], [0, 1, 3]])
    assert plan_cascade(batch, 4, CascadeLimits(min_blocks=3)).groups == []
    assert len(plan_cascade(batch, 4, CascadeLimits(min_blocks=2)).groups) == 1
    assert plan_cascade(batch, 4, CascadeLimits(min_seqs=3)).groups == []


def test_groups_not_worth_a_call_leave_their_blocks_to_subgroups():
    # 4 sequences share block 1; two of them also share blocks 2, 3, 4
    prefixes = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 7], [1, 8]]
    assert find_groups(prefixes) == [(0, [0, 1, 2, 3], 0, 1), (1, [0, 1], 1, 4)]
    # saving 3 reads of block 1 is not worth it, 1 read of blocks 1-4 is: the pair's group
    # starts at block 0 and the other two keep block 1 private
    assert find_groups(prefixes, limits=CascadeLimits(min_saved_tokens=4)) == [(0, [0, 1], 0, 4)]
    assert find_groups(prefixes, limits=CascadeLimits(min_saved_tokens=5)) == []
    batch = AttentionBatch([1] * 4, [20, 20, 5, 5], [p + [9 + i] for i, p in enumerate(prefixes)])
    plan = plan_cascade(batch, 4, CascadeLimits(min_saved_tokens=16))
    plan.check_integrity(batch, 4)
    assert [(g.level, g.seq_ids, g.start_block, g.blocks.tolist()) for g in plan.groups] == [(0, [0, 1], 0, [1, 2, 3, 4])]
    assert plan.shared_depths == [4, 4, 0, 0]


def test_merge_state_with_empty_parts_has_no_nan():
    o = torch.randn(3, 2, 4)
    lse = torch.randn(3, 2)
    empty_o, empty_lse = torch.full_like(o, float("nan")), torch.full_like(lse, float("-inf"))
    merged, merged_lse = merge_state(o, lse, empty_o.nan_to_num(), empty_lse)
    assert torch.allclose(merged, o) and torch.equal(merged_lse, lse)
    both, both_lse = merge_state(torch.zeros_like(o), empty_lse, torch.zeros_like(o), empty_lse)
    assert not torch.isnan(both).any() and torch.isinf(both_lse).all()


def test_merge_state_equals_joint_softmax():
    scores, values = torch.randn(5, 10, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    joint = torch.softmax(scores, -1) @ values
    parts = [(torch.softmax(s, -1) @ v, torch.logsumexp(s, -1)) for s, v in
             ((scores[:, :4], values[:4]), (scores[:, 4:], values[4:]))]
    merged, lse = merge_state(parts[0][0][:, None], parts[0][1][:, None], parts[1][0][:, None], parts[1][1][:, None])
    assert torch.allclose(merged[:, 0], joint) and torch.allclose(lse[:, 0], torch.logsumexp(scores, -1))


@pytest.mark.parametrize("seed", range(20))
def test_random_forests_plan_integrity_and_match(seed):
    """Random prefix forests (random depth, fan-out, q_lens): the plan tiles every block
    table, and cascade equals the reference."""
    rng = random.Random(seed)
    bs = rng.choice([1, 2, 4, 16])

    def node(depth):
        if depth == 3 or rng.random() < 0.3:
            tokens = rng.randint(1, 2 * bs)
            return (tokens, min(tokens, rng.choice([1, 1, 1, 2, 5])))
        return (bs * rng.randint(1, 3), [node(depth + 1) for _ in range(rng.randint(1, 3))])

    batch = forked_batch([node(0) for _ in range(rng.randint(1, 3))], bs, BlockPool(2000, rng))
    plan_cascade(batch, bs).check_integrity(batch, bs)
    check(batch, random_cache(1, 2000, bs, 2, HEAD_DIM, torch.float32, seed), 4, torch.float32)
    # the same sequences in a shuffled batch order: groups are no longer runs of rows
    order = list(range(batch.num_seqs))
    rng.shuffle(order)
    shuffled = AttentionBatch([batch.q_lens[i] for i in order], [batch.kv_lens[i] for i in order],
                              [batch.block_tables[i] for i in order])
    plan_cascade(shuffled, bs).check_integrity(shuffled, bs)
    check(shuffled, random_cache(1, 2000, bs, 2, HEAD_DIM, torch.float32, seed), 4, torch.float32)
    # with a threshold some groups are pruned and their blocks move to subgroups or stay private
    min_saved = rng.choice([2, 8, 32]) * bs
    pruned = plan_cascade(batch, bs, CascadeLimits(min_saved_tokens=min_saved))
    pruned.check_integrity(batch, bs)
    assert all((len(g.seq_ids) - 1) * g.blocks.numel() * bs >= min_saved for g in pruned.groups)
    check(batch, random_cache(1, 2000, bs, 2, HEAD_DIM, torch.float32, seed), 4, torch.float32, min_saved=min_saved)


@pytest.mark.parametrize("enable_cascade,use_kernels,expect", [
    (True, True, True),  # read in place, one group over one run of rows: the runner takes it
    (False, True, True),  # read in place, no group: the whole-step runner's case
    (False, False, False),  # gathered decode: no kernels, no runner
])
def test_an_in_place_step_offers_the_runner_its_inputs_and_groups(enable_cascade, use_kernels, expect):
    bs = 4
    forks = [(2 * bs, [(3, 1), (5, 2), (1, 1)])]  # two decodes and a 2-token chunk forked from one prompt
    batch = forked_batch(forks, bs, BlockPool(40, random.Random(0)))
    cache = random_cache(2, 40, bs, 2, HEAD_DIM, torch.bfloat16)
    backend = TorchAttentionBackend(cache, enable_cascade=enable_cascade, cascade_limits=CascadeLimits(),
                                    use_kernels=use_kernels)
    backend.prepare(batch)
    assert backend.is_cascade_step == enable_cascade
    step = backend.in_place_step()
    assert (step is not None) == expect
    if step is not None:
        assert step.kv_cache is cache and step.slots.tolist() == backend.kv_target(0)[2].tolist()
        private = backend._cascade.private_batch if enable_cascade else batch  # the private level's keys
        decodes = [i for i, q_len in enumerate(batch.q_lens) if q_len == 1]
        starts = batch.query_starts()
        assert step.decode_rows.tolist() == [starts[i] for i in decodes]
        assert step.kv_lens.tolist() == [private.kv_lens[i] for i in decodes]
        groups = backend._cascade.groups if enable_cascade else []
        assert step.group_starts == [g.row_slice.start for g in groups] == ([0] if enable_cascade else [])
        assert step.group_lens == [g.rows.numel() for g in groups]
        assert [b.tolist() for b in step.group_blocks] == [g.blocks.tolist() for g in groups]
        chunk = batch.q_lens.index(2)
        assert (step.prefill_starts, step.prefill_lens, step.prefill_kv_lens) == (
            [starts[chunk]], [2], [private.kv_lens[chunk]])
