"""The steps a compiled chain is made of; each runs on values that may hold planned text.

Every step does what its LangChain runnable does, but a model step *plans* a Semantic-
Variable call instead of calling the model, and structural steps (sequence, parallel,
assign, pick, join, each) pass planned values along without waiting for them. Only a
`ClientStep` needs real values: it materializes its input (the program before it runs on the
server), then runs the original runnable here.
"""
from __future__ import annotations

import asyncio
import warnings
from dataclasses import dataclass
from typing import Any, Callable

from langchain_core.runnables import Runnable, RunnableConfig

from langchain_parrot.messages import to_openai_messages
from langchain_parrot.program import Program
from langchain_parrot.symbols import (PendingMessage, PlannedVar, PromptDraft, is_symbolic,
                                      is_transparent, sentinelize, split_at_sentinels)


@dataclass
class RunContext:
    program: Program
    config: RunnableConfig | None


class Step:
    async def run(self, ctx: RunContext, value: Any) -> Any:
        raise NotImplementedError


@dataclass
class SequenceStep(Step):
    steps: list[Step]

    async def run(self, ctx: RunContext, value: Any) -> Any:
        for step in self.steps:
            value = await step.run(ctx, value)
        return value


@dataclass
class ParallelStep(Step):
    branches: dict[str, Step]

    async def run(self, ctx: RunContext, value: Any) -> dict[str, Any]:
        results = await asyncio.gather(*(s.run(ctx, value) for s in self.branches.values()))
        return dict(zip(self.branches, results))


@dataclass
class AssignStep(Step):
    mapper: ParallelStep

    async def run(self, ctx: RunContext, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError("The input to RunnablePassthrough.assign() must be a dict.")
        return {**value, **await self.mapper.run(ctx, value)}


class PassthroughStep(Step):
    async def run(self, ctx: RunContext, value: Any) -> Any:
        return value


@dataclass
class PickStep(Step):
    """`itemgetter(...)` or `RunnablePick`: structural, planned values pass untouched."""

    getter: Callable[[Any], Any]

    async def run(self, ctx: RunContext, value: Any) -> Any:
        if isinstance(value, (PlannedVar, PendingMessage, PromptDraft)):
            value = await ctx.program.materialize(value)
        return self.getter(value)


@dataclass
class JoinStep(Step):
    """`"sep".join` of a list: a server-side join when some items are planned."""

    sep: str

    async def run(self, ctx: RunContext, value: Any) -> Any:
        if not isinstance(value, list) or not is_symbolic(value):
            return self.sep.join(await ctx.program.materialize(value))
        parts = [v if isinstance(v, (str, PlannedVar)) else await ctx.program.materialize(v)
                 for v in value]
        if not all(isinstance(p, (str, PlannedVar)) for p in parts):
            raise TypeError(f"sequence item: expected str instance in {self.sep!r}.join")
        return ctx.program.plan_join(parts, self.sep)


def as_list(value: Any) -> list[Any]:
    """`[value]`: a node's text for a list channel with an `operator.add` reducer."""
    return [value]


class ListStep(Step):
    """`RunnableLambda(as_list)`: structural, a planned value is wrapped, not waited for."""

    async def run(self, ctx: RunContext, value: Any) -> list[Any]:
        return as_list(value)


@dataclass
class EachStep(Step):
    """`runnable.map()`: the inner steps on every item, all planned at once."""

    inner: Step

    async def run(self, ctx: RunContext, value: Any) -> list[Any]:
        if not isinstance(value, list):
            value = await ctx.program.materialize(value)
        return list(await asyncio.gather(*(self.inner.run(ctx, v) for v in value)))


@dataclass
class PromptStep(Step):
    prompt: Any  # BasePromptTemplate

    async def run(self, ctx: RunContext, value: Any) -> Any:
        if not is_symbolic(value):
            return await self.prompt.ainvoke(value, ctx.config)
        return PromptDraft(self.prompt.invoke(sentinelize(value, "A")),
                           self.prompt.invoke(sentinelize(value, "B")), self.prompt, value)


@dataclass
class ParseStep(Step):
    """`StrOutputParser`: a chat answer's content, or the text itself."""

    parser: Any

    async def run(self, ctx: RunContext, value: Any) -> Any:
        if isinstance(value, PendingMessage):
            return value.content
        if isinstance(value, PlannedVar):
            return value
        return await self.parser.ainvoke(await ctx.program.materialize(value), ctx.config)


@dataclass
class ModelStep(Step):
    """A `ChatParrot` / `ParrotLLM` call planned as a Semantic-Variable call."""

    model: Any
    sampling: dict[str, Any]
    is_chat: bool

    async def run(self, ctx: RunContext, value: Any) -> Any:
        text_a, text_b = await self._prompt_texts(ctx, value)
        pieces = split_at_sentinels(text_a, ctx.program.variables)
        if not is_transparent(pieces, text_b):
            warnings.warn("langchain_parrot: a prompt transforms the text it receives from an "
                          "earlier model call (quoting, trimming, ...); this call waits for "
                          "that text on the client.", stacklevel=2)
            text, _ = await self._prompt_texts(ctx, await ctx.program.materialize(value))
            pieces = [text]
        var = ctx.program.plan_call("chat" if self.is_chat else "llm", pieces, self.sampling)
        return PendingMessage(var, self.model.model) if self.is_chat else var

    async def _prompt_texts(self, ctx: RunContext, value: Any) -> tuple[str, str]:
        """The prompt text with style-A and style-B sentinels, as the model would send it."""
        a, b = (self.model._convert_input(sentinelize(value, s)) for s in ("A", "B"))
        if not self.is_chat:
            return a.to_string(), b.to_string()
        text_a, text_b = await ctx.program.renderer.render(
            [to_openai_messages(a.to_messages()), to_openai_messages(b.to_messages())])
        return text_a, text_b


@dataclass
class ClientStep(Step):
    """A runnable the compiler cannot express server-side: runs here on real values."""

    runnable: Runnable
    reason: str

    async def run(self, ctx: RunContext, value: Any) -> Any:
        return await self.runnable.ainvoke(await ctx.program.materialize(value), ctx.config)
