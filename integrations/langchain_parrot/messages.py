"""LangChain messages to OpenAI chat messages, and OpenAI usage to LangChain usage metadata."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.messages import (AIMessage, BaseMessage, ChatMessage, HumanMessage,
                                     SystemMessage, ToolMessage, UsageMetadata)

ROLES: dict[type, str] = {SystemMessage: "system", HumanMessage: "user",
                          AIMessage: "assistant", ToolMessage: "tool"}


def to_openai_messages(messages: Sequence[BaseMessage]) -> list[dict[str, str]]:
    """`{"role", "content"}` dicts; text content only (the served models read text)."""
    return [{"role": _role(m), "content": message_text(m)} for m in messages]


def message_text(message: BaseMessage) -> str:
    """The message's text; refuses images, audio and other non-text blocks."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = []
    for block in content:
        if isinstance(block, str):
            parts.append(block)
        elif isinstance(block, dict) and block.get("type") == "text":
            parts.append(block.get("text", ""))
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
