"""OpenAI tool calling: tools and tool_choice read from a request, a grammar that enforces a
required call, and the calls parsed back out of the generated text (whole or streamed).

A call is written the way Hermes-style chat models (Qwen2.5, SmolLM2's fine-tunes, ...)
write it, one block per call:

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

`tool_choice` "required" or a named function compiles the blocks into a Lark grammar whose
JSON is each function's parameter schema, so the arguments always parse against it; "auto"
leaves the choice to the model and parses whatever blocks it wrote.
"""
from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple

from parrot.engine.grammar import JSON_LAYOUT
from parrot.engine.sampling_params import Constraint
from parrot.server.errors import ApiError
from parrot.server.openai_models import ChatBody, NamedToolChoice, ToolSpec

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
EMPTY_PARAMETERS: dict[str, Any] = {"type": "object", "properties": {}}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object

    def spec(self) -> dict[str, Any]:
        """The OpenAI / Hugging Face chat-template form of the tool."""
        return {"type": "function", "function": {
            "name": self.name, "description": self.description, "parameters": self.parameters}}


class ToolCall(NamedTuple):
    id: str
    name: str
    arguments: str  # a JSON object, as text (OpenAI's shape)

    def to_json(self, index: int) -> dict[str, Any]:
        return {"index": index, "id": self.id, "type": "function",
                "function": {"name": self.name, "arguments": self.arguments}}


@dataclass(frozen=True)
class ToolSet:
    """A request's tools and what it asked of them."""

    tools: list[Tool] = field(default_factory=list)
    mode: Literal["none", "auto", "required"] = "none"
    named: str | None = None  # tool_choice naming one function (mode is then "required")
    parallel: bool = True

    @property
    def active(self) -> bool:
        """The model is told of the tools and its calls are parsed."""
        return bool(self.tools) and self.mode != "none"

    @property
    def callable(self) -> list[Tool]:
        return [t for t in self.tools if t.name == self.named] if self.named else self.tools

    def constraint(self) -> Constraint | None:
        """The grammar of the calls when one is required; None when the model chooses."""
        if not self.active or self.mode != "required":
            return None
        return Constraint("grammar", call_grammar(self.callable, self.parallel))


def call_grammar(tools: list[Tool], parallel: bool) -> str:
    """Lark (llguidance) grammar of one call block, or of several when `parallel`."""
    schemas = [{"type": "object", "properties": {"name": {"const": t.name},
                                                 "arguments": t.parameters},
                "required": ["name", "arguments"], "additionalProperties": False}
               for t in tools]
    schema = schemas[0] if len(schemas) == 1 else {"anyOf": schemas}
    calls = 'call ("\\n" call)*' if parallel else "call"
    return (f"start: {calls}\n"
            f'call: "{CALL_OPEN}\\n" %json {json.dumps({**schema, "x-guidance": JSON_LAYOUT})} '
            f'"\\n{CALL_CLOSE}"\n')


# ---- reading a request ---------------------------------------------------------------------
def parse_tool_set(req: ChatBody) -> ToolSet:
    """The tools of a validated chat body (openai_models.py checked their shapes)."""
    tools = [_tool(t, i) for i, t in enumerate(req.tools or ())]
    names = [t.name for t in tools]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise ApiError(f"'tools' names the function {duplicate!r} twice", param="tools")
    parallel = True if req.parallel_tool_calls is None else req.parallel_tool_calls
    mode, named = _tool_choice(req.tool_choice, names)
    return ToolSet(tools, mode, named, parallel)


def _tool(tool: ToolSpec, i: int) -> Tool:
    fn, param = tool.function, f"tools[{i}].function.parameters"
    parameters = EMPTY_PARAMETERS if fn.parameters is None else fn.parameters
    if parameters.get("type", "object") != "object":
        raise ApiError(f"'{param}' must be a JSON schema of an object (type 'object')",
                       param=param)
    return Tool(fn.name, fn.description or "", parameters)


def _tool_choice(choice: str | NamedToolChoice | None, names: list[str]) -> tuple[str, str | None]:
    if choice is None:
        return ("auto" if names else "none"), None
    if isinstance(choice, str):
        if choice == "required" and not names:
            raise ApiError("'tool_choice' is 'required' but no 'tools' were given",
                           param="tool_choice")
        return choice, None
    name = choice.function.name
    if name not in names:
        raise ApiError(f"'tool_choice' names the function {name!r}, which is not in 'tools'",
                       param="tool_choice")
    return "required", name


