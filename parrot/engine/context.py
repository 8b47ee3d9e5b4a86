"""Contexts: token sequences whose KV lives in shared, ref-counted blocks.

A context is a node of the fork tree. `ContextTree` owns every live context and
applies the block mechanics: prefix-cache matching, slot allocation with
copy-on-write of a shared partial block, registering full blocks, release.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from parrot.engine.block_manager import NO_HASH, BlockManager, chain_hash

_ids = itertools.count(1)


@dataclass(eq=False)
class Context:
    token_ids: list[int] = field(default_factory=list)
    block_table: list[int] = field(default_factory=list)
    block_hashes: list[int] = field(default_factory=list)  # one per full registered block
    num_computed: int = 0  # tokens whose KV is in the cache
    parent_id: int | None = None
    context_id: int = field(default_factory=lambda: next(_ids))
    is_freed: bool = False
    free_pending: bool = False  # free() came while a step was computing it
    is_pinned: bool = False  # never released to make room while idle (see Engine.pin)
    last_used: float = field(default_factory=time.monotonic)

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def num_pending(self) -> int:
        return len(self.token_ids) - self.num_computed


class ContextTree:
    def __init__(self, blocks: BlockManager):
        self.blocks = blocks
        self.bs = blocks.block_size
        self.live: dict[int, Context] = {}

    def new(self) -> Context:
        ctx = Context()
        self.live[ctx.context_id] = ctx
        return ctx

    def fork(self, parent: Context) -> Context:
        """A child sharing every block of `parent` (its computed KV)."""
        assert not parent.is_freed, "fork of a freed context"
        num_blocks = -(-parent.num_computed // self.bs)  # not blocks of an in-flight step
        child = Context(token_ids=list(parent.token_ids),
                        block_table=parent.block_table[:num_blocks],
                        block_hashes=list(parent.block_hashes),
                        num_computed=parent.num_computed, parent_id=parent.context_id)
        for b in child.block_table:
            self.blocks.incref(b)
        self.live[child.context_id] = child
        return child

    def release(self, ctx: Context) -> None:
        """Return every block; the context keeps its tokens (a preempted one recomputes)."""
        for b in ctx.block_table:
            self.blocks.decref(b)
        ctx.block_table, ctx.block_hashes, ctx.num_computed = [], [], 0

    def free(self, ctx: Context) -> None:
        self.release(ctx)
        ctx.is_freed = True
        self.live.pop(ctx.context_id, None)

    def match_prefix(self, ctx: Context, max_tokens: int) -> int:
        """Adopt cached full blocks for pending tokens, up to `max_tokens` computed. Returns tokens hit."""
        return self.adopt(ctx, self.block_keys(ctx, max_tokens))

    def block_keys(self, ctx: Context, max_tokens: int) -> list[tuple[int, tuple[int, ...]]]:
        """(chained hash, tokens) of ctx's full blocks after its registered ones, up to
        `max_tokens`: the prefix-cache keys `adopt` looks up and `commit` registers."""
        keys, prev = [], ctx.block_hashes[-1] if ctx.block_hashes else NO_HASH
        for start in range(len(ctx.block_hashes) * self.bs, max_tokens - self.bs + 1, self.bs):
            tokens = tuple(ctx.token_ids[start:start + self.bs])
            prev = chain_hash(prev, tokens)
            keys.append((prev, tokens))
        return keys

    def can_match(self, ctx: Context) -> bool:
        """ctx ends at a registered block boundary, where cached blocks can follow."""
        return ctx.num_computed == len(ctx.block_table) * self.bs == len(ctx.block_hashes) * self.bs

    def num_cached(self, ctx: Context, keys: list[tuple[int, tuple[int, ...]]]) -> int:
        """Tokens `adopt(ctx, keys)` would find in the prefix cache now."""
        return len(self._cached(ctx, keys)) * self.bs

    def adopt(self, ctx: Context, keys: list[tuple[int, tuple[int, ...]]]) -> int:
        """Adopt the cached blocks of the leading `keys` (`block_keys(ctx, ...)`); tokens hit."""
        cached = self._cached(ctx, keys)
        for block_id, block_hash in cached:
            self.blocks.incref(block_id)
            ctx.block_table.append(block_id)
            ctx.block_hashes.append(block_hash)
            ctx.num_computed += self.bs
        return len(cached) * self.bs

    def _cached(self, ctx: Context, keys: list[tuple[int, tuple[int, ...]]]) -> list[tuple[int, int]]:
        """(block id, hash) of the leading `keys` the prefix cache holds, if ctx can match."""
        if not self.can_match(ctx):
            return []
        found = []
        for block_hash, tokens in keys:
            block_id = self.blocks.lookup(block_hash, tokens)
            if block_id is None:
                break
            found.append((block_id, block_hash))
        return found

    def uncompute_last(self, ctx: Context) -> None:
        """Mark the last token uncomputed, so generating from a full context has logits."""
        assert ctx.num_pending == 0 and ctx.num_computed > 0
        ctx.num_computed -= 1
        del ctx.block_hashes[ctx.num_computed // self.bs:]

    def num_blocks_needed(self, ctx: Context, num_new: int) -> int:
        """Blocks to allocate to compute the next `num_new` tokens (copy-on-write included)."""
        end = ctx.num_computed + num_new
        need = max(0, -(-end // self.bs) - len(ctx.block_table))
        return need + int(self._needs_copy(ctx))

    def prepare_slots(self, ctx: Context, num_new: int) -> list[tuple[int, int]]:
        """Make blocks writable for the next `num_new` tokens; returns (src, dst) block copies."""
        copies = []
        if self._needs_copy(ctx):
            i = ctx.num_computed // self.bs
            src, dst = ctx.block_table[i], self.blocks.allocate()
            self.blocks.decref(src)
            ctx.block_table[i] = dst
            copies.append((src, dst))
        end = ctx.num_computed + num_new
        while len(ctx.block_table) * self.bs < end:
            ctx.block_table.append(self.blocks.allocate())
        return copies

    def commit(self, ctx: Context, num_new: int) -> None:
        """The step computed `num_new` more tokens: advance and register newly full blocks."""
        ctx.num_computed += num_new
        ctx.last_used = time.monotonic()
        while len(ctx.block_hashes) < ctx.num_computed // self.bs:
            i = len(ctx.block_hashes)
            tokens = tuple(ctx.token_ids[i * self.bs:(i + 1) * self.bs])
            prev = ctx.block_hashes[-1] if ctx.block_hashes else NO_HASH
            h = chain_hash(prev, tokens)
            self.blocks.register(ctx.block_table[i], h, tokens)
            ctx.block_hashes.append(h)

    def _needs_copy(self, ctx: Context) -> bool:
        """The next write lands in a block that another context also holds."""
        i = ctx.num_computed // self.bs
        return i < len(ctx.block_table) and self.blocks.blocks[ctx.block_table[i]].ref_count > 1

    def check_integrity(self) -> None:
        refs: dict[int, int] = {}
        for ctx in self.live.values():
            assert ctx.num_computed <= ctx.num_tokens, f"context {ctx.context_id} computed past its end"
            assert len(ctx.block_table) * self.bs >= ctx.num_computed, "block table too short"
            assert len(ctx.block_hashes) <= ctx.num_computed // self.bs
            for b in ctx.block_table:
                refs[b] = refs.get(b, 0) + 1
        self.blocks.check_integrity(refs)
