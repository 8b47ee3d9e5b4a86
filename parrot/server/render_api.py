"""`POST /v1/parrot/render_chat`: the prompt text `/v1/chat/completions` builds from messages.

Clients that compile chat prompts into Semantic-Variable templates (the LangChain compiler)
need the exact text the chat endpoint would feed the model, rendered by this server's
tokenizer chat template. Body: `{"conversations": [[message, ...], ...]}` (or one
`{"messages": [...]}`), messages as in the chat endpoint. Answer: `{"prompts": [text, ...]}`
(or `{"prompt": text}`), each ending where the assistant speaks.
"""
from __future__ import annotations

from aiohttp import web

from parrot.server.errors import ApiError
from parrot.server.keys import ENGINES
from parrot.server.openai_models import RenderChatBody
from parrot.server.openai_protocol import message_dict, validated
from parrot.server.prompts import chat_prompt_text
from parrot.server.validation import read_json_object


async def render_chat(request: web.Request) -> web.Response:
    """Messages are validated exactly as the chat endpoint validates them."""
    body = validated(RenderChatBody, await read_json_object(request))
    tokenizer = request.app[ENGINES][0].tokenizer
    if body.conversations is not None:
        return web.json_response({"prompts": [
            chat_prompt_text(tokenizer, [message_dict(m) for m in c])
            for c in body.conversations]})
    if body.messages is None:
        raise ApiError("give 'messages' or 'conversations'", param="messages")
    return web.json_response({"prompt": chat_prompt_text(
        tokenizer, [message_dict(m) for m in body.messages])})
