"""What the server answers, as pydantic models: OpenAI responses and stream chunks, the
native API's answers, errors. The handlers build plain dicts (fast); these models describe
them in /openapi.json, and the tests validate real answers against them (every model is
closed: a field the code adds without adding it here fails them).
"""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ---- errors ----------------------------------------------------------------------------------
class ErrorDetail(Answer):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class Error(Answer):
    error: ErrorDetail


# ---- OpenAI ------------------------------------------------------------------------------
class PromptTokensDetails(Answer):
    cached_tokens: int


class Usage(Answer):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptTokensDetails


class CompletionLogprobs(Answer):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None
    text_offset: list[int]


class TopLogprob(Answer):
    token: str
    logprob: float
    bytes: list[int] | None


class TokenLogprob(TopLogprob):
    top_logprobs: list[TopLogprob]


class ChatLogprobs(Answer):
    content: list[TokenLogprob]


FinishReason = Literal["stop", "length", "tool_calls"]


class CompletionChoice(Answer):
    index: int
    text: str
    logprobs: CompletionLogprobs | None
    finish_reason: FinishReason | None


class _Envelope(Answer):
    id: str
    created: int
    model: str


class Completion(_Envelope):
    object: Literal["text_completion"]
    choices: list[CompletionChoice]
    usage: Usage | None = Field(None, description="in a stream: only its last chunk, with "
                                "stream_options.include_usage")


class CallFunction(Answer):
    name: str
    arguments: str = Field(description="a JSON object, as text")


class ToolCall(Answer):
    id: str
    type: Literal["function"]
    function: CallFunction


class StreamedToolCall(ToolCall):
    index: int


class AssistantMessage(Answer):
    role: Literal["assistant"]
    content: str | None
    tool_calls: list[ToolCall] | None = None


class ChatChoice(Answer):
    index: int
    message: AssistantMessage
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletion(_Envelope):
    object: Literal["chat.completion"]
    choices: list[ChatChoice]
    usage: Usage


class ChatDelta(Answer):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[StreamedToolCall] | None = None


class ChatChunkChoice(Answer):
    index: int
    delta: ChatDelta
    logprobs: ChatLogprobs | None
    finish_reason: FinishReason | None


class ChatCompletionChunk(_Envelope):
    """One `data:` event of a chat stream (the stream ends with `data: [DONE]`)."""

    object: Literal["chat.completion.chunk"]
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class ModelCard(Answer):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    root: str
    max_model_len: int


class ModelList(Answer):
    object: Literal["list"]
    data: list[ModelCard]


class RenderedChat(Answer):
    prompt: str | None = None
    prompts: list[str] | None = None


# ---- native ------------------------------------------------------------------------------
class SessionOpened(Answer):
    session_id: str
    token: str
    idle_timeout: float
    id: str | None = Field(None, description="with a get: the variable's id and value")
    value: str | None = None


class SessionClosed(Answer):
    session_id: str
    closed: Literal[True]


class VariableState(BaseModel):
    """A variable as the graph reports it (more fields may follow)."""

    id: str


class VariablesAdded(Answer):
    variables: list[VariableState]


class CallState(BaseModel):
    """A call as the graph reports it (more fields may follow)."""

    id: str


class CallsAdded(Answer):
    calls: list[CallState]


class VariableSet(Answer):
    id: str
    ready: Literal[True]


class VariableValue(Answer):
    id: str
    value: str


class SessionGraph(BaseModel):
    """The session's variables and calls (the dashboard's view of them)."""

    variables: list[Any]
    calls: list[Any]


class Health(Answer):
    status: Literal["ok"]