# ---- parsing the output --------------------------------------------------------------------
class CallStream:
    """Splits generated text into content and tool calls as it arrives.

    Text that could still become a call block (an open `<tool_call>` without its close, or
    a tail that may be the start of one) is held back until it is decided. A block that does
    not parse as a call of a known tool stays content, except the unfinished last block of
    a required call (the grammar wrote it; max_tokens cut it off): it is dropped. Whitespace
    before, between and after calls is dropped.
    """

    def __init__(self, tools: ToolSet) -> None:
        self._names = {t.name for t in tools.callable}
        self._parallel = tools.parallel
        self._forced = tools.mode == "required"  # every token is the grammar's call syntax
        self._pending = ""  # undecided: a tail that may start a block, or an open block
        self._space = ""  # whitespace held while it may sit next to a call
        self._holding = True  # no content since the start or the last call
        self.calls: list[ToolCall] = []

    def feed(self, text: str) -> tuple[str, list[ToolCall]]:
        """The content and the calls that `text` (the next piece) completes."""
        self._pending += text
        out: list[str] = []
        calls: list[ToolCall] = []
        while True:
            start = self._pending.find(CALL_OPEN)
            end = self._pending.find(CALL_CLOSE, start) if start >= 0 else -1
            if end < 0:
                cut = start if start >= 0 else len(self._pending) - _partial_open(self._pending)
                self._emit(self._pending[:cut], out)
                self._pending = self._pending[cut:]
                return "".join(out), calls
            self._emit(self._pending[:start], out)
            block = self._pending[start:end + len(CALL_CLOSE)]
            self._pending = self._pending[end + len(CALL_CLOSE):]
            self._take(block, out, calls)

    def finish(self) -> tuple[str, list[ToolCall]]:
        """What is left when the generation ends (an unclosed last block may still be a call)."""
        out: list[str] = []
        calls: list[ToolCall] = []
        rest, self._pending = self._pending, ""
        if rest.startswith(CALL_OPEN):
            if self._forced and self._parse(rest) is None:
                rest = ""  # a required call cut off mid-way: no call, and no content
            else:
                self._take(rest, out, calls)
        else:
            self._emit(rest, out)
        if not self.calls:  # no call came: held whitespace was content after all
            out.append(self._space)
        self._space = ""
        return "".join(out), calls

    def _emit(self, text: str, out: list[str]) -> None:
        if self._holding and not text.strip():
            self._space += text
            return
        out.append(self._space + text)
        self._space, self._holding = "", False

    def _take(self, block: str, out: list[str], calls: list[ToolCall]) -> None:
        call = self._parse(block)
        if call is None or (self.calls and not self._parallel):
            self._emit(block, out)
            return
        self.calls.append(call)
        calls.append(call)
        self._space, self._holding = "", True

    def _parse(self, block: str) -> ToolCall | None:
        body = block[len(CALL_OPEN):]
        body = body[:-len(CALL_CLOSE)] if body.endswith(CALL_CLOSE) else body
        try:
            call = json.loads(body)
        except json.JSONDecodeError:
            return None
        if not isinstance(call, dict) or call.get("name") not in self._names:
            return None
        arguments = call.get("arguments", call.get("parameters", {}))
        if not isinstance(arguments, dict):
            return None
        return ToolCall(f"call_{uuid.uuid4().hex[:24]}", call["name"],
                        json.dumps(arguments, ensure_ascii=False))


def _partial_open(text: str) -> int:
    """Length of the longest tail of `text` that is a proper prefix of CALL_OPEN."""
    for n in range(min(len(text), len(CALL_OPEN) - 1), 0, -1):
        if CALL_OPEN.startswith(text[-n:]):
            return n
    return 0


def render_call(name: str, arguments: dict[str, Any]) -> str:
    """A past call as the model writes it (history rendered without a tool-aware template)."""
    return f"{CALL_OPEN}\n{json.dumps({'name': name, 'arguments': arguments})}\n{CALL_CLOSE}"


def split_calls(text: str, tools: ToolSet) -> tuple[str, list[ToolCall]]:
    """A whole generation's content and calls."""
    stream = CallStream(tools)
    content, calls = stream.feed(text)
    tail, more = stream.finish()
    return content + tail, calls + more
