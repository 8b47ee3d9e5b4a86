"""OpenAI request shapes: parse and validate `/v1/completions` and `/v1/chat/completions`.

Each parser turns a JSON body into a typed request or raises ApiError naming the
field. Unknown fields are ignored; fields whose meaning the server cannot honour
(echo, suffix, logit_bias, functions) are refused rather than silently dropped. Sampling
follows vLLM: its extensions (top_k, min_tokens, repetition_penalty, ...) are read too, and
so are its structured-output fields (`structured_outputs`, and the older `guided_*`) next
to OpenAI's `response_format`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

from parrot.engine.sampling_params import MAX_LOGPROBS, Constraint, SamplingParams
from parrot.server.errors import ApiError
from parrot.server.tools import ToolSet, parse_tool_set
from parrot.server.validation import Fields, is_token_list

MAX_STOP_STRINGS = 16
MAX_PROMPTS = 64
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")
UNSUPPORTED = ("echo", "suffix", "logit_bias", "functions")
GUIDED = {"guided_json": "json_schema", "guided_regex": "regex", "guided_choice": "choice",
          "guided_grammar": "grammar"}  # vLLM's older names
STRUCTURED = {"json": "json_schema", "regex": "regex", "choice": "choice",
              "grammar": "grammar"}  # vLLM's `structured_outputs` keys


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
    constraint_param: str | None = None  # the field sampling.constraint came from

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
    messages: list[dict[str, Any]]  # role, content; tool_calls / tool_call_id where given
    tools: ToolSet = field(default_factory=ToolSet)


def parse_completion_request(body: dict[str, Any], *, max_n: int) -> CompletionRequest:
    fields = Fields(body)
    logprobs = fields.integer("logprobs", lo=0, hi=MAX_LOGPROBS)
    options = _parse_options(fields, "max_tokens", max_n, logprobs)
    return CompletionRequest(options, _parse_prompts(body))


def parse_chat_request(body: dict[str, Any], *, max_n: int) -> ChatRequest:
    fields = Fields(body)
    tokens_field = "max_completion_tokens" if body.get("max_completion_tokens") is not None \
        else "max_tokens"
    top = fields.integer("top_logprobs", lo=0, hi=MAX_LOGPROBS)
    if top is not None and not fields.boolean("logprobs"):
        raise ApiError("'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
    logprobs = (top or 0) if fields.boolean("logprobs") else None
    options = _parse_options(fields, tokens_field, max_n, logprobs)
    tools = parse_tool_set(body)
    if tools.constraint() is not None:
        if options.constraint_param is not None:
            raise ApiError(f"'{options.constraint_param}' cannot be combined with a required "
                           "tool call ('tool_choice')", param=options.constraint_param)
        options = replace(options, constraint_param="tools",
                          sampling=replace(options.sampling, constraint=tools.constraint()))
    return ChatRequest(options, _parse_messages(body), tools)


def _parse_options(f: Fields, tokens_field: str, max_n: int,
                   logprobs: int | None) -> GenerationOptions:
    for name in UNSUPPORTED:
        f.reject_truthy(name)
    constraint_param, constraint = _parse_constraint(f)
    n = f.integer("n", 1, lo=1, hi=max_n)
    if f.integer("best_of", n, lo=1) != n:
        raise ApiError("'best_of' must equal 'n' (ranking choices is not supported)",
                       param="best_of")
    stream = f.boolean("stream")
    include_usage = Fields(f.object("stream_options")).boolean("include_usage")
    max_tokens = f.integer(tokens_field, lo=1)
    sampling = _parse_sampling(f, max_tokens or 1, constraint, logprobs)
    return GenerationOptions(f.string("model"), n, stream, include_usage, max_tokens,
                             tokens_field, sampling, constraint_param)


def _parse_sampling(f: Fields, max_tokens: int, constraint: Constraint | None,
                    logprobs: int | None) -> SamplingParams:
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
            constraint=constraint,
            logprobs=logprobs,
        )
    except ValueError as e:
        raise _sampling_error(e) from None


def _sampling_error(e: ValueError) -> ApiError:
    param = str(e).split(" ", 1)[0]  # SamplingParams names the field first
    return ApiError(str(e), param=param)


def _parse_constraint(f: Fields) -> tuple[str | None, Constraint | None]:
    """The one output constraint a request may carry, and the field it came from."""
    found = [c for c in (_response_format(f), _structured_outputs(f), *_guided(f)) if c]
    if len(found) > 1:
        names = ", ".join(f"'{param}'" for param, _ in found)
        raise ApiError(f"give at most one output constraint, got {names}", param=found[1][0])
    return found[0] if found else (None, None)


def _response_format(f: Fields) -> tuple[str, Constraint] | None:
    fmt = f.object("response_format")
    kind = fmt.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return "response_format", Constraint("json_object")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise ApiError("'response_format.json_schema.schema' must be a JSON schema object",
                           param="response_format.json_schema.schema")
        return "response_format", Constraint("json_schema", json.dumps(schema))
    raise ApiError(f"'response_format.type' must be 'text', 'json_object' or 'json_schema', "
                   f"got {kind!r:.40}", param="response_format.type")


def _structured_outputs(f: Fields) -> tuple[str, Constraint] | None:
    given = {k: v for k, v in f.object("structured_outputs").items()
             if v is not None and v is not False}
    if not given:
        return None
    if len(given) > 1:
        raise ApiError("'structured_outputs' takes one of json, regex, choice, grammar, "
                       "json_object", param="structured_outputs")
    (key, value), = given.items()
    if key == "json_object" and value is True:
        return "structured_outputs", Constraint("json_object")
    if key not in STRUCTURED:
        raise ApiError(f"'structured_outputs.{key}' is not supported", param="structured_outputs")
    return f"structured_outputs.{key}", _constraint(STRUCTURED[key], value,
                                                     f"structured_outputs.{key}")


def _guided(f: Fields) -> list[tuple[str, Constraint]]:
    return [(name, _constraint(kind, f.body[name], name))
            for name, kind in GUIDED.items() if f.body.get(name) is not None]


def _constraint(kind: str, value: Any, param: str) -> Constraint:
    if kind == "json_schema" and isinstance(value, (dict, str)):
        return Constraint(kind, value if isinstance(value, str) else json.dumps(value))
    if kind == "choice" and isinstance(value, list) and all(isinstance(c, str) for c in value):
        return Constraint(kind, json.dumps(value))
    if kind in ("regex", "grammar") and isinstance(value, str):
        return Constraint(kind, value)
    expected = {"json_schema": "a JSON schema", "choice": "a list of strings"}.get(kind, "a string")
    raise ApiError(f"'{param}' must be {expected}", param=param)


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


def _parse_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty list", param="messages")
    return [_parse_message(m, i) for i, m in enumerate(messages)]


def _parse_message(message: Any, i: int) -> dict[str, Any]:
    param = f"messages[{i}]"
    if not isinstance(message, dict):
        raise ApiError(f"'{param}' must be an object", param=param)
    role = message.get("role")
    if role not in CHAT_ROLES:
        raise ApiError(f"'{param}.role' must be one of {', '.join(CHAT_ROLES)}, got {role!r}",
                       param=f"{param}.role")
    parsed = {"role": role, "content": _message_text(message.get("content"), f"{param}.content")}
    if role == "assistant" and message.get("tool_calls"):
        parsed["tool_calls"] = _parse_past_calls(message["tool_calls"], f"{param}.tool_calls")
    if role == "tool" and message.get("tool_call_id") is not None:
        if not isinstance(message["tool_call_id"], str):
            raise ApiError(f"'{param}.tool_call_id' must be a string",
                           param=f"{param}.tool_call_id")
        parsed["tool_call_id"] = message["tool_call_id"]
    return parsed


def _parse_past_calls(calls: Any, param: str) -> list[dict[str, Any]]:
    """An assistant message's calls: id, name, and arguments as a JSON object."""
    if not isinstance(calls, list):
        raise ApiError(f"'{param}' must be a list", param=param)
    parsed = []
    for j, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        if not isinstance(name, str):
            raise ApiError(f"'{param}[{j}].function.name' must be a string",
                           param=f"{param}[{j}].function.name")
        try:
            arguments = json.loads(fn.get("arguments") or "{}")
        except (TypeError, json.JSONDecodeError):
            arguments = None
        if not isinstance(arguments, dict):
            raise ApiError(f"'{param}[{j}].function.arguments' must be a JSON object as a "
                           "string", param=f"{param}[{j}].function.arguments")
        parsed.append({"id": str(call.get("id") or f"call_{j}"), "name": name,
                       "arguments": arguments})
    return parsed


def _message_text(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            for p in content):
        return "".join(p["text"] for p in content)
    raise ApiError(f"'{param}' must be a string or a list of text parts", param=param)
