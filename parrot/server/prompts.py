"""Turn validated prompts into token ids, and fit max_tokens into the model's context."""
from __future__ import annotations

import json
from typing import Any

from parrot.server.errors import ApiError
from parrot.server.tools import ToolSet, render_call

TOOL_PROMPT = """# Tools

You may call one or more functions to assist with the user query. The functions, as JSON \
schemas:
<tools>
{tools}
</tools>

To call a function, answer with its name and arguments as a JSON object inside \
<tool_call></tool_call> tags, one block per call:
<tool_call>
{{"name": <function-name>, "arguments": <arguments-json-object>}}
</tool_call>"""


def completion_token_ids(tokenizer: Any, vocab_size: int, prompt: str | list[int]) -> list[int]:
    """Token ids of a completions prompt (a string, or ids checked against the vocabulary)."""
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=True)
    else:
        check_token_ids(vocab_size, prompt, "prompt")
        ids = list(prompt)
    if not ids:
        raise ApiError("'prompt' must not be empty", param="prompt")
    return ids


def check_token_ids(vocab_size: int, ids: list[int], param: str) -> None:
    """400 naming `param` for an id the engine would refuse: the one vocabulary is the
    engine's (`EngineClient.vocab_size`, the model's, which may differ from the tokenizer's
    length), so the server and the engine draw the same line."""
    bad = next((t for t in ids if not 0 <= t < vocab_size), None)
    if bad is not None:
        raise ApiError(f"token id {bad} in '{param}' is outside the vocabulary "
                       f"(size {vocab_size})", param=param)


def chat_token_ids(tokenizer: Any, messages: list[dict[str, Any]],
                   tools: ToolSet | None = None) -> list[int]:
    return tokenizer.encode(chat_prompt_text(tokenizer, messages, tools),
                            add_special_tokens=False)


def chat_prompt_text(tokenizer: Any, messages: list[dict[str, Any]],
                     tools: ToolSet | None = None) -> str:
    """Messages rendered by the tokenizer's chat template, ending where the assistant speaks.

    A template that knows tools gets them, and the history's calls, in Hugging Face's form;
    any other gets them as text: TOOL_PROMPT in the system message, past calls as
    `<tool_call>` blocks, tool results as user turns in `<tool_response>` tags."""
    extra: dict[str, Any] = {}
    if template_knows_tools(tokenizer):
        messages = [_hf_message(m) for m in messages]
        if tools is not None and tools.active:
            extra["tools"] = [t.spec() for t in tools.tools]
    else:
        messages = _text_messages(messages, tools if tools is not None and tools.active else None)
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False,
                                             add_generation_prompt=True, **extra)
    except Exception as e:  # jinja raises for message orders a template refuses
        raise ApiError(f"'messages' cannot be rendered by the chat template: {e}",
                       param="messages") from None


def template_knows_tools(tokenizer: Any) -> bool:
    template = getattr(tokenizer, "chat_template", None)
    return isinstance(template, str) and "tools" in template


def _hf_message(m: dict[str, Any]) -> dict[str, Any]:
    out = dict(m)
    if "tool_calls" in m:
        out["tool_calls"] = [{"id": c["id"], "type": "function", "function": {
            "name": c["name"], "arguments": c["arguments"]}} for c in m["tool_calls"]]
    return out


def _text_messages(messages: list[dict[str, Any]], tools: ToolSet | None) -> list[dict[str, str]]:
    out = [_text_message(m) for m in messages]
    if tools is not None:
        listing = "\n".join(json.dumps(t.spec()) for t in tools.tools)
        prompt = TOOL_PROMPT.format(tools=listing)
        if out[0]["role"] == "system":
            out[0] = {"role": "system", "content": f"{out[0]['content']}\n\n{prompt}"}
        else:
            out.insert(0, {"role": "system", "content": prompt})
    return out


def _text_message(m: dict[str, Any]) -> dict[str, str]:
    if m["role"] == "tool":
        return {"role": "user", "content": f"<tool_response>\n{m['content']}\n</tool_response>"}
    calls = [render_call(c["name"], c["arguments"]) for c in m.get("tool_calls", ())]
    return {"role": m["role"], "content": "\n".join(filter(None, [m["content"], *calls]))}


def fit_max_tokens(requested: int | None, prompt_len: int, max_model_len: int, *,
                   default: int | None, prompt_param: str, tokens_param: str) -> int:
    """The max_tokens to generate; 400 when prompt plus request exceed the context."""
    room = max_model_len - prompt_len
    if room < 1:
        raise ApiError(f"This model's maximum context length is {max_model_len} tokens, but "
                       f"the {prompt_param} has {prompt_len} tokens, leaving no room to "
                       "generate. Please shorten it.", param=prompt_param,
                       code="context_length_exceeded")
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise ApiError(f"This model's maximum context length is {max_model_len} tokens. "
                       f"However, you requested {prompt_len + requested} tokens ({prompt_len} "
                       f"in the {prompt_param}, {requested} for the completion). Please reduce "
                       f"the {prompt_param} or '{tokens_param}'.", param=tokens_param,
                       code="context_length_exceeded")
    return requested
