"""One run of a compiled chain or graph: planned calls, submitted in one go, then values.

Steps *plan* model calls and joins (`plan_call`, `plan_join`), wiring them by `PlannedVar`s;
nothing reaches the server while planning. `materialize` (at the end of a run, or where a
client-side step needs real values) submits everything planned so far to the Parrot session,
in planning order (which is dependency order), and fetches only the values it was asked for:
the server runs the whole graph, dependent calls start there with no client round trip.
`stream` does the same and yields the final text as the server generates it.
"""
from __future__ import annotations

import asyncio
import functools
import inspect
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import parrot as P
from langchain_core.messages import AIMessage, AIMessageChunk

from langchain_parrot.symbols import PendingMessage, PlannedVar, PromptDraft
from langchain_parrot.transport import Endpoint, apost_json

RENDER_PATH = "/v1/parrot/render_chat"
MAX_CACHED_RENDERS = 1024


@dataclass(frozen=True)
class PlannedCall:
    name: str
    pieces: tuple[str | PlannedVar, ...]
    sampling: tuple[tuple[str, Any], ...]
    output: PlannedVar


@dataclass(frozen=True)
class PlannedJoin:
    parts: tuple[str | PlannedVar, ...]
    sep: str
    output: PlannedVar


class ChatRenderer:
    """Chat messages to prompt text with the server's chat template (cached, batched)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._cache: dict[str, str] = {}

    async def render(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        keys = [json.dumps(c, sort_keys=True) for c in conversations]
        missing = list(dict.fromkeys(k for k in keys if k not in self._cache))
        if missing:
            reply = await apost_json(self.endpoint, RENDER_PATH,
                                     {"conversations": [json.loads(k) for k in missing]})
            if len(self._cache) > MAX_CACHED_RENDERS:
                self._cache.clear()
            self._cache.update(zip(missing, reply["prompts"]))
        return [self._cache[k] for k in keys]


class Program:
    def __init__(self, session: P.Session, renderer: ChatRenderer) -> None:
        self.session = session
        self.renderer = renderer
        self.variables: dict[int, PlannedVar] = {}
        self._planned: list[PlannedCall | PlannedJoin] = []

    # -- planning ---------------------------------------------------------------------------
    def plan_call(self, name: str, pieces: list[str | PlannedVar],
                  sampling: dict[str, Any]) -> PlannedVar:
        output = self._new_var()
        frozen = tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                              for k, v in sampling.items()))
        self._planned.append(PlannedCall(name, tuple(_merge_text(pieces)), frozen, output))
        return output

    def plan_join(self, parts: list[str | PlannedVar], sep: str) -> PlannedVar:
        output = self._new_var()
        self._planned.append(PlannedJoin(tuple(parts), sep, output))
        return output

    @property
    def num_planned(self) -> int:
        return len(self.variables)

    def _new_var(self) -> PlannedVar:
        var = PlannedVar(len(self.variables))
        self.variables[var.index] = var
        return var

    # -- submission and values --------------------------------------------------------------
    def submit(self) -> None:
        """Hand every planned call and join to the session (sent in order, without waiting)."""
        planned, self._planned = self._planned, []
        for op in planned:
            if isinstance(op, PlannedJoin):
                op.output.sv = self.session.join([_bound(p) for p in op.parts], sep=op.sep)
                continue
            fn = _semantic_function(len(op.pieces), op.sampling)
            args = {f"p{i}": _bound(p) for i, p in enumerate(op.pieces)}
            op.output.sv = self.session.submit_call(fn, fn.bind(**args))[0]

    async def stream(self, value: Any) -> AsyncIterator[Any]:
        """`value` in chunks as it is produced: the text deltas of one planned text (str),
        or of one chat answer (AIMessageChunk); any other value whole, once, like
        `materialize`. Chunks add up (`+`) to what `materialize` returns."""
        self.submit()
        if isinstance(value, PlannedVar):
            async for delta in value.sv.astream(P.LATENCY):
                yield delta
        elif isinstance(value, PendingMessage):
            async for delta in value.content.sv.astream(P.LATENCY):
                yield AIMessageChunk(content=delta)
            yield AIMessageChunk(content="", response_metadata=value.response_metadata, chunk_position="last")
        else:
            yield await self.materialize(value)

    async def materialize(self, value: Any) -> Any:
        """`value` with every planned leaf replaced by its text (runs what it needs)."""
        self.submit()
        leaves = list(dict.fromkeys(_leaves(value)))
        texts = await asyncio.gather(*(v.sv.aget(P.LATENCY) for v in leaves))
        return _substitute(value, dict(zip(leaves, texts)))


def _bound(piece: str | PlannedVar) -> Any:
    return piece.sv if isinstance(piece, PlannedVar) else piece


def _merge_text(pieces: list[str | PlannedVar]) -> list[str | PlannedVar]:
    """Adjacent constant pieces joined, empty ones dropped."""
    merged: list[str | PlannedVar] = []
    for piece in pieces:
        if isinstance(piece, str) and merged and isinstance(merged[-1], str):
            merged[-1] += piece
        elif not (isinstance(piece, str) and not piece):
            merged.append(piece)
    return merged


@functools.lru_cache(maxsize=256)
def _semantic_function(num_pieces: int, sampling: tuple[tuple[str, Any], ...]):
    """A semantic function whose prompt is its inputs p0..pN back to back, then the output.

    Constant text travels as constant inputs, so prompts need no escaping and are sent
    byte for byte; the server renders and tokenizes the whole prompt as one text, exactly as
    `/v1/completions` does.
    """
    names = [f"p{i}" for i in range(num_pieces)]

    def template() -> None: ...

    template.__name__ = "langchain_llm"
    template.__doc__ = "".join(f"{{{{input:{n}}}}}" for n in names) + "{{output:text}}"
    template.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(n, inspect.Parameter.POSITIONAL_OR_KEYWORD) for n in names])
    settings = {k: (list(v) if isinstance(v, tuple) else v) for k, v in sampling}
    return P.semantic_function(**settings)(template)


def _leaves(value: Any):
    if isinstance(value, PlannedVar):
        yield value
    elif isinstance(value, PendingMessage):
        yield value.content
    elif isinstance(value, PromptDraft):
        yield from _leaves(value.inputs)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list) or type(value) is tuple:
        for v in value:
            yield from _leaves(v)


def _substitute(value: Any, texts: dict[PlannedVar, str]) -> Any:
    if isinstance(value, PlannedVar):
        return texts[value]
    if isinstance(value, PendingMessage):
        return AIMessage(content=texts[value.content], response_metadata=value.response_metadata)
    if isinstance(value, PromptDraft):
        return value.prompt.invoke(_substitute(value.inputs, texts))
    if isinstance(value, dict):
        return {k: _substitute(v, texts) for k, v in value.items()}
    if isinstance(value, list) or type(value) is tuple:
        return type(value)(_substitute(v, texts) for v in value)
    return value
