"""Tools for `ChatParrot.bind_tools`: LangChain tools as OpenAI `tools`, and `tool_choice`.

    model.bind_tools([multiply, get_weather], tool_choice="multiply")

Tools are converted by langchain-core's `convert_to_openai_tool` (functions, `BaseTool`s,
pydantic models, TypedDicts, JSON-schema dicts). `tool_choice` follows langchain-openai:
"auto", "none", "required"; "any" and True mean "required"; a bound tool's name, or an
OpenAI `{"type": "function", "function": {"name": ...}}` dict, forces that tool. The server
enforces "required" and a named tool with a grammar, so their arguments always parse.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.tools import BaseTool
from langchain_core.utils.function_calling import convert_to_openai_tool

ToolLike = dict[str, Any] | type | Callable | BaseTool
ToolChoice = str | bool | dict[str, Any] | None
OPENAI_CHOICES = frozenset({"auto", "none", "required"})


def openai_tools(tools: Sequence[ToolLike], strict: bool | None = None) -> list[dict[str, Any]]:
    """`[{"type": "function", "function": {name, description, parameters}}]`."""
    return [convert_to_openai_tool(tool, strict=strict) for tool in tools]


def tool_choice_field(tool_choice: ToolChoice, tools: list[dict[str, Any]]) -> Any:
    """The request's `tool_choice` for langchain's `tool_choice` argument (None: not sent)."""
    if tool_choice is None or tool_choice is False:
        return None
    names = [t["function"]["name"] for t in tools]
    if tool_choice is True or tool_choice == "any":
        return "required"
    if isinstance(tool_choice, dict):
        return tool_choice
    if not isinstance(tool_choice, str):
        raise TypeError(f"tool_choice must be a str, bool or dict, not {type(tool_choice)!r}")
    if tool_choice in OPENAI_CHOICES:
        return tool_choice
    if tool_choice in names:
        return {"type": "function", "function": {"name": tool_choice}}
    raise ValueError(f"tool_choice {tool_choice!r} is neither 'auto', 'none', 'required', "
                     f"'any' nor a bound tool's name ({names})")
