"""OpenAI request bodies as pydantic models: `/v1/completions` and `/v1/chat/completions`.

Types and ranges only; what needs the served model (the prompt's length, the vocabulary,
grammars) is checked by openai_api.py with it. Unknown fields are ignored; the few whose
meaning the server cannot honour are refused (openai_protocol.UNSUPPORTED). vLLM's
extensions are read too: top_k, min_tokens, repetition_penalty, ..., `structured_outputs`
and the older `guided_*`. The same models give /openapi.json its request schemas.
"""
from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field

from parrot.engine.sampling_params import MAX_LOGPROBS
from parrot.manager.fields import (Body, Boolean, Number, String, TokenId, integer,
                                   one_error)
from parrot.manager.native_bodies import SamplingFields

MAX_PROMPTS = 64
MAX_TOOLS = 128
OPENAI_MAX_TEMPERATURE = 2.0  # OpenAI's range; the engine allows more (native API)
CHAT_ROLES = ("system", "developer", "user", "assistant", "tool")

Tokens = Annotated[list[Annotated[TokenId, Field(ge=0)]], Field(min_length=1)]
Prompt = Annotated[
    String | Tokens | Annotated[list[String | Tokens], Field(min_length=1, max_length=MAX_PROMPTS)],
    one_error(f"must be a string, a list of token ids, or a list of 1 to {MAX_PROMPTS} of "
              "either (each non-empty)")]


class StreamOptions(Body):
    include_usage: Boolean | None = None


class JsonSchemaFormat(Body):
    name: String | None = None
    description: String | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: Boolean | None = None


class ResponseFormat(Body):
    type: Literal["text", "json_object", "json_schema"] = "text"
    json_schema: JsonSchemaFormat | None = None


class StructuredOutputs(Body):
    """vLLM's `structured_outputs`: one of these."""

    json_: dict[str, Any] | String | None = Field(None, alias="json")
    regex: String | None = None
    choice: list[String] | None = None
    grammar: String | None = None
    json_object: Boolean | None = None


class GenerationBody(SamplingFields):
    """Fields both endpoints read."""

    model: String | None = None
    n: integer(ge=1) | None = Field(None, description="at most the server's --max-n")
    best_of: integer(ge=1) | None = Field(None, description="must equal n")
    stream: Boolean | None = None
    stream_options: StreamOptions | None = None
    max_tokens: integer(ge=1) | None = None
    temperature: Number | None = Field(None, ge=0, le=OPENAI_MAX_TEMPERATURE)
    top_k: integer(ge=-1) | None = Field(None, description="-1 or 0: off")
    response_format: ResponseFormat | None = None
    structured_outputs: StructuredOutputs | None = None
    guided_json: Annotated[dict[str, Any] | String,
                           one_error("must be a JSON schema")] | None = None
    guided_regex: String | None = None
    guided_choice: list[String] | None = None
    guided_grammar: String | None = None


class CompletionBody(GenerationBody):
    prompt: Prompt
    logprobs: integer(ge=0, le=MAX_LOGPROBS) | None = None


class TextPart(Body):
    type: Literal["text"]
    text: String


def _json_object_text(text: str) -> str:
    try:
        value = json.loads(text or "{}")
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ValueError("must be a JSON object as a string")
    return text


class PastFunction(Body):
    name: String
    arguments: Annotated[String, AfterValidator(_json_object_text)] = "{}"


class PastToolCall(Body):
    id: String | None = None
    type: Literal["function"] = "function"
    function: PastFunction


Content = Annotated[String | list[TextPart],
                    one_error("must be a string or a list of text parts")]


class Message(Body):
    role: Literal[CHAT_ROLES]
    content: Content | None = None
    name: String | None = None
    tool_calls: list[PastToolCall] | None = Field(None, description="assistant messages")
    tool_call_id: String | None = Field(None, description="tool messages")

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class FunctionSpec(Body):
    name: Annotated[String, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
    description: String | None = None
    parameters: dict[str, Any] | None = Field(None, description="JSON schema of an object")
    strict: Boolean | None = None


class ToolSpec(Body):
    type: Literal["function"] = "function"
    function: FunctionSpec


class NamedFunction(Body):
    name: String


class NamedToolChoice(Body):
    type: Literal["function"] = "function"
    function: NamedFunction


ToolChoice = Annotated[Literal["none", "auto", "required"] | NamedToolChoice, one_error(
    "must be 'none', 'auto', 'required' or {\"type\": \"function\", \"function\": "
    "{\"name\": ...}}")]


class ChatBody(GenerationBody):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: integer(ge=1) | None = Field(None, description="over max_tokens")
    logprobs: Boolean | None = None
    top_logprobs: integer(ge=0, le=MAX_LOGPROBS) | None = None
    tools: Annotated[list[ToolSpec], Field(max_length=MAX_TOOLS)] | None = None
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: Boolean | None = None


class RenderChatBody(Body):
    """`/v1/parrot/render_chat`: one conversation, or several."""

    messages: Annotated[list[Message], Field(min_length=1)] | None = None
    conversations: Annotated[list[Annotated[list[Message], Field(min_length=1)]],
                             Field(min_length=1, max_length=256)] | None = None
