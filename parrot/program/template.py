"""Semantic-function templates: constant text with `{{input:x}}` / `{{output:y}}` placeholders.

A template is parsed once into a tuple of pieces (`Text` and `Placeholder`). The grammar:

    template    := (text | placeholder)*
    placeholder := "{{" ws kind ws ":" ws name ws "}}"
    kind        := "input" | "output"
    name        := [A-Za-z_][A-Za-z0-9_]*

`{{` always opens a placeholder (there is no escape). Rules checked at parse time, each
error naming the 1-based `line:col` of the offending `{{`: a placeholder must close,
its kind must be input/output, its name an identifier; an output name appears once and
never also as an input; a template declares at least one output. Text after the last
output is never sent to the model.

This module is pure Python: the client and the server's manager both use it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

INPUT = "input"
OUTPUT = "output"
_BODY = re.compile(r"^\s*(?P<kind>[^:\s]*)\s*:\s*(?P<name>.*?)\s*$", re.DOTALL)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class TemplateError(ValueError):
    """A template that does not parse or breaks a rule; `line`/`col` locate it (1-based)."""

    def __init__(self, message: str, line: int | None = None, col: int | None = None) -> None:
        super().__init__(message if line is None else f"{message} (at {line}:{col})")
        self.reason = message
        self.line = line
        self.col = col


@dataclass(frozen=True)
class Text:
    text: str


@dataclass(frozen=True)
class Placeholder:
    kind: str  # INPUT or OUTPUT
    name: str
    line: int = 1
    col: int = 1

    @property
    def position(self) -> str:
        return f"{self.line}:{self.col}"


Piece = Text | Placeholder


@dataclass(frozen=True)
class Stage:
    """The pieces to fill before one output, then the output generated after them."""

    pieces: tuple[Piece, ...]
    output: str


@dataclass(frozen=True)
class Template:
    source: str
    pieces: tuple[Piece, ...]

    @classmethod
    def parse(cls, source: str) -> "Template":
        if not isinstance(source, str):
            raise TemplateError(f"template must be a string, got {type(source).__name__}")
        template = cls(source, tuple(_scan(source)))
        template.validate()
        return template

    @classmethod
    def from_pieces(cls, pieces: list[Piece]) -> "Template":
        """A template built in code (e.g. a join); validated like a parsed one."""
        template = cls(render_source(pieces), tuple(p for p in pieces if p != Text("")))
        template.validate()
        return template

    @property
    def placeholders(self) -> list[Placeholder]:
        return [p for p in self.pieces if isinstance(p, Placeholder)]

    @property
    def inputs(self) -> list[str]:
        """Input names in order of first appearance (an input may appear several times)."""
        return list(dict.fromkeys(p.name for p in self.placeholders if p.kind == INPUT))

    @property
    def outputs(self) -> list[str]:
        return [p.name for p in self.placeholders if p.kind == OUTPUT]

    def find(self, name: str) -> Placeholder | None:
        """The first placeholder named `name`, or None."""
        return next((p for p in self.placeholders if p.name == name), None)

    def stages(self) -> list[Stage]:
        """Split at outputs: each stage's pieces are filled, then its output generated."""
        stages, pending = [], []
        for piece in self.pieces:
            if isinstance(piece, Placeholder) and piece.kind == OUTPUT:
                stages.append(Stage(tuple(pending), piece.name))
                pending = []
            else:
                pending.append(piece)
        return stages

    def validate(self) -> None:
        inputs = {p.name for p in self.placeholders if p.kind == INPUT}
        seen: set[str] = set()
        for p in self.placeholders:
            if p.kind != OUTPUT:
                continue
            if p.name in seen:
                raise TemplateError(f"duplicate output '{p.name}'", p.line, p.col)
            if p.name in inputs:
                raise TemplateError(f"'{p.name}' is used both as an input and an output",
                                    p.line, p.col)
            seen.add(p.name)
        if not seen:
            line, col = _line_col(self.source, len(self.source))
            raise TemplateError("template declares no {{output:name}} placeholder", line, col)


def render_source(pieces: list[Piece]) -> str:
    """The template text of `pieces` (inverse of parsing, up to whitespace in braces)."""
    return "".join(p.text if isinstance(p, Text) else "{{%s:%s}}" % (p.kind, p.name)
                   for p in pieces)


def _scan(source: str) -> list[Piece]:
    pieces: list[Piece] = []
    pos = 0
    while True:
        start = source.find("{{", pos)
        if start < 0:
            break
        if start > pos:
            pieces.append(Text(source[pos:start]))
        end = source.find("}}", start + 2)
        line, col = _line_col(source, start)
        if end < 0:
            raise TemplateError("unclosed placeholder: '{{' without a matching '}}'", line, col)
        pieces.append(_placeholder(source[start + 2:end], line, col))
        pos = end + 2
    if pos < len(source):
        pieces.append(Text(source[pos:]))
    return pieces


def _placeholder(body: str, line: int, col: int) -> Placeholder:
    shown = "{{" + body + "}}"
    if "{{" in body:
        raise TemplateError(f"'{{{{' inside placeholder {shown!r}", line, col)
    match = _BODY.match(body)
    if match is None:
        raise TemplateError(f"placeholder {shown!r} must look like {{{{input:name}}}} "
                            "or {{output:name}}", line, col)
    kind, name = match["kind"], match["name"]
    if kind not in (INPUT, OUTPUT):
        raise TemplateError(f"unknown placeholder kind {kind!r} in {shown!r} "
                            "(expected 'input' or 'output')", line, col)
    if not _NAME.match(name):
        raise TemplateError(f"placeholder name {name!r} in {shown!r} is not an identifier",
                            line, col)
    return Placeholder(kind, name, line, col)


def _line_col(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, col
