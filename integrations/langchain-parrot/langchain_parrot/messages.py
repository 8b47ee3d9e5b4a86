"""LangChain messages to OpenAI chat messages, and OpenAI usage to LangChain usage metadata."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (AIMessage, BaseMessage, ChatMessage, HumanMessage,
                                     SystemMessage, ToolMessage, UsageMetadata)

ROLES: dict[type, str] = {SystemMessage: "system", HumanMessage: "user",
                          AIMessage: "assistant", ToolMessage: "tool"}


# Content blocks that repeat a message's `tool_calls` (Anthropic's `tool_use`, v1 blocks).
TOOL_CALL_BLOCKS = frozenset({"tool_use", "tool_call", "tool_call_chunk", "invalid_tool_call",
                              "server_tool_call"})


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, Any]]:
    """`{"role", "content"}` dicts; text content only (the served models read text).

    An assistant message's tool calls travel as OpenAI `tool_calls` (its content may then be
    null); a `ToolMessage` as `{"role": "tool", "tool_call_id", "content"}`.
    """
    return [_openai_message(m) for m in messages]


def _openai_message(message: BaseMessage) -> dict[str, Any]:
    entry: dict[str, Any] = {"role": _role(message), "content": message_text(message)}
    if isinstance(message, AIMessage):
        tool_calls = openai_tool_calls(message)
        if tool_calls:
            entry["tool_calls"] = tool_calls
            entry["content"] = entry["content"] or None
    elif isinstance(message, ToolMessage):
        entry["tool_call_id"] = message.tool_call_id
    return entry


def openai_tool_calls(message: AIMessage) -> list[dict[str, Any]]:
    """The message's (valid and invalid) tool calls in the OpenAI shape, arguments as JSON."""
    calls = [(c["id"], c["name"], json.dumps(c["args"], ensure_ascii=False))
             for c in message.tool_calls]
    calls += [(c["id"], c["name"], c["args"] or "") for c in message.invalid_tool_calls
              if c.get("name")]
    return [{"id": call_id, "type": "function", "function": {"name": name, "arguments": args}}
            for call_id, name, args in calls]


def message_text(message: BaseMessage) -> str:
    """The message's text; refuses images, audio and other non-text blocks (blocks that
    repeat the message's tool calls are left to `tool_calls`)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
        elif isinstance(block, dict) and block.get("type") in TOOL_CALL_BLOCKS:
            continue
        else:
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise ValueError(f"Parrot serves text-only models: cannot send a {kind!r} content "
                             "block")
    return "".join(parts)


def _role(message: BaseMessage) -> str:
    if isinstance(message, ChatMessage):
        return message.role
    for cls, role in ROLES.items():
        if isinstance(message, cls):
            return role
    raise ValueError(f"cannot send a {type(message).__name__} to a chat model")


def usage_metadata(usage: dict[str, Any] | None) -> UsageMetadata | None:
    """OpenAI `usage` as LangChain's `UsageMetadata` (cached prompt tokens as cache_read)."""
    if not usage:
        return None
    input_tokens = int(usage.get("prompt_tokens", 0))
    output_tokens = int(usage.get("completion_tokens", 0))
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    metadata = UsageMetadata(input_tokens=input_tokens, output_tokens=output_tokens,
                             total_tokens=int(usage.get("total_tokens",
                                                        input_tokens + output_tokens)))
    if cached is not None:
        metadata["input_token_details"] = {"cache_read": int(cached)}
    return metadata
