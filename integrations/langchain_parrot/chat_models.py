"""`ChatParrot`: a LangChain chat model served by Parrot's `/v1/chat/completions`.

    from langchain_parrot import ChatParrot

    llm = ChatParrot(base_url="http://127.0.0.1:8000", temperature=0, max_tokens=64)
    llm.invoke("Name three parrots.").content

One code path: every call streams (server-sent events, usage included); `_generate` and
`_agenerate` aggregate the streamed chunks. Sync calls use `urllib`, async calls aiohttp.
Messages are sent as text (images and other blocks are refused: the served models read
text). Tools, structured output and JSON mode are not offered: the server has none.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk, ChatResult

from langchain_parrot.client_params import ParrotClientParams
from langchain_parrot.messages import to_openai_messages, usage_metadata
from langchain_parrot.transport import Delta, StreamSummary, astream_deltas, stream_deltas

CHAT_PATH = "/v1/chat/completions"


class ChatParrot(ParrotClientParams, BaseChatModel):
    """Chat model on a Parrot server (OpenAI-compatible chat API, the server's chat template).

    Setup: `pip install parrot-serve[langchain]`, then `parrot serve`.
    Key init args: `base_url` (env `PARROT_BASE_URL`), `api_key` (env `PARROT_API_KEY`),
    `model`, `temperature`, `max_tokens`, `top_p`, `seed`, `stop`, `timeout`, `max_retries`.
    """

    streaming: bool = False
    """Stream through callbacks when invoked (LangChain convention)."""

    @property
    def _llm_type(self) -> str:
        return "parrot-chat"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "parrot"
        params["ls_model_name"] = self._ls_model_name(**kwargs)
        if stop is None and self.stop:
            params["ls_stop"] = self.stop
        return params

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> ChatResult:
        return generate_from_stream(self._stream(messages, stop, run_manager, **kwargs))

    async def _agenerate(self, messages: list[BaseMessage], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> ChatResult:
        return await agenerate_from_stream(self._astream(messages, stop, run_manager, **kwargs))

    def _stream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        summary = StreamSummary()
        for delta in stream_deltas(self._endpoint(), CHAT_PATH,
                                   self._chat_body(messages, stop, kwargs)):
            chunk = _text_chunk(delta, summary)
            if chunk is not None:
                if run_manager:
                    run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        yield _last_chunk(summary)

    async def _astream(self, messages: list[BaseMessage], stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        summary = StreamSummary()
        async for delta in astream_deltas(self._endpoint(), CHAT_PATH,
                                          self._chat_body(messages, stop, kwargs)):
            chunk = _text_chunk(delta, summary)
            if chunk is not None:
                if run_manager:
                    await run_manager.on_llm_new_token(chunk.text, chunk=chunk)
                yield chunk
        yield _last_chunk(summary)

    def _chat_body(self, messages: list[BaseMessage], stop: list[str] | None,
                   kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.pop("stream", None)  # LangChain's own switch, not a request field
        return {**self._request_body(stop, **kwargs),
                "messages": to_openai_messages(messages)}


def _text_chunk(delta: Delta, summary: StreamSummary) -> ChatGenerationChunk | None:
    summary.add(delta)
    if not delta.text:
        return None
    return ChatGenerationChunk(message=AIMessageChunk(content=delta.text))


def _last_chunk(summary: StreamSummary) -> ChatGenerationChunk:
    """The closing chunk: usage, model name and finish reason, `chunk_position="last"`."""
    metadata = summary.metadata()
    message = AIMessageChunk(content="", usage_metadata=usage_metadata(summary.usage),
                             response_metadata=metadata, chunk_position="last")
    return ChatGenerationChunk(message=message, generation_info=metadata)
