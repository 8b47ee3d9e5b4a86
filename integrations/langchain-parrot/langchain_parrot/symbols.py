"""Symbolic values of a compiled chain run: text the server has not produced yet.

While a compiled chain runs, values are ordinary Python values, or contain these leaves:

- `PlannedVar`: the text of a planned model call or join (a Semantic Variable to be);
- `PendingMessage`: a chat model's `AIMessage` whose content is a `PlannedVar`;
- `PromptDraft`: a prompt formatted from inputs that contain planned text.

To build a model call's template from a prompt that contains planned text, the prompt is
rendered twice, with each planned value replaced by a *sentinel* of style A and of style B
(`sentinelize`). The text of style A is split at its sentinels (`split_at_sentinels`); the
pieces are trusted only if putting the B sentinels back reproduces the B text exactly
(`is_transparent`), i.e. the formatting inserted the value verbatim (no quoting, trimming,
case change). Sentinels are private-use characters around letters and spaces, so such
transformations change them and are caught.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from langchain_core.messages import AIMessage
from langchain_core.prompt_values import PromptValue

STYLES = {"A": (" \ue000a", "B\ue001 "), "B": (" \ue002c", "D\ue003 ")}
_SPLIT_A = re.compile(r" \ue000a(\d+)B\ue001 ")
Piece = str  # constant text, or a PlannedVar


class PlannedVar:
    """The text one planned call (or join) will produce; bound to a Semantic Variable on
    submission (`sv`)."""

    __slots__ = ("index", "sv")

    def __init__(self, index: int) -> None:
        self.index = index
        self.sv: Any = None

    def __repr__(self) -> str:
        return f"<PlannedVar {self.index}>"


@dataclass(frozen=True)
class PendingMessage:
    """A chat model's answer: an `AIMessage` whose content is still being produced."""

    content: PlannedVar
    model_name: str | None = None

    @property
    def response_metadata(self) -> dict[str, str]:
        return {"model_name": self.model_name} if self.model_name else {}


@dataclass(frozen=True)
class PromptDraft:
    """A prompt formatted with sentinels in place of planned text (styles A and B), and how
    to format it for real once the planned text exists."""

    a: PromptValue
    b: PromptValue
    prompt: Any  # the BasePromptTemplate
    inputs: Any  # its (symbolic) input


def sentinel(var: PlannedVar, style: str) -> str:
    head, tail = STYLES[style]
    return f"{head}{var.index}{tail}"


def sentinelize(value: Any, style: str) -> Any:
    """`value` with every planned leaf replaced by its sentinel text of `style`."""
    if isinstance(value, PlannedVar):
        return sentinel(value, style)
    if isinstance(value, PendingMessage):
        return AIMessage(content=sentinel(value.content, style))
    if isinstance(value, PromptDraft):
        return value.a if style == "A" else value.b
    if isinstance(value, dict):
        return {k: sentinelize(v, style) for k, v in value.items()}
    if isinstance(value, list) or type(value) is tuple:
        return type(value)(sentinelize(v, style) for v in value)
    return value


def is_symbolic(value: Any) -> bool:
    """True if `value` holds any planned leaf."""
    if isinstance(value, (PlannedVar, PendingMessage, PromptDraft)):
        return True
    if isinstance(value, dict):
        return any(is_symbolic(v) for v in value.values())
    if isinstance(value, list) or type(value) is tuple:
        return any(is_symbolic(v) for v in value)
    return False


def split_at_sentinels(text_a: str, variables: dict[int, PlannedVar]) -> list[Piece | PlannedVar]:
    """Style-A text as constant pieces and the planned values its sentinels stand for."""
    pieces: list[Piece | PlannedVar] = []
    position = 0
    for match in _SPLIT_A.finditer(text_a):
        var = variables.get(int(match.group(1)))
        if var is None:
            continue
        if match.start() > position:
            pieces.append(text_a[position:match.start()])
        pieces.append(var)
        position = match.end()
    if position < len(text_a):
        pieces.append(text_a[position:])
    return pieces


def is_transparent(pieces: list[Piece | PlannedVar], text_b: str) -> bool:
    """Do the pieces, with B sentinels for planned values, give exactly the style-B text?"""
    rebuilt = "".join(sentinel(p, "B") if isinstance(p, PlannedVar) else p for p in pieces)
    return rebuilt == text_b
