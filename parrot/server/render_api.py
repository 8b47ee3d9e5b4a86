"""`POST /v1/parrot/render_chat`: the prompt text `/v1/chat/completions` builds from messages.

Clients that compile chat prompts into Semantic-Variable templates (the LangChain compiler)
need the exact text the chat endpoint would feed the model, rendered by this server's
tokenizer chat template. Body: `{"conversations": [[message, ...], ...]}` (or one
`{"messages": [...]}`), messages as in the chat endpoint. Answer: `{"prompts": [text, ...]}`
(or `{"prompt": text}`), each ending where the assistant speaks.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from parrot.server.errors import ApiError
from parrot.server.keys import ENGINES
from parrot.server.openai_protocol import parse_chat_request
from parrot.server.prompts import chat_prompt_text
from parrot.server.validation import read_json_object

MAX_CONVERSATIONS = 256


async def render_chat(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    tokenizer = request.app[ENGINES][0].tokenizer
    if "conversations" not in body:
        return web.json_response({"prompt": chat_prompt_text(tokenizer, _messages(body))})
    conversations = body["conversations"]
    if not isinstance(conversations, list) or not 0 < len(conversations) <= MAX_CONVERSATIONS:
        raise ApiError(f"'conversations' must be a list of 1 to {MAX_CONVERSATIONS} message "
                       "lists", param="conversations")
    prompts = [chat_prompt_text(tokenizer, _messages({"messages": c}, f"conversations[{i}]"))
               for i, c in enumerate(conversations)]
    return web.json_response({"prompts": prompts})


def _messages(body: dict[str, Any], where: str | None = None) -> list[dict[str, str]]:
    """Messages validated exactly as the chat endpoint validates them."""
    try:
        return parse_chat_request(body, max_n=1).messages
    except ApiError as e:
        if where is not None:
            e.message = f"{where}: {e.message}"
            e.args = (e.message,)
        raise
