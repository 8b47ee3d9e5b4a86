"""OpenAI request shapes: parse and validate `/v1/completions` and `/v1/chat/completions`.

Each parser turns a JSON body into a typed request or raises ApiError naming the
field. Unknown fields are ignored; fields whose meaning the server cannot honour
(logprobs, tools, echo, ...) are refused rather than silently dropped. Sampling follows
vLLM: its extensions (top_k, min_tokens, repetition_penalty, ...) are read too.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from parrot.engine.sampling_params import SamplingParams
from parrot.server.errors import ApiError
from parrot.server.validation import Fields, is_token_list

MAX_STOP_STRINGS = 16
MAX_PROMPTS = 64
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
UNSUPPORTED = ("echo", "suffix", "logit_bias", "top_logprobs", "tools", "functions")


@dataclass(frozen=True)
class GenerationOptions:
    """What both endpoints share: model, choices, streaming and sampling."""

    model: str | None
    n: int
    stream: bool
    include_usage: bool
    max_tokens: int | None  # None: the endpoint's default
    max_tokens_field: str  # the field max_tokens came from, for error messages
    sampling: SamplingParams  # max_tokens there is a placeholder until the prompt is known

    def sampling_for(self, max_tokens: int, choice: int) -> SamplingParams:
        """Choice `choice`'s settings; seeded choices differ but stay reproducible."""
        seed = self.sampling.seed
        seed = None if seed is None else seed + choice
        try:
            return replace(self.sampling, max_tokens=max_tokens, seed=seed)
        except ValueError as e:  # min_tokens beyond a clamped max_tokens
            raise _sampling_error(e) from None


@dataclass(frozen=True)
class CompletionRequest:
    options: GenerationOptions
    prompts: list[str | list[int]]


@dataclass(frozen=True)
class ChatRequest:
    options: GenerationOptions
    messages: list[dict[str, str]]


def parse_completion_request(body: dict[str, Any], *, max_n: int) -> CompletionRequest:
    fields = Fields(body)
    fields.reject_truthy("logprobs")
    return CompletionRequest(_parse_options(fields, "max_tokens", max_n), _parse_prompts(body))


def parse_chat_request(body: dict[str, Any], *, max_n: int) -> ChatRequest:
    fields = Fields(body)
    fields.reject_truthy("logprobs")
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    return ChatRequest(_parse_options(fields, tokens_field, max_n), _parse_messages(body))


def _parse_options(f: Fields, tokens_field: str, max_n: int) -> GenerationOptions:
    for name in UNSUPPORTED:
        f.reject_truthy(name)
    _check_response_format(f)
    n = f.integer("n", 1, lo=1, hi=max_n)
    if f.integer("best_of", n, lo=1) != n:
        raise ApiError("'best_of' must equal 'n' (ranking choices is not supported)",
                       param="best_of")
    stream = f.boolean("stream")
    include_usage = Fields(f.object("stream_options")).boolean("include_usage")
    max_tokens = f.integer(tokens_field, lo=1)
    return GenerationOptions(f.string("model"), n, stream, include_usage, max_tokens,
                             tokens_field, _parse_sampling(f, max_tokens or 1))


def _parse_sampling(f: Fields, max_tokens: int) -> SamplingParams:
    top_p = f.number("top_p", 1.0, hi=1.0)
    if top_p <= 0.0:
        raise ApiError(f"'top_p' must be in (0, 1], got {top_p}", param="top_p")
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=f.number("temperature", 1.0, lo=0.0, hi=2.0),
            top_p=top_p,
            top_k=max(0, f.integer("top_k", 0, lo=-1)),  # -1 (vLLM) and 0 both mean off
            seed=f.integer("seed"),
            stop=f.str_list("stop", max_items=MAX_STOP_STRINGS),
            stop_token_ids=f.int_list("stop_token_ids"),
            ignore_eos=f.boolean("ignore_eos"),
            min_tokens=f.integer("min_tokens", 0, lo=0),
            presence_penalty=f.number("presence_penalty", 0.0),  # ranges: SamplingParams owns them
            frequency_penalty=f.number("frequency_penalty", 0.0),
            repetition_penalty=f.number("repetition_penalty", 1.0),  # vLLM's extension
        )
    except ValueError as e:
        raise _sampling_error(e) from None


def _sampling_error(e: ValueError) -> ApiError:
    param = str(e).split(" ", 1)[0]  # SamplingParams names the field first
    return ApiError(str(e), param=param)


def _check_response_format(f: Fields) -> None:
    kind = f.object("response_format").get("type", "text")
    if kind != "text":
        raise ApiError(f"response_format type {kind!r} is not supported (only 'text')",
                       param="response_format")


def _parse_prompts(body: dict[str, Any]) -> list[str | list[int]]:
    prompt = body.get("prompt")
    if isinstance(prompt, str) or (is_token_list(prompt) and prompt):
        return [prompt]
    if isinstance(prompt, list) and prompt and len(prompt) <= MAX_PROMPTS and all(
            isinstance(p, str) or (is_token_list(p) and p) for p in prompt):
        return prompt
    if isinstance(prompt, list) and len(prompt) > MAX_PROMPTS:
        raise ApiError(f"'prompt' may hold at most {MAX_PROMPTS} prompts", param="prompt")
    raise ApiError("'prompt' must be a string, a list of token ids, or a list of either "
                   "(non-empty)", param="prompt")


def _parse_messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    return [_parse_message(m, i) for i, m in enumerate(messages)]


def _parse_message(message: Any, i: int) -> dict[str, str]:
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise ApiError(f"'{param}' must be an object", param=param)
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise ApiError(f"'{param}.role' must be one of {', '.join(CHAT_ROLES)}, got {role!r}",
                       param=f"{param}.role")
    return {"role": role, "content": _message_text(message.get("content"), f"{param}.content")}


def _message_text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(f"'{param}' must be a string or a list of text parts", param=param)
