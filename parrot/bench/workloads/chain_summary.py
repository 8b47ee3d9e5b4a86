"""Workload 1: chain summarization of a long document.

Each step reads the summary so far and the next chunk and writes a new summary, so every
call depends on the previous one. Parrot receives the whole chain at once and starts each
step the moment the previous output exists; the baseline client waits for each result
before it can send the next request.
"""
from __future__ import annotations

from typing import Any, ClassVar

from parrot.bench import documents
from parrot.bench.runtime import Runtime
from parrot.bench.workload import Workload, fixed_length


def make_functions(max_tokens: int):
    @fixed_length(max_tokens)
    def first_summary(tag, chunk, summary):
        """{{#system}}
        Run {{input:tag}}. You summarize a long document step by step, keeping the summary
        short and factual.
        {{/system}}
        {{#user}}
        Summarize this text in two sentences:
        {{input:chunk}}
        {{/user}}
        {{#assistant}}{{output:summary}}{{/assistant}}"""

    @fixed_length(max_tokens)
    def refine(tag, summary_so_far, chunk, summary):
        """{{#system}}
        Run {{input:tag}}. You summarize a long document step by step, keeping the summary
        short and factual.
        {{/system}}
        {{#user}}
        Summary so far: {{input:summary_so_far}}
        Next part of the text:
        {{input:chunk}}
        Rewrite the summary in two sentences so it also covers the new part.
        {{/user}}
        {{#assistant}}{{output:summary}}{{/assistant}}"""

    return first_summary, refine


class ChainSummary(Workload):
    name = "chain_summary"
    title = "Chain summarization"
    primary_kind = "chain"
    shares_prefix = False  # each prompt holds the previous step's new output
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"chunks": 2, "words": 40, "tokens": 8},
        "full": {"chunks": 5, "words": 120, "tokens": 24}}
    scaled = ("chunks",)

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        super().__init__(scale, smoke, overrides)
        self.chunks = documents.chunks(self.size["chunks"], self.size["words"])
        self.first_summary, self.refine = make_functions(self.size["tokens"])

    def num_calls(self) -> int:
        return len(self.chunks)

    def num_generated(self) -> int:
        return len(self.chunks) * self.size["tokens"]

    async def run(self, runtime: Runtime, tag: str) -> None:
        async with runtime.app() as app:
            summary = app.call(self.first_summary, tag, self.chunks[0])
            for chunk in self.chunks[1:]:
                summary = app.call(self.refine, tag, summary, chunk)
            await app.timed(summary, "chain", self.num_generated())
