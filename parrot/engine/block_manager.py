"""Ref-counted KV blocks with a prefix cache of chained block hashes.

Owns block bookkeeping and no policy. Every block is in exactly one state:
  - free:    ref_count 0, no hash             (in `_free`)
  - cached:  ref_count 0, hashed, evictable   (in `_cached`, least recently used first)
  - in use:  ref_count > 0                    (held by contexts; may be hashed)
A full block's hash is hash(previous block's hash, its tokens); a hit is
verified against the stored tokens, so a hash collision can never alias KV.
"""
from __future__ import annotations

from collections import OrderedDict, deque

NO_HASH = -1


def chain_hash(prev_hash: int, tokens: tuple[int, ...]) -> int:
    return hash((prev_hash, tokens))


class Block:
    __slots__ = ("block_id", "ref_count", "hash", "tokens")

    def __init__(self, block_id: int):
        self.block_id = block_id
        self.ref_count = 0
        self.hash = NO_HASH
        self.tokens: tuple[int, ...] = ()


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1:
            raise ValueError("the KV pool needs at least one block")
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self._free: deque[int] = deque(range(num_blocks))
        self._cached: OrderedDict[int, None] = OrderedDict()
        self._by_hash: dict[int, int] = {}
        self.num_evictions = 0

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free_blocks(self) -> int:
        """Blocks an allocation can take: never-used plus cached (evictable) ones."""
        return len(self._free) + len(self._cached)

    @property
    def num_cached_blocks(self) -> int:
        return len(self._cached)

    @property
    def num_used_blocks(self) -> int:
        return self.num_blocks - self.num_free_blocks

    def can_allocate(self, n: int) -> bool:
        return n <= self.num_free_blocks

    def allocate(self) -> int:
        if self._free:
            block_id = self._free.popleft()
        elif self._cached:
            block_id, _ = self._cached.popitem(last=False)
            self._forget_hash(self.blocks[block_id])
            self.num_evictions += 1
        else:
            raise MemoryError("KV pool exhausted")
        self.blocks[block_id].ref_count = 1
        return block_id

    def incref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        if block.ref_count == 0:
            self._cached.pop(block_id)  # a cache hit revives an evictable block
        block.ref_count += 1

    def decref(self, block_id: int) -> None:
        block = self.blocks[block_id]
        assert block.ref_count > 0, f"double free of block {block_id}"
        block.ref_count -= 1
        if block.ref_count == 0:
            if block.hash != NO_HASH:
                self._cached[block_id] = None
            else:
                self._free.append(block_id)

    def lookup(self, block_hash: int, tokens: tuple[int, ...]) -> int | None:
        """A block holding exactly `tokens` after the prefix with `block_hash`'s parent."""
        if not self.enable_prefix_caching:
            return None
        block_id = self._by_hash.get(block_hash)
        if block_id is None or self.blocks[block_id].tokens != tokens:
            return None
        return block_id

    def register(self, block_id: int, block_hash: int, tokens: tuple[int, ...]) -> None:
        """Record a full, computed block in the prefix cache."""
        if not self.enable_prefix_caching:
            return
        block = self.blocks[block_id]
        assert block.ref_count > 0 and len(tokens) == self.block_size
        if block.hash != NO_HASH:
            return
        block.hash, block.tokens = block_hash, tokens
        self._by_hash.setdefault(block_hash, block_id)

    def evict_all(self) -> None:
        """Drop every cached block (tests use this to prove nothing is leaked)."""
        while self._cached:
            block_id, _ = self._cached.popitem(last=False)
            self._forget_hash(self.blocks[block_id])
            self._free.append(block_id)

    def _forget_hash(self, block: Block) -> None:
        if self._by_hash.get(block.hash) == block.block_id:
            del self._by_hash[block.hash]
        block.hash, block.tokens = NO_HASH, ()

    def check_integrity(self, expected_refs: dict[int, int] | None = None) -> None:
        """Each block in exactly one state; hashes consistent; refs match the holders' count."""
        free, cached = set(self._free), set(self._cached)
        assert len(free) == len(self._free), "duplicate in free list"
        assert not free & cached, "block both free and cached"
        for b in self.blocks:
            if b.block_id in free:
                assert b.ref_count == 0 and b.hash == NO_HASH, f"bad free block {b.block_id}"
            elif b.block_id in cached:
                assert b.ref_count == 0 and b.hash != NO_HASH, f"bad cached block {b.block_id}"
            else:
                assert b.ref_count > 0, f"block {b.block_id} leaked (ref 0, not free)"
        for h, block_id in self._by_hash.items():
            assert self.blocks[block_id].hash == h, f"stale hash entry for block {block_id}"
        if expected_refs is not None:
            for b in self.blocks:
                want = expected_refs.get(b.block_id, 0)
                assert b.ref_count == want, f"block {b.block_id}: ref {b.ref_count}, holders {want}"
