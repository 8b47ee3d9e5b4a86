"""Semantic-function templates: constant text with `{{input:x}}` / `{{output:y}}` placeholders.

A template is parsed once into a tuple of pieces (`Text`, `Placeholder`, `RoleMark`). The
grammar:

    template    := (text | placeholder | role_open | role_close)*
    placeholder := "{{" ws kind ws ":" ws name ws "}}"
    kind        := "input" | "output"
    name        := [A-Za-z_][A-Za-z0-9_]*
    role_open   := "{{#" ws role ws "}}"      role_close := "{{/" ws role ws "}}"
    role        := "system" | "user" | "assistant"

Role blocks (`{{#user}}...{{/user}}`) make a chat template: the server renders the blocks as
messages with the served model's chat template (protocol/chat_render.py), so one program runs on
any chat model. In a template with role blocks, blocks do not nest, only whitespace lies
between them, and every output is inside an assistant block.

`{{` always opens a placeholder (there is no escape). Rules checked at parse time, each
error naming the 1-based `line:col` of the offending `{{`: a placeholder must close,
its kind must be input/output, its name an identifier; an output name appears once and
never also as an input; a template declares at least one output; role blocks follow the rules
above. Text after the last output is never sent to the model.

This module is pure Python: the client and the server's manager both use it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

INPUT = "input"
OUTPUT = "output"
_BODY = re.compile(r"^\s*(?P<kind>[^:\s]*)\s*:\s*(?P<name>.*?)\s*$", re.DOTALL)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ROLES = ("system", "user", "assistant")


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


class _Located:
    """A template mark that knows where it was written (`line`, `col` fields)."""

    line: int
    col: int

    @property
    def position(self) -> str:
        return f"{self.line}:{self.col}"


@dataclass(frozen=True)
class Placeholder(_Located):
    kind: str  # INPUT or OUTPUT
    name: str
    line: int = 1
    col: int = 1


@dataclass(frozen=True)
class RoleMark(_Located):
    """The start (`{{#role}}`) or end (`{{/role}}`) of a chat message block."""

    role: str
    is_open: bool
    line: int = 1
    col: int = 1


Piece = Text | Placeholder | RoleMark


@dataclass(frozen=True)
class Block:
    """One role block: a chat message whose content is `pieces` (no role marks)."""

    role: str
    pieces: tuple[Piece, ...]


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

    @property
    def has_roles(self) -> bool:
        return any(isinstance(p, RoleMark) for p in self.pieces)

    def blocks(self) -> list[Block]:
        """The role blocks in order (text between blocks is whitespace and dropped)."""
        blocks, current, role = [], [], None
        for piece in self.pieces:
            if isinstance(piece, RoleMark):
                if not piece.is_open:
                    blocks.append(Block(role, tuple(current)))
                current, role = [], piece.role
            elif role is not None:
                current.append(piece)
        return blocks

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
        if self.has_roles:
            _check_roles(self.pieces)


def render_source(pieces: list[Piece]) -> str:
    """The template text of `pieces` (inverse of parsing, up to whitespace in braces)."""
    return "".join(_piece_source(p) for p in pieces)


def _piece_source(piece: Piece) -> str:
    if isinstance(piece, Text):
        return piece.text
    if isinstance(piece, RoleMark):
        return "{{%s%s}}" % ("#" if piece.is_open else "/", piece.role)
    return "{{%s:%s}}" % (piece.kind, piece.name)


def _check_roles(pieces: tuple[Piece, ...]) -> None:
    """Blocks closed, not nested; nothing but whitespace outside them; outputs in assistant."""
    opened: RoleMark | None = None
    for p in pieces:
        if isinstance(p, RoleMark):
            _check_mark(p, opened)
            opened = p if p.is_open else None
        elif opened is None and (isinstance(p, Placeholder) or p.text.strip()):
            where = (p.line, p.col) if isinstance(p, Placeholder) else (None, None)
            raise TemplateError(f"{_piece_source(p).strip()[:40]!r} is outside a role block; in "
                                "a template with role blocks everything is inside one", *where)
        elif isinstance(p, Placeholder) and p.kind == OUTPUT and opened.role != "assistant":
            raise TemplateError(f"output '{p.name}' is in a {{{{#{opened.role}}}}} block; "
                                "outputs belong in {{#assistant}} blocks", p.line, p.col)
    if opened is not None:
        raise TemplateError(f"role block {{{{#{opened.role}}}}} is never closed",
                            opened.line, opened.col)


def _check_mark(mark: RoleMark, opened: RoleMark | None) -> None:
    if mark.is_open and opened is not None:
        raise TemplateError(f"role blocks do not nest: {{{{#{mark.role}}}}} inside "
                            f"{{{{#{opened.role}}}}} (opened at {opened.position})",
                            mark.line, mark.col)
    if not mark.is_open and (opened is None or opened.role != mark.role):
        inside = f"inside {{{{#{opened.role}}}}}" if opened else "with no open block"
        raise TemplateError(f"{{{{/{mark.role}}}}} {inside}", mark.line, mark.col)


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


def _placeholder(body: str, line: int, col: int) -> Placeholder | RoleMark:
    shown = "{{" + body + "}}"
    if "{{" in body:
        raise TemplateError(f"'{{{{' inside placeholder {shown!r}", line, col)
    if body.lstrip()[:1] in ("#", "/"):
        return _role_mark(body.strip(), shown, line, col)
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


def _role_mark(body: str, shown: str, line: int, col: int) -> RoleMark:
    role = body[1:].strip()
    if role not in ROLES:
        raise TemplateError(f"unknown role {role!r} in {shown!r} (expected one of "
                            f"{', '.join(ROLES)})", line, col)
    return RoleMark(role, body[0] == "#", line, col)


def _line_col(source: str, offset: int) -> tuple[int, int]:
    line = source.count("\n", 0, offset) + 1
    col = offset - (source.rfind("\n", 0, offset) + 1) + 1
    return line, col
