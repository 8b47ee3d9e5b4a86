"""Role blocks -> a plain template, rendered by the served model's chat template.

A template with `{{#system}}`, `{{#user}}`, `{{#assistant}}` blocks is lowered once, when the
call is submitted: each block becomes a message whose content holds a sentinel for every
placeholder, the messages (up to the assistant block of the last output) go through the
tokenizer's chat template, and the rendered text is split back at the sentinels. The result is
an ordinary template of constant chat markup and placeholders, so stages, prefix sharing and
the executor work unchanged, and the constant prefix (system prompt and markup) renders to the
same text on every call.

The assistant turn of an output starts exactly as the generation prompt does: lowering checks
that `messages before it + add_generation_prompt` is a prefix of the rendered text, and
refuses (TemplateError; the server answers 400) a chat template for which it is not. Each
block's content is stripped at both ends. Text after an output inside its assistant block
(before the next placeholder) is that output's stop string; the turn's end-of-turn token ends
it otherwise.

Pure Python, like template.py: the manager lowers a call's template with the served model's
tokenizer, and `parrot bench`'s baseline client lowers it the same way (with the same model's
tokenizer loaded locally) to send the identical prompt to a plain OpenAI server.
"""
from __future__ import annotations

import re
from typing import Any, Callable, NamedTuple

from parrot.protocol.template import (
    OUTPUT,
    Block,
    Piece,
    Placeholder,
    Template,
    TemplateError,
    Text,
)

RenderChat = Callable[[list[dict[str, str]], bool], str]  # (messages, add_generation_prompt)
_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: no chat template touches them
_SENTINEL = re.compile(f"{_OPEN}(\\d+){_CLOSE}")


class Lowered(NamedTuple):
    template: Template  # no role marks: chat markup as text
    stops: dict[str, str]  # output name -> stop string taken from its assistant block


def chat_renderer(tokenizer: Any) -> RenderChat | None:
    """The tokenizer's chat template as a function, or None if it has none."""
    if not getattr(tokenizer, "chat_template", None):
        return None

    def render(messages: list[dict[str, str]], add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=add_generation_prompt)
    return render


def lower_roles(template: Template, render: RenderChat | None) -> Lowered:
    """`template`'s role blocks rendered by `render`; TemplateError naming what went wrong."""
    if render is None:
        raise TemplateError("role blocks need a chat template, and the served model has none")
    blocks = _through_last_output(template.blocks())
    slots: list[Placeholder] = []
    messages = [{"role": b.role, "content": _content(b, slots)} for b in blocks]
    full = _render(render, messages, False)
    for k, block in enumerate(blocks):
        if _has_output(block):
            _check_turn(full, _render(render, messages[:k], True), messages[k]["content"])
    pieces = _split(full, slots)
    return Lowered(Template.from_pieces(pieces), _stops(blocks))


def _check_turn(full: str, generation_prompt: str, content: str) -> None:
    """The assistant turn's content must follow the generation prompt directly in `full`."""
    opening = content[:_SENTINEL.search(content).end()]
    if not full.startswith(generation_prompt + opening):
        raise TemplateError("the chat template renders an assistant turn differently from its "
                            "generation prompt; role blocks cannot be used with it")


def _through_last_output(blocks: list[Block]) -> list[Block]:
    last = max(i for i, b in enumerate(blocks) if _has_output(b))
    return blocks[:last + 1]


def _has_output(block: Block) -> bool:
    return any(isinstance(p, Placeholder) and p.kind == OUTPUT for p in block.pieces)


def _content(block: Block, slots: list[Placeholder]) -> str:
    """The block's text with a sentinel per placeholder (numbered into `slots`), stripped."""
    out = []
    for piece in block.pieces:
        if isinstance(piece, Text):
            if _OPEN in piece.text or _CLOSE in piece.text:
                raise TemplateError("template text holds the reserved characters U+E000/U+E001")
            out.append(piece.text)
        else:
            out.append(f"{_OPEN}{len(slots)}{_CLOSE}")
            slots.append(piece)
    return "".join(out).strip()


def _render(render: RenderChat, messages: list[dict[str, str]], generation: bool) -> str:
    try:
        return render(messages, generation)
    except Exception as e:  # jinja raises for message orders a template refuses
        message = f"the role blocks cannot be rendered by the chat template: {e}"
        raise TemplateError(message) from None


def _split(text: str, slots: list[Placeholder]) -> list[Piece]:
    """Rendered text -> Text and the placeholders, which must come back once each, in order."""
    pieces: list[Piece] = []
    seen: list[int] = []
    pos = 0
    for match in _SENTINEL.finditer(text):
        pieces.append(Text(text[pos:match.start()]))
        seen.append(int(match[1]))
        pieces.append(slots[seen[-1]])
        pos = match.end()
    if seen != list(range(len(slots))):
        raise TemplateError("the chat template dropped or reordered parts of the role blocks")
    return pieces + [Text(text[pos:])]


def _stops(blocks: list[Block]) -> dict[str, str]:
    """Output name -> the text right after it in its block (outputs are in assistant blocks;
    a block's last text is stripped at its end, as its content is)."""
    stops = {}
    for block in blocks:
        items = block.pieces
        for i, piece in enumerate(items):
            if not (isinstance(piece, Placeholder) and piece.kind == OUTPUT):
                continue
            after = items[i + 1] if i + 1 < len(items) else None
            text = after.text if isinstance(after, Text) else ""
            text = text.rstrip() if i + 2 >= len(items) else text
            if text.strip():
                stops[piece.name] = text
    return stops
