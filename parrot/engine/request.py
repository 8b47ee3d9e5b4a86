"""A unit of engine work on one context: fill it (prefill only) or generate from it."""
from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch

from parrot.engine.context import Context
from parrot.engine.detokenizer import IncrementalDetokenizer
from parrot.engine.sampling_params import Priority, SamplingParams

_ids = itertools.count(1)


class Status(Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"
    ABORTED = "aborted"


@dataclass(eq=False)
class Request:
    ctx: Context
    sampling: SamplingParams | None  # None: a fill (prefill only)
    priority: Priority = Priority.NORMAL
    group: str | None = None  # a task group: its waiting members are admitted in one step
    request_id: int = field(default_factory=lambda: next(_ids))
    arrival: float = field(default_factory=time.monotonic)
    first_scheduled: float | None = None  # when a step first computed it (time.monotonic())
    status: Status = Status.WAITING
    num_prompt_tokens: int = 0  # context length when the request arrived
    num_cached_tokens: int = 0  # prompt tokens found already computed (fork or prefix cache)
    num_computed_at_arrival: int = 0
    num_generated: int = 0
    is_admitted: bool = False  # prefix matched once, on first admission
    generator: torch.Generator | None = None
    detokenizer: IncrementalDetokenizer | None = None
    matcher: Any = None  # llguidance.LLMatcher of a constrained generation (engine/grammar.py)
    outputs: asyncio.Queue = field(default_factory=asyncio.Queue)  # chunks, or an exception
    # the scheduler's memo: (registered full blocks then, the token limit, the cache keys of
    # the full blocks after them)
    block_keys: tuple[int, int, list[tuple[int, tuple[int, ...]]]] | None = None
    num_passed: int = 0  # times a cheap later request was admitted before it (scheduler.py)

    def __post_init__(self) -> None:
        self.num_prompt_tokens = self.ctx.num_tokens
        self.num_cached_tokens = self.num_computed_at_arrival = self.ctx.num_computed
        if self.sampling is not None and self.sampling.seed is not None:
            self.generator = torch.Generator().manual_seed(self.sampling.seed)

    @property
    def is_fill(self) -> bool:
        return self.sampling is None

    @property
    def is_done(self) -> bool:
        return self.status in (Status.FINISHED, Status.ABORTED)

    @property
    def sort_key(self) -> tuple[int, float]:
        return (int(self.priority), self.arrival)

    @property
    def is_decoding(self) -> bool:
        """Its only pending token is the one it just sampled."""
        return not self.is_fill and self.num_generated > 0 and self.ctx.num_pending == 1
