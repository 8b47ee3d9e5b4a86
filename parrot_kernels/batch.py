"""AttentionBatch: the per-step batch metadata the engine hands an attention backend."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class AttentionBatch:
    """One engine step's attention metadata, in batch order.

    Invariants (checked by `check_integrity`):
      * the flat query tensor is the concatenation of each sequence's new tokens,
        so it has `sum(q_lens)` rows;
      * `1 <= q_lens[i] <= kv_lens[i]`: kv_lens counts the new tokens too, and the
        new tokens are the last `q_lens[i]` KV positions of sequence i;
      * `block_tables[i]` holds at least `ceil(kv_lens[i] / block_size)` physical block
        ids (extra trailing ids, e.g. preallocated blocks, are ignored); KV position p of
        sequence i lives at block `block_tables[i][p // block_size]`, offset `p % block_size`;
      * sequences may share leading block ids (forks, prefix cache): shared ids hold
        identical K/V for every sequence whose context covers them.
    """

    q_lens: list[int]
    kv_lens: list[int]
    block_tables: list[list[int]]

    @property
    def num_seqs(self) -> int:
        return len(self.q_lens)

    @property
    def num_tokens(self) -> int:
        return sum(self.q_lens)

    @property
    def is_decode_only(self) -> bool:
        return all(q == 1 for q in self.q_lens)

    def query_starts(self) -> list[int]:
        """Row of each sequence's first query token in the flat query tensor."""
        starts, row = [], 0
        for q_len in self.q_lens:
            starts.append(row)
            row += q_len
        return starts

    def check_integrity(self, block_size: int, num_blocks: int | None = None) -> None:
        """Raise ValueError if the batch breaks an invariant above."""
        if not (len(self.q_lens) == len(self.kv_lens) == len(self.block_tables)):
            raise ValueError("q_lens, kv_lens and block_tables differ in length")
        for i, (q_len, kv_len, table) in enumerate(
            zip(self.q_lens, self.kv_lens, self.block_tables)
        ):
            if not 1 <= q_len <= kv_len:
                raise ValueError(f"seq {i}: need 1 <= q_len ({q_len}) <= kv_len ({kv_len})")
            num_needed = -(-kv_len // block_size)
            if len(table) < num_needed:
                raise ValueError(
                    f"seq {i}: {len(table)} blocks for kv_len {kv_len}, need {num_needed}"
                )
            if num_blocks is not None and any(not 0 <= b < num_blocks for b in table):
                raise ValueError(f"seq {i}: block id out of range [0, {num_blocks})")
