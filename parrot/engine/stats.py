"""Engine counters: what the server's /metrics and the tests read."""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parrot.engine.scheduler import StepPlan


@dataclass
class EngineStats:
    num_prefill_tokens: int = 0  # tokens computed as prompt (incl. recompute after preemption)
    num_decode_tokens: int = 0  # tokens computed as the freshly sampled token
    num_cached_tokens: int = 0  # prompt tokens found in the prefix cache (not computed)
    num_generated_tokens: int = 0
    num_steps: int = 0
    num_cascade_steps: int = 0  # steps whose attention read some shared prefix once per group
    num_preemptions: int = 0
    num_requests_finished: int = 0
    num_requests_failed: int = 0
    num_running: int = 0
    num_waiting: int = 0
    num_contexts: int = 0
    num_blocks: int = 0
    num_free_blocks: int = 0  # allocatable: never used + cached
    num_cached_blocks: int = 0  # unreferenced, kept for prefix reuse
    num_used_blocks: int = 0  # referenced by contexts
    block_size: int = 0
    last_batch_size: int = 0
    last_step_tokens: int = 0
    recent_step_ms: list[float] = field(default_factory=list)

    def count_step(self, plan: StepPlan, is_cascade: bool) -> None:
        """Count a step that computed `plan` (before its tokens are committed)."""
        self.num_steps += 1
        self.num_cascade_steps += is_cascade
        self.last_batch_size, self.last_step_tokens = len(plan.seqs), plan.num_tokens
        for s in plan.seqs:
            if s.request.is_decoding:
                self.num_decode_tokens += s.num_new
            else:
                self.num_prefill_tokens += s.num_new

    def to_dict(self) -> dict:
        return asdict(self)


class StepTimes:
    """The last few step durations, for the dashboard's live chart."""

    def __init__(self, size: int = 64):
        self._ms: deque[float] = deque(maxlen=size)

    def add(self, seconds: float) -> None:
        self._ms.append(round(seconds * 1000, 3))

    def recent(self) -> list[float]:
        return list(self._ms)
