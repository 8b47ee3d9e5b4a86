"""Workload 4: several "GPTs"-style apps served at once, each with its own long system prompt.

Requests for the apps arrive mixed, as one Poisson process with each request's app drawn
at random (seeded). In Parrot each app is its own session, so its requests share its
prompt prefix; the baseline sends independent requests.
"""
from __future__ import annotations

import asyncio
import random
from typing import Any, ClassVar

from parrot.bench import documents
from parrot.bench.runtime import Runtime, open_apps
from parrot.bench.workload import Workload, fixed_length
from parrot.bench.workloads.shared_prompt import QUESTIONS

PERSONAS = (
    ("CopyrightCoach", "explains copyright notices and attribution duties"),
    ("PatentPal", "explains patent grants and what ends them"),
    ("ShipIt", "tells release engineers what to bundle with a release"),
    ("FineLawyer", "reads the fine print on warranty and liability"),
    ("ForkFriend", "advises on forking and relicensing"),
    ("DocsBot", "answers questions about documentation and notices"),
)


def make_function(max_tokens: int):
    @fixed_length(max_tokens)
    def ask(tag, persona, reference, question, reply):
        """{{#system}}
        Run {{input:tag}}. {{input:persona}} Answer in at most three sentences and cite the
        clause you rely on. Reference text:
        {{input:reference}}
        {{/system}}
        {{#user}}
        {{input:question}}
        {{/user}}
        {{#assistant}}{{output:reply}}{{/assistant}}"""

    return ask


class Gpts(Workload):
    name = "gpts"
    title = "Several GPTs apps, mixed arrivals"
    primary_kind = "request"
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"apps": 2, "requests": 4, "words": 60, "tokens": 8, "rate": 10.0},
        "full": {"apps": 4, "requests": 16, "words": 260, "tokens": 32, "rate": 4.0}}
    scaled = ("apps", "requests")

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        super().__init__(scale, smoke, overrides)
        words = self.size["words"]
        self.personas = [_persona(i) for i in range(self.size["apps"])]
        self.references = [documents.words(i * words, words) for i in range(self.size["apps"])]
        rng = random.Random(4)
        self.requests = [(rng.randrange(self.size["apps"]), t) for t in
                         documents.poisson_arrivals(self.size["requests"], self.size["rate"],
                                                    seed=4)]
        self.ask = make_function(self.size["tokens"])

    def num_calls(self) -> int:
        return self.size["requests"]

    def num_generated(self) -> int:
        return self.size["requests"] * self.size["tokens"]

    async def run(self, runtime: Runtime, tag: str) -> None:
        async with open_apps(runtime, len(self.personas)) as apps:

            async def request(i: int, app_index: int, arrival: float) -> None:
                app = apps[app_index]
                await app.clock.sleep_until(arrival)
                reply = app.call(self.ask, tag, self.personas[app_index],
                                 self.references[app_index], QUESTIONS[i % len(QUESTIONS)])
                await app.timed(reply, "request", self.size["tokens"])

            await asyncio.gather(*(request(i, a, t) for i, (a, t) in enumerate(self.requests)))


def _persona(i: int) -> str:
    name, job = PERSONAS[i % len(PERSONAS)]
    suffix = f" #{i // len(PERSONAS) + 1}" if i >= len(PERSONAS) else ""
    return f"You are {name}{suffix}, a GPT that {job}."
