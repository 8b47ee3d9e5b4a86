"""OpenAI requests: a validated body (openai_models.py) -> the typed request a handler runs.

`parse_completion_request` / `parse_chat_request` raise ApiError naming the field. Fields
whose meaning the server cannot honour (echo, suffix, logit_bias, functions) are refused
rather than silently dropped. Each choice's `SamplingParams` is built once, by
`GenerationOptions.sampling_for`, when the prompt's room for max_tokens is known.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ValidationError

from parrot.engine.sampling_params import Constraint, SamplingParams
from parrot.manager.fields import describe
from parrot.server.errors import ApiError
from parrot.server.openai_models import (ChatBody, CompletionBody, GenerationBody, Message,
                                         ResponseFormat, StructuredOutputs)
from parrot.server.tools import ToolSet, parse_tool_set

UNSUPPORTED = ("echo", "suffix", "logit_bias", "functions")
GUIDED = {"guided_json": "json_schema", "guided_regex": "regex", "guided_choice": "choice",
          "guided_grammar": "grammar"}  # vLLM's older names
STRUCTURED = {"json_": "json_schema", "regex": "regex", "choice": "choice",
              "grammar": "grammar"}  # vLLM's `structured_outputs` keys (json is json_ here)
_SETTINGS = ("temperature", "top_p", "top_k", "seed", "stop", "stop_token_ids", "ignore_eos",
             "min_tokens", "presence_penalty", "frequency_penalty", "repetition_penalty")
OPENAI_DEFAULTS = {"temperature": 1.0}  # OpenAI samples by default; the engine is greedy


@dataclass(frozen=True)
class GenerationOptions:
    """What both endpoints share: model, choices, streaming and sampling."""

    model: str | None
    n: int
    stream: bool
    include_usage: bool
    max_tokens: int | None  # None: the endpoint's default
    max_tokens_field: str  # the field max_tokens came from, for error messages
    settings: dict[str, Any]  # SamplingParams fields but max_tokens, validated
    constraint: Constraint | None = None
    constraint_param: str | None = None  # the field the constraint came from
    logprobs: int | None = None

    def sampling_for(self, max_tokens: int, choice: int) -> SamplingParams:
        """Choice `choice`'s settings; seeded choices differ but stay reproducible. Raises
        ApiError for what lies between fields (min_tokens beyond a clamped max_tokens)."""
        seed = self.settings.get("seed")
        try:
            return SamplingParams(**{**self.settings, "seed": None if seed is None
                                     else seed + choice}, max_tokens=max_tokens,
                                  constraint=self.constraint, logprobs=self.logprobs)
        except ValueError as e:
            param = str(e).split(" ", 1)[0]  # SamplingParams names the field first
            raise ApiError(str(e), param=param) from None


@dataclass(frozen=True)
class CompletionRequest:
    options: GenerationOptions
    prompts: list[str | list[int]]


@dataclass(frozen=True)
class ChatRequest:
    options: GenerationOptions
    messages: list[dict[str, Any]]  # role, content; tool_calls / tool_call_id where given
    tools: ToolSet = field(default_factory=ToolSet)


def validated(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """`body` as `model`, or an ApiError naming the first bad field."""
    try:
        return model.model_validate(body)
    except ValidationError as e:
        message, param = describe(e)
        raise ApiError(message, param=param or None) from None


def parse_completion_request(body: dict[str, Any], *, max_n: int) -> CompletionRequest:
    req = validated(CompletionBody, body)
    options = _options(body, req, "max_tokens", max_n, req.logprobs)
    many = isinstance(req.prompt, list) and isinstance(req.prompt[0], (str, list))
    prompts = req.prompt if many else [req.prompt]
    return CompletionRequest(options, prompts)


def parse_chat_request(body: dict[str, Any], *, max_n: int) -> ChatRequest:
    req = validated(ChatBody, body)
    tokens_field = "max_completion_tokens" if req.max_completion_tokens is not None \
        else "max_tokens"
    if req.top_logprobs is not None and not req.logprobs:
        raise ApiError("'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
    logprobs = (req.top_logprobs or 0) if req.logprobs else None
    options = _options(body, req, tokens_field, max_n, logprobs)
    tools = parse_tool_set(req)
    if tools.constraint() is not None:
        if options.constraint_param is not None:
            raise ApiError(f"'{options.constraint_param}' cannot be combined with a required "
                           "tool call ('tool_choice')", param=options.constraint_param)
        options = GenerationOptions(**{**options.__dict__, "constraint": tools.constraint(),
                                       "constraint_param": "tools"})
    return ChatRequest(options, [message_dict(m) for m in req.messages], tools)


def message_dict(m: Message) -> dict[str, Any]:
    """A message as the prompt builders read it (prompts.py)."""
    parsed: dict[str, Any] = {"role": m.role, "content": m.text()}
    if m.role == "assistant" and m.tool_calls:
        parsed["tool_calls"] = [{"id": c.id or f"call_{j}", "name": c.function.name,
                                 "arguments": json.loads(c.function.arguments or "{}")}
                                for j, c in enumerate(m.tool_calls)]
    if m.role == "tool" and m.tool_call_id is not None:
        parsed["tool_call_id"] = m.tool_call_id
    return parsed


def _options(body: dict[str, Any], req: GenerationBody, tokens_field: str, max_n: int,
             logprobs: int | None) -> GenerationOptions:
    for name in UNSUPPORTED:
        if body.get(name):
            raise ApiError(f"'{name}' is not supported", param=name)
    n = 1 if req.n is None else req.n
    if n > max_n:
        raise ApiError(f"'n' must be <= {max_n}, got {n}", param="n")
    if req.best_of is not None and req.best_of != n:
        raise ApiError("'best_of' must equal 'n' (ranking choices is not supported)",
                       param="best_of")
    settings = {**OPENAI_DEFAULTS, **req.model_dump(include=set(_SETTINGS), exclude_none=True)}
    settings["top_k"] = max(0, settings.get("top_k", 0))  # -1 (vLLM) and 0 both mean off
    param, constraint = _constraint(req)
    include_usage = bool(req.stream_options and req.stream_options.include_usage)
    return GenerationOptions(req.model, n, bool(req.stream), include_usage,
                             getattr(req, tokens_field), tokens_field, settings, constraint,
                             param, logprobs)


def _constraint(req: GenerationBody) -> tuple[str | None, Constraint | None]:
    """The one output constraint a request may carry, and the field it came from."""
    found = [c for c in (_response_format(req.response_format),
                         _structured_outputs(req.structured_outputs), *_guided(req)) if c]
    if len(found) > 1:
        names = ", ".join(f"'{param}'" for param, _ in found)
        raise ApiError(f"give at most one output constraint, got {names}", param=found[1][0])
    return found[0] if found else (None, None)


def _response_format(fmt: ResponseFormat | None) -> tuple[str, Constraint] | None:
    if fmt is None or fmt.type == "text":
        return None
    if fmt.type == "json_object":
        return "response_format", Constraint("json_object")
    schema = fmt.json_schema.schema_ if fmt.json_schema is not None else None
    if schema is None:
        raise ApiError("'response_format.json_schema.schema' must be a JSON schema object",
                       param="response_format.json_schema.schema")
    return "response_format", Constraint("json_schema", json.dumps(schema))


def _structured_outputs(so: StructuredOutputs | None) -> tuple[str, Constraint] | None:
    given = {k: v for k, v in (so.__dict__ if so else {}).items()
             if v is not None and v is not False}
    if not given:
        return None
    if len(given) > 1:
        raise ApiError("'structured_outputs' takes one of json, regex, choice, grammar, "
                       "json_object", param="structured_outputs")
    (key, value), = given.items()
    if key == "json_object":
        return "structured_outputs", Constraint("json_object")
    name = f"structured_outputs.{key.rstrip('_')}"
    return name, _as_constraint(STRUCTURED[key], value)


def _guided(req: GenerationBody) -> list[tuple[str, Constraint]]:
    return [(name, _as_constraint(kind, getattr(req, name)))
            for name, kind in GUIDED.items() if getattr(req, name) is not None]


def _as_constraint(kind: str, value: Any) -> Constraint:
    if kind == "json_schema":
        return Constraint(kind, value if isinstance(value, str) else json.dumps(value))
    return Constraint(kind, json.dumps(value) if kind == "choice" else value)
