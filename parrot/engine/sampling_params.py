"""Per-request generation settings and what a generation step hands back."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import NamedTuple


class Priority(IntEnum):
    """Scheduling class of a request. Lower value is served first."""

    LATENCY = 0  # latency-critical: served first, small per-step token budget
    NORMAL = 1
    THROUGHPUT = 2  # throughput work: fills large batches


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 0.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 disables
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stop_token_ids: list[int] = field(default_factory=list)
    ignore_eos: bool = False
    min_tokens: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        self.stop = [s for s in self.stop if s]
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the field for out-of-range values."""
        if not isinstance(self.max_tokens, int) or self.max_tokens < 1:
            raise ValueError(f"max_tokens must be a positive integer, got {self.max_tokens!r}")
        if not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"temperature must be in [0, 100], got {self.temperature!r}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if not isinstance(self.min_tokens, int) or not 0 <= self.min_tokens <= self.max_tokens:
            raise ValueError(f"min_tokens must be in [0, max_tokens], got {self.min_tokens!r}")

    @property
    def is_greedy(self) -> bool:
        return self.temperature == 0.0 or self.top_k == 1


class GenerationChunk(NamedTuple):
    """One piece of a streamed generation.

    `text` is the new text since the previous chunk (never a broken UTF-8
    character, never part of a stop string). The last chunk has `finish_reason`
    set ("stop" or "length") and carries the request's usage.
    """

    token_ids: list[int]
    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


class Usage(NamedTuple):
    prompt_tokens: int  # tokens of the context when generation started
    cached_tokens: int  # of those, served from the prefix cache / a fork (not recomputed)
    completion_tokens: int
