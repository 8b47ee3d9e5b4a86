"""The simulated engine's contexts and requests (`sim_engine.py`)."""
from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field


@dataclass(eq=False)
class SimContext:
    id: int
    tokens: list[int] = field(default_factory=list)
    computed: int = 0  # leading tokens whose KV exists on the engine
    keys: list[int] = field(default_factory=list)  # one per full block: hash of all before it
    num_inserted: int = 0  # of `keys`, those already put in the engine's prefix cache
    is_busy: bool = False
    is_pinned: bool = False

    def extend_keys(self, block: int) -> None:
        while (len(self.keys) + 1) * block <= len(self.tokens):
            i = len(self.keys)
            prev = self.keys[-1] if self.keys else 0
            self.keys.append(hash((prev, tuple(self.tokens[i * block:(i + 1) * block]))))


@dataclass(eq=False)
class SimRequest:
    ctx: SimContext
    max_tokens: int | None  # None: a fill (prefill only)
    priority: int
    seq: int  # arrival order
    done: asyncio.Future | None = None  # a fill's result: prompt tokens not recomputed
    queue: asyncio.Queue | None = None  # a generation's chunks
    rng: random.Random | None = None
    looked_up: bool = False  # the prefix cache was consulted (at its first chunk)
    is_decoding: bool = False
    prompt_len: int = 0
    cached: int = 0
    num_generated: int = 0
