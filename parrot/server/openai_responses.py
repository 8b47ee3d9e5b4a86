"""OpenAI response shapes: whole responses, stream chunks and usage."""
from __future__ import annotations

import time
import uuid
from typing import Any

from parrot.engine.sampling_params import GenerationChunk, TokenLogprobs
from parrot.server.logprobs import LogprobsRenderer
from parrot.server.tools import CallStream, ToolCall, ToolSet, split_calls


class Tally:
    """Text, logprobs, finish reason and usage of every choice of one request."""

    def __init__(self, num_choices: int, n: int) -> None:
        self.n = n
        self.texts = [""] * num_choices
        self.logprobs: list[list[TokenLogprobs]] = [[] for _ in range(num_choices)]
        self.finish_reasons: list[str | None] = [None] * num_choices
        self.prompt_tokens = self.cached_tokens = self.completion_tokens = 0

    def add(self, index: int, chunk: GenerationChunk,
            prompt_cached_tokens: int | None = None) -> None:
        """`prompt_cached_tokens`: the prompt's cache hits when it was filled once for its
        n choices (generation.py); otherwise the engine's usage of the choice says it."""
        self.texts[index] += chunk.text
        if chunk.logprobs:
            self.logprobs[index] += chunk.logprobs
        if chunk.finish_reason is not None:
            self.finish_reasons[index] = chunk.finish_reason
        if chunk.usage is not None:
            self.completion_tokens += chunk.usage.completion_tokens
            if index % self.n == 0:  # the prompt's own context; forks share its prompt
                self.prompt_tokens += chunk.usage.prompt_tokens
                self.cached_tokens += chunk.usage.cached_tokens \
                    if prompt_cached_tokens is None else prompt_cached_tokens

    def usage(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
        }


class _Shape:
    """Fields every response and chunk of one request carries."""

    id_prefix = ""
    object_name = ""
    chunk_object_name = ""

    def __init__(self, model: str, logprobs: LogprobsRenderer | None = None) -> None:
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model
        self.logprobs = logprobs  # None: the request asked for none

    def _envelope(self, object_name: str, choices: list[dict]) -> dict[str, Any]:
        return {"id": self.id, "object": object_name, "created": self.created,
                "model": self.model, "choices": choices}

    def opening_chunks(self, num_choices: int) -> list[dict[str, Any]]:
        return []

    def usage_chunk(self, tally: Tally) -> dict[str, Any]:
        return {**self._envelope(self.chunk_object_name, []), "usage": tally.usage()}


class CompletionShape(_Shape):
    id_prefix = "cmpl"
    object_name = chunk_object_name = "text_completion"

    def __init__(self, model: str, logprobs: LogprobsRenderer | None = None) -> None:
        super().__init__(model, logprobs)
        self._offsets: dict[int, int] = {}  # characters of each choice's logprob tokens so far

    def chunk(self, index: int, chunk: GenerationChunk) -> dict[str, Any] | None:
        if not chunk.text and chunk.finish_reason is None and not self._wants(chunk):
            return None
        logprobs = None
        if self._wants(chunk):
            offset = self._offsets.get(index, 0)
            logprobs = self.logprobs.completion(chunk.logprobs, offset)
            self._offsets[index] = offset + sum(map(len, logprobs["tokens"]))
        return self._envelope(self.chunk_object_name, [
            {"index": index, "text": chunk.text, "logprobs": logprobs,
             "finish_reason": chunk.finish_reason}])

    def _wants(self, chunk: GenerationChunk) -> bool:
        return self.logprobs is not None and bool(chunk.logprobs)

    def response(self, tally: Tally) -> dict[str, Any]:
        choices = [{"index": i, "text": text, "finish_reason": reason,
                    "logprobs": self.logprobs and self.logprobs.completion(tally.logprobs[i], 0)}
                   for i, (text, reason) in enumerate(zip(tally.texts, tally.finish_reasons))]
        return {**self._envelope(self.object_name, choices), "usage": tally.usage()}


class ChatShape(_Shape):
    """Chat responses; with tools, each choice's text split into content and tool calls."""

    id_prefix = "chatcmpl"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"

    def __init__(self, model: str, logprobs: LogprobsRenderer | None = None,
                 tools: ToolSet | None = None) -> None:
        super().__init__(model, logprobs)
        self.tools = tools if tools is not None and tools.active else None
        self._streams: dict[int, CallStream] = {}

    def opening_chunks(self, num_choices: int) -> list[dict[str, Any]]:
        return [self._chat_chunk(i, {"role": "assistant", "content": ""}, None, None)
                for i in range(num_choices)]

    def chunk(self, index: int, chunk: GenerationChunk) -> dict[str, Any] | None:
        content, calls, called = chunk.text, [], False
        if self.tools is not None:
            stream = self._streams.setdefault(index, CallStream(self.tools))
            content, calls = stream.feed(chunk.text)
            if chunk.finish_reason is not None:
                tail, more = stream.finish()
                content, calls = content + tail, calls + more
            first = len(stream.calls) - len(calls)
            calls = [c.to_json(first + j) for j, c in enumerate(calls)]
            called = bool(stream.calls)
        logprobs = self.logprobs.chat(chunk.logprobs) \
            if self.logprobs is not None and chunk.logprobs else None
        if not content and not calls and chunk.finish_reason is None and logprobs is None:
            return None
        delta: dict[str, Any] = {"content": content} if content else {}
        if calls:
            delta["tool_calls"] = calls
        return self._chat_chunk(index, delta, _reason(chunk.finish_reason, called), logprobs)

    def _chat_chunk(self, index: int, delta: dict, reason: str | None,
                    logprobs: dict | None) -> dict[str, Any]:
        return self._envelope(self.chunk_object_name, [
            {"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": reason}])

    def response(self, tally: Tally) -> dict[str, Any]:
        choices = [self._choice(i, tally) for i in range(len(tally.texts))]
        return {**self._envelope(self.object_name, choices), "usage": tally.usage()}

    def _choice(self, i: int, tally: Tally) -> dict[str, Any]:
        content, calls = tally.texts[i], []
        if self.tools is not None:
            content, calls = split_calls(content, self.tools)
        message: dict[str, Any] = {"role": "assistant", "content": content or None}
        if calls:
            message["tool_calls"] = [_call_json(c) for c in calls]
        else:
            message["content"] = content
        logprobs = self.logprobs and self.logprobs.chat(tally.logprobs[i])
        return {"index": i, "message": message, "logprobs": logprobs,
                "finish_reason": _reason(tally.finish_reasons[i], bool(calls))}


def _call_json(call: ToolCall) -> dict[str, Any]:
    whole = call.to_json(0)
    del whole["index"]  # a whole message's calls carry no stream index
    return whole


def _reason(finish_reason: str | None, called: bool) -> str | None:
    return "tool_calls" if called and finish_reason == "stop" else finish_reason
