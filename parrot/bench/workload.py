"""What every workload provides: sizes, inputs built once, and one program for every mode.

A workload's constructor builds everything that must be identical across modes (document
chunks, questions, arrival times, the semantic functions with their fixed output lengths);
`run(runtime, tag)` then executes the application once. `tag` is fresh for every run and
opens every prompt (`{{#system}}Run {{input:tag}}. ...`), so one run can never hit another
run's cached prefix. Templates are role blocks, rendered with the model's chat template.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from typing import Any, ClassVar

import parrot as P
from parrot.bench.runtime import Runtime


def fixed_length(max_tokens: int, **kwargs: Any):
    """`@P.semantic_function` with greedy sampling and exactly `max_tokens` generated
    (`ignore_eos`), so every mode generates the same number of tokens."""
    return P.semantic_function(max_tokens=max_tokens, temperature=0.0, ignore_eos=True,
                               **kwargs)


class Workload(ABC):
    name: ClassVar[str]
    title: ClassVar[str]
    primary_kind: ClassVar[str]  # the Sample kind whose latency the main table shows
    shares_prefix: ClassVar[bool] = True  # calls share a prompt prefix (parrot prefills less)
    sizes: ClassVar[dict[str, dict[str, Any]]]  # "smoke" and "full" presets
    scaled: ClassVar[tuple[str, ...]] = ()  # size fields multiplied by --scale

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        preset = dict(self.sizes["smoke" if smoke else "full"])
        for key in self.scaled:
            preset[key] = max(1, math.ceil(preset[key] * scale))
        preset.update({k: v for k, v in (overrides or {}).items() if k in preset})
        self.size = preset
        self.scale = scale
        self.smoke = smoke

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "title": self.title, "scale": self.scale,
                "smoke": self.smoke, "sizes": dict(self.size),
                "num_calls": self.num_calls(), "generated_tokens": self.num_generated()}

    @abstractmethod
    def num_calls(self) -> int:
        """LLM calls in one run."""

    @abstractmethod
    def num_generated(self) -> int:
        """Tokens generated in one run (fixed lengths: the same in every mode)."""

    @abstractmethod
    async def run(self, runtime: Runtime, tag: str) -> None:
        """Run the application once; timed values are recorded as the runtime's samples."""
