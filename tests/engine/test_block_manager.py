"""Block manager and context tree: randomized operation sequences keep every invariant."""
from __future__ import annotations

import random

import pytest

from parrot.engine.block_manager import BlockManager
from parrot.engine.context import ContextTree


def _compute(tree: ContextTree, ctx, n: int) -> None:
    """What a step does to the bookkeeping: allocate slots (copy-on-write), then commit."""
    tree.prepare_slots(ctx, n)
    tree.commit(ctx, n)


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_keep_integrity(seed):
    rng = random.Random(seed)
    tree = ContextTree(BlockManager(num_blocks=64, block_size=rng.choice([1, 4, 16])))
    vocab = [rng.randrange(5) for _ in range(4)]  # tiny vocab: many prefix-cache hits
    for _ in range(400):
        live = list(tree.live.values())
        op = rng.random()
        if op < 0.25 or not live:
            ctx = tree.new()
            ctx.token_ids += [rng.choice(vocab) for _ in range(rng.randrange(1, 40))]
            tree.match_prefix(ctx, ctx.num_tokens - 1)
        elif op < 0.45:
            child = tree.fork(rng.choice(live))
            child.token_ids += [rng.choice(vocab) for _ in range(rng.randrange(0, 10))]
        elif op < 0.75:
            ctx = rng.choice(live)
            if ctx.num_pending == 0:
                ctx.token_ids.append(rng.choice(vocab))
            n = rng.randrange(1, ctx.num_pending + 1)
            if tree.blocks.can_allocate(tree.num_blocks_needed(ctx, n)):
                _compute(tree, ctx, n)
        elif op < 0.85:
            tree.release(rng.choice(live))  # preemption
        else:
            tree.free(rng.choice(live))
        tree.check_integrity()
    for ctx in list(tree.live.values()):
        tree.free(ctx)
    tree.blocks.evict_all()
    tree.check_integrity()
    assert tree.blocks.num_free_blocks == tree.blocks.num_blocks


def test_prefix_cache_hit_reuses_blocks_and_verifies_tokens():
    tree = ContextTree(BlockManager(num_blocks=16, block_size=4))
    a = tree.new()
    a.token_ids += list(range(10))
    _compute(tree, a, 10)
    b = tree.new()
    b.token_ids += list(range(8)) + [99, 98]
    assert tree.match_prefix(b, b.num_tokens - 1) == 8
    assert b.block_table[:2] == a.block_table[:2]
    tree.free(a)
    c = tree.new()
    c.token_ids += list(range(10))
    assert tree.match_prefix(c, 9) == 8  # freed blocks stay cached
    tree.check_integrity()


def test_fork_copies_the_shared_partial_block_on_write():
    tree = ContextTree(BlockManager(num_blocks=16, block_size=4))
    parent = tree.new()
    parent.token_ids += list(range(6))
    _compute(tree, parent, 6)
    child = tree.fork(parent)
    child.token_ids.append(7)
    copies = tree.prepare_slots(child, 1)
    assert copies == [(parent.block_table[1], child.block_table[1])]
    assert child.block_table[0] == parent.block_table[0]  # the full block stays shared
    tree.commit(child, 1)
    tree.check_integrity()


def test_cached_blocks_are_evicted_least_recently_used_first():
    blocks = BlockManager(num_blocks=3, block_size=1)
    tree = ContextTree(blocks)
    olds = []
    for t in range(3):
        ctx = tree.new()
        ctx.token_ids.append(t)
        _compute(tree, ctx, 1)
        olds.append(ctx.block_table[0])
        tree.free(ctx)
    assert blocks.num_cached_blocks == 3
    assert blocks.allocate() == olds[0]
    assert blocks.num_evictions == 1
