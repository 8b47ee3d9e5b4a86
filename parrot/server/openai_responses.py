"""OpenAI response shapes: whole responses, stream chunks and usage."""
from __future__ import annotations

import time
import uuid
from typing import Any

from parrot.engine.sampling_params import GenerationChunk


class Tally:
    """Text, finish reason and usage of every choice of one request."""

    def __init__(self, num_choices: int, n: int) -> None:
        self.n = n
        self.texts = [""] * num_choices
        self.finish_reasons: list[str | None] = [None] * num_choices
        self.prompt_tokens = self.cached_tokens = self.completion_tokens = 0

    def add(self, index: int, chunk: GenerationChunk) -> None:
        self.texts[index] += chunk.text
        if chunk.finish_reason is not None:
            self.finish_reasons[index] = chunk.finish_reason
        if chunk.usage is not None:
            self.completion_tokens += chunk.usage.completion_tokens
            if index % self.n == 0:  # the prompt's own context; forks share its prompt
                self.prompt_tokens += chunk.usage.prompt_tokens
                self.cached_tokens += chunk.usage.cached_tokens

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

    def __init__(self, model: str) -> None:
        self.id = f"{self.id_prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.model = model

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

    def chunk(self, index: int, chunk: GenerationChunk) -> dict[str, Any] | None:
        if not chunk.text and chunk.finish_reason is None:
            return None
        return self._envelope(self.chunk_object_name, [
            {"index": index, "text": chunk.text, "logprobs": None,
             "finish_reason": chunk.finish_reason}])

    def response(self, tally: Tally) -> dict[str, Any]:
        choices = [{"index": i, "text": text, "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(zip(tally.texts, tally.finish_reasons))]
        return {**self._envelope(self.object_name, choices), "usage": tally.usage()}


class ChatShape(_Shape):
    id_prefix = "chatcmpl"
    object_name = "chat.completion"
    chunk_object_name = "chat.completion.chunk"

    def opening_chunks(self, num_choices: int) -> list[dict[str, Any]]:
        return [self._chat_chunk(i, {"role": "assistant", "content": ""}, None)
                for i in range(num_choices)]

    def chunk(self, index: int, chunk: GenerationChunk) -> dict[str, Any] | None:
        if not chunk.text and chunk.finish_reason is None:
            return None
        delta = {"content": chunk.text} if chunk.text else {}
        return self._chat_chunk(index, delta, chunk.finish_reason)

    def _chat_chunk(self, index: int, delta: dict, reason: str | None) -> dict[str, Any]:
        return self._envelope(self.chunk_object_name, [
            {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}])

    def response(self, tally: Tally) -> dict[str, Any]:
        choices = [{"index": i, "message": {"role": "assistant", "content": text},
                    "logprobs": None, "finish_reason": reason}
                   for i, (text, reason) in enumerate(zip(tally.texts, tally.finish_reasons))]
        return {**self._envelope(self.object_name, choices), "usage": tally.usage()}
