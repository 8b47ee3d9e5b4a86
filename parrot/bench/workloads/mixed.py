"""Workload 6: latency-critical chat next to throughput map-reduce jobs, on one server.

Chat requests arrive as a Poisson process and are read as they stream (`P.LATENCY`);
map-reduce jobs arrive every few seconds and only their final value matters
(`P.THROUGHPUT`). Parrot runs the chat with priority and a small token budget and packs the
jobs into large batches; an OpenAI request carries no objective, so the baseline server
treats both alike. Reported together: chat per-token latency and job completion time.
"""
from __future__ import annotations

import asyncio
from typing import Any, ClassVar

import parrot as P
from parrot.bench import documents
from parrot.bench.runtime import App, Runtime, numbered, open_apps
from parrot.bench.workload import Workload, fixed_length
from parrot.bench.workloads import map_reduce
from parrot.bench.workloads.shared_prompt import QUESTIONS


def make_chat(max_tokens: int):
    @fixed_length(max_tokens)
    def chat(tag, message, reply):
        """{{#system}}
        Run {{input:tag}}. You are a friendly assistant. Answer briefly.
        {{/system}}
        {{#user}}
        {{input:message}}
        {{/user}}
        {{#assistant}}{{output:reply}}{{/assistant}}"""

    return chat


class Mixed(Workload):
    name = "mixed"
    title = "Chat (latency) + map-reduce (throughput)"
    primary_kind = "chat"
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"jobs": 1, "chunks": 2, "words": 30, "map_tokens": 6, "reduce_tokens": 8,
                  "job_gap": 1.0, "chats": 2, "chat_rate": 5.0, "chat_tokens": 8},
        "full": {"jobs": 2, "chunks": 6, "words": 80, "map_tokens": 24, "reduce_tokens": 32,
                 "job_gap": 2.0, "chats": 8, "chat_rate": 1.5, "chat_tokens": 32}}
    scaled = ("jobs", "chats")

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        super().__init__(scale, smoke, overrides)
        s = self.size
        self.jobs = [(j * s["job_gap"],
                      documents.chunks(s["chunks"], s["words"], start=j * s["chunks"] * s["words"]))
                     for j in range(s["jobs"])]
        self.chats = [(t, f"Quick question: {QUESTIONS[i % len(QUESTIONS)]}") for i, t in
                      enumerate(documents.poisson_arrivals(s["chats"], s["chat_rate"], seed=6,
                                                           start=0.2))]
        self.summarize, self.combine = map_reduce.make_functions(s["map_tokens"],
                                                                 s["reduce_tokens"])
        self.chat = make_chat(s["chat_tokens"])

    def num_calls(self) -> int:
        return len(self.jobs) * (self.size["chunks"] + 1) + len(self.chats)

    def num_generated(self) -> int:
        s = self.size
        job = s["chunks"] * s["map_tokens"] + s["reduce_tokens"]
        return len(self.jobs) * job + len(self.chats) * s["chat_tokens"]

    async def run(self, runtime: Runtime, tag: str) -> None:
        async with open_apps(runtime, 1 + len(self.jobs)) as (chat_app, *job_apps):
            jobs = [self._job(app, tag, arrival, chunks)
                    for app, (arrival, chunks) in zip(job_apps, self.jobs)]
            chats = [self._chat(chat_app, tag, arrival, message)
                     for arrival, message in self.chats]
            await asyncio.gather(*jobs, *chats)

    async def _job(self, app: App, tag: str, arrival: float, chunks: list[str]) -> None:
        await app.clock.sleep_until(arrival)
        parts = [app.call(self.summarize, tag, map_reduce.GUIDE, c) for c in chunks]
        final = app.call(self.combine, tag, map_reduce.GUIDE, numbered(app, parts))
        tokens = len(chunks) * self.size["map_tokens"] + self.size["reduce_tokens"]
        await app.timed(final, "job", tokens, P.THROUGHPUT)

    async def _chat(self, app: App, tag: str, arrival: float, message: str) -> None:
        await app.clock.sleep_until(arrival)
        reply = app.call(self.chat, tag, message)
        await app.timed(reply, "chat", self.size["chat_tokens"], P.LATENCY)
