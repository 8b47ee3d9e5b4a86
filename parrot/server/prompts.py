"""Turn validated prompts into token ids, and fit max_tokens into the model's context."""
from __future__ import annotations

from typing import Any

from parrot.server.errors import ApiError


def completion_token_ids(tokenizer: Any, prompt: str | list[int]) -> list[int]:
    """Token ids of a completions prompt (a string, or ids checked against the vocabulary)."""
    if isinstance(prompt, str):
        ids = tokenizer.encode(prompt, add_special_tokens=True)
    else:
        check_token_ids(tokenizer, prompt, "prompt")
        ids = list(prompt)
    if not ids:
        raise ApiError("'prompt' must not be empty", param="prompt")
    return ids


def check_token_ids(tokenizer: Any, ids: list[int], param: str) -> None:
    """400 naming `param` for an id outside the vocabulary (it would fail the whole batch)."""
    if not ids:
        return
    vocab = len(tokenizer)
    bad = next((t for t in ids if t >= vocab), None)
    if bad is not None:
        raise ApiError(f"token id {bad} in '{param}' is outside the vocabulary (size {vocab})",
                       param=param)


def chat_token_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    return tokenizer.encode(chat_prompt_text(tokenizer, messages), add_special_tokens=False)


def chat_prompt_text(tokenizer: Any, messages: list[dict[str, str]]) -> str:
    """Messages rendered by the tokenizer's chat template, ending where the assistant speaks."""
    try:
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as e:  # jinja raises for message orders a template refuses
        raise ApiError(f"'messages' cannot be rendered by the chat template: {e}",
                       param="messages") from None


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
