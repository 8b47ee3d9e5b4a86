"""Workload 2: map-reduce summarization of a long document.

Every chunk is summarized independently (the map calls share a long instruction prefix),
then one reduce call merges the summaries. Parrot sees the maps as one task group feeding
the reduce, prefills the shared instruction once, and starts the reduce without a client
round trip; the baseline sends the maps together (a LangChain `abatch`), then the reduce.
"""
from __future__ import annotations

from typing import Any, ClassVar

from parrot.bench import documents
from parrot.bench.runtime import Runtime, numbered
from parrot.bench.workload import Workload, fixed_length

GUIDE = """You are an expert at reading software licences and explaining them to engineers.
Follow these rules for every summary you write. Use plain words, not legal jargon. Say who
must do what, and when: distributors, licensees, contributors and the licensor each have
different duties. Mention conditions that trigger a duty, such as distributing binaries,
modifying files or filing a patent claim. Keep permissions, conditions and limitations
apart. Never invent obligations the text does not state, and never drop a warranty or
liability disclaimer. When a passage only defines terms, say which terms it defines and
why they matter later. Write at most two sentences."""


def make_functions(map_tokens: int, reduce_tokens: int):
    @fixed_length(map_tokens)
    def summarize(tag, guide, chunk, summary):
        """{{#system}}
        Run {{input:tag}}. {{input:guide}}
        {{/system}}
        {{#user}}
        Summarize this part of a licence:
        {{input:chunk}}
        {{/user}}
        {{#assistant}}{{output:summary}}{{/assistant}}"""

    @fixed_length(reduce_tokens)
    def combine(tag, guide, summaries, final):
        """{{#system}}
        Run {{input:tag}}. {{input:guide}}
        {{/system}}
        {{#user}}
        Here are summaries of consecutive parts of one licence:
        {{input:summaries}}
        Write one short paragraph that summarizes the whole licence.
        {{/user}}
        {{#assistant}}{{output:final}}{{/assistant}}"""

    return summarize, combine


class MapReduce(Workload):
    name = "map_reduce"
    title = "Map-reduce summarization"
    primary_kind = "job"
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"chunks": 3, "words": 30, "map_tokens": 6, "reduce_tokens": 8},
        "full": {"chunks": 8, "words": 100, "map_tokens": 24, "reduce_tokens": 32}}
    scaled = ("chunks",)

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        super().__init__(scale, smoke, overrides)
        self.chunks = documents.chunks(self.size["chunks"], self.size["words"], start=600)
        self.summarize, self.combine = make_functions(self.size["map_tokens"],
                                                      self.size["reduce_tokens"])

    def num_calls(self) -> int:
        return len(self.chunks) + 1

    def num_generated(self) -> int:
        return len(self.chunks) * self.size["map_tokens"] + self.size["reduce_tokens"]

    async def run(self, runtime: Runtime, tag: str) -> None:
        async with runtime.app() as app:
            parts = [app.call(self.summarize, tag, GUIDE, chunk) for chunk in self.chunks]
            final = app.call(self.combine, tag, GUIDE, numbered(app, parts))
            await app.timed(final, "job", self.num_generated())
