"""Workload 5: multi-agent programming (a MetaGPT-style team).

An architect writes a design from the project handbook; N coders each write one file from
the shared design; a reviewer comments on each file and its coder revises it, for several
rounds. Every coder and reviewer prompt starts with the same handbook and design, so Parrot
prefills that prefix once per design and forks it; files progress independently, each
review starting the moment its file exists. The baseline issues each agent's request when
its inputs are back, independent agents concurrently.
"""
from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from parrot.bench import documents
from parrot.bench.runtime import Runtime
from parrot.bench.workload import Workload, fixed_length

SPEC = """Project: "tasklog", a small command-line to-do manager in Python 3.11. Users add,
list, complete and delete tasks; tasks have a title, an optional due date and tags, and are
stored in a JSON file in the user's home directory. Team rules: standard library only;
type hints everywhere; one class or a few functions per file; errors go to stderr with exit
status 1; every public function has a one-line docstring; tests use pytest."""
FILES = ("cli.py", "storage.py", "models.py", "commands.py", "dates.py", "render.py",
         "config.py", "tags.py", "errors.py")


def make_functions(design_tokens: int, code_tokens: int, review_tokens: int):
    @fixed_length(design_tokens)
    def architect(tag, handbook, design):
        """{{#system}}
        Run {{input:tag}}. You are part of a software team building the project below.
        {{input:handbook}}
        {{/system}}
        {{#user}}
        You are the architect. Write a short design: the files, what each holds, and how
        they call each other.
        {{/user}}
        {{#assistant}}{{output:design}}{{/assistant}}"""

    @fixed_length(code_tokens)
    def coder(tag, handbook, design, filename, code):
        """{{#system}}
        Run {{input:tag}}. You are part of a software team building the project below.
        {{input:handbook}}
        The architect's design:
        {{input:design}}
        {{/system}}
        {{#user}}
        You are the coder of {{input:filename}}. Write the whole file.
        {{/user}}
        {{#assistant}}{{output:code}}{{/assistant}}"""

    @fixed_length(review_tokens)
    def reviewer(tag, handbook, design, filename, code, review):
        """{{#system}}
        Run {{input:tag}}. You are part of a software team building the project below.
        {{input:handbook}}
        The architect's design:
        {{input:design}}
        {{/system}}
        {{#user}}
        You are the reviewer of {{input:filename}}. The file:
        {{input:code}}
        List the most important problems.
        {{/user}}
        {{#assistant}}{{output:review}}{{/assistant}}"""

    @fixed_length(code_tokens)
    def reviser(tag, handbook, design, filename, code, review, revised):
        """{{#system}}
        Run {{input:tag}}. You are part of a software team building the project below.
        {{input:handbook}}
        The architect's design:
        {{input:design}}
        {{/system}}
        {{#user}}
        You are the coder of {{input:filename}}. Your file:
        {{input:code}}
        The reviewer says:
        {{input:review}}
        Write the revised file.
        {{/user}}
        {{#assistant}}{{output:revised}}{{/assistant}}"""

    return architect, coder, reviewer, reviser


class MultiAgent(Workload):
    name = "multi_agent"
    title = "Multi-agent programming"
    primary_kind = "file"
    sizes: ClassVar[dict[str, dict[str, Any]]] = {
        "smoke": {"coders": 2, "rounds": 1, "licence_header": False,
                  "design_tokens": 6, "code_tokens": 6, "review_tokens": 4},
        "full": {"coders": 3, "rounds": 2, "licence_header": True,
                 "design_tokens": 32, "code_tokens": 32, "review_tokens": 16}}
    scaled = ("coders",)

    def __init__(self, scale: float = 1.0, smoke: bool = False,
                 overrides: dict[str, int] | None = None) -> None:
        super().__init__(scale, smoke, overrides)
        self.handbook = SPEC
        if self.size["licence_header"]:
            self.handbook += ("\nEvery file starts with this licence header:\n"
                              + documents.load("BSD").strip())
        self.files = [_file_name(i) for i in range(self.size["coders"])]
        self.architect, self.coder, self.reviewer, self.reviser = make_functions(
            self.size["design_tokens"], self.size["code_tokens"], self.size["review_tokens"])

    def num_calls(self) -> int:
        return 1 + len(self.files) * (1 + 2 * self.size["rounds"])

    def num_generated(self) -> int:
        s = self.size
        per_file = s["code_tokens"] + s["rounds"] * (s["review_tokens"] + s["code_tokens"])
        return s["design_tokens"] + len(self.files) * per_file

    async def run(self, runtime: Runtime, tag: str) -> None:
        async with runtime.app() as app:
            design = app.call(self.architect, tag, self.handbook)
            finals = []
            for filename in self.files:
                code = app.call(self.coder, tag, self.handbook, design, filename)
                for _ in range(self.size["rounds"]):
                    review = app.call(self.reviewer, tag, self.handbook, design, filename, code)
                    code = app.call(self.reviser, tag, self.handbook, design, filename, code,
                                    review)
                finals.append(code)
            per_file = (self.num_generated() - self.size["design_tokens"]) // len(self.files)
            await asyncio.gather(*(app.timed(code, "file", per_file) for code in finals))


def _file_name(i: int) -> str:
    name = FILES[i % len(FILES)]
    return name if i < len(FILES) else name.replace(".py", f"_{i // len(FILES) + 1}.py")
