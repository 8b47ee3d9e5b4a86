"""Workload 3: one long system prompt served to many concurrent users.

A chat product (think Bing Copilot) puts the same long system prompt - instructions plus a
reference document - before every user's question. Users arrive as a Poisson process.
Parrot's app session sees every request's prompt prefix, prefills it once and forks it;
the baseline sends one independent request per user.
"""
from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from parrot.bench import documents
from parrot.bench.runtime import Runtime
from parrot.bench.workload import Workload, fixed_length

QUESTIONS = (
    "Can I use this code in a commercial product?",
    "Do I have to publish my changes?",
    "What must I include when I redistribute the software?",
    "Does the licence grant any patent rights?",
    "Can I use the authors' names to promote my product?",
    "Is there any warranty?",
    "Who is liable if the software causes damage?",
    "Can I change the licence of my fork?",
    "What happens if I break the conditions?",
    "Do I need to keep the copyright notice in binaries?",
    "Can I sell copies of the software?",
    "Does the licence apply to documentation too?",
)

INSTRUCTIONS = """You are LicenceHelper, the assistant of a software company's legal
desk. Engineers ask you short questions about the licence below. Answer in at most three
sentences, cite the clause you rely on, and say so plainly when the licence does not answer
the question. Do not give legal advice beyond the text. Reference licence:"""


def make_function(max_tokens: int):
    @fixed_length(max_tokens)
    def answer(tag, instructions, reference, question, reply):
        """{{#system}}
        Run {{input:tag}}. {{input:instructions}}
        {{input:reference}}
        {{/system}}
        {{#user}}
        {{input:question}}
        {{/user}}
        {{#assistant}}{{output:reply}}{{/assistant}}"""

    return answer


def question(i: int) -> str:
    return f"I am user {i}. {QUESTIONS[i % len(QUESTIONS)]}"


class SharedPrompt(Workload):
    name = "shared_prompt"
    title = "Shared system prompt, many users"
    primary_kind = "request"
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"users": 3, "words": 80, "tokens": 8, "rate": 10.0},
        "full": {"users": 10, "words": 420, "tokens": 32, "rate": 3.0}}
    scaled = ("users",)

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        super().__init__(scale, smoke, overrides)
        self.reference = documents.words(1600, self.size["words"])
        self.arrivals = documents.poisson_arrivals(self.size["users"], self.size["rate"],
                                                   seed=3)
        self.answer = make_function(self.size["tokens"])

    def num_calls(self) -> int:
        return self.size["users"]

    def num_generated(self) -> int:
        return self.size["users"] * self.size["tokens"]

    async def run(self, runtime: Runtime, tag: str) -> None:
        async with runtime.app() as app:
            async def user(i: int, arrival: float) -> None:
                await app.clock.sleep_until(arrival)
                reply = app.call(self.answer, tag, INSTRUCTIONS, self.reference, question(i))
                await app.timed(reply, "request", self.size["tokens"])

            await asyncio.gather(*(user(i, t) for i, t in enumerate(self.arrivals)))
