"""`ChatParrot`: a LangChain chat model served by Parrot's `/v1/chat/completions`.

    from langchain_parrot import ChatParrot

    llm = ChatParrot(base_url="http://127.0.0.1:8000", temperature=0, max_tokens=64)
    llm.invoke("Name three parrots.").content

One code path: every call streams (server-sent events, usage included); `_generate` and
`_agenerate` aggregate the streamed chunks. Sync calls use `urllib`, async calls aiohttp.
Messages are sent as text (images and other blocks are refused: the served models read
text). Tools (`bind_tools`, docs/langchain-tools.md), structured output
(`with_structured_output`, structured_output.py) and logprobs (`logprobs=True`,
`top_logprobs=k`, in `response_metadata["logprobs"]`) follow langchain-openai.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LangSmithParams, LanguageModelInput
from langchain_core.language_models.chat_models import agenerate_from_stream, generate_from_stream
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.tool import tool_call_chunk
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable

from langchain_parrot.client_params import ParrotClientParams
from langchain_parrot.messages import to_openai_messages, usage_metadata
from langchain_parrot.structured_output import Method, SchemaLike, structured_output
from langchain_parrot.tools import ToolChoice, ToolLike, openai_tools, tool_choice_field
from langchain_parrot.transport import Delta, StreamSummary, astream_deltas, stream_deltas

CHAT_PATH = "/v1/chat/completions"


class ChatParrot(ParrotClientParams, BaseChatModel):
    """Chat model on a Parrot server (OpenAI-compatible chat API, the server's chat template).

    Setup: `pip install parrot-serve[langchain]`, then `parrot serve`.
    Key init args: `base_url` (env `PARROT_BASE_URL`), `api_key` (env `PARROT_API_KEY`),
    `model`, `temperature`, `max_tokens`, `top_p`, `seed`, `stop`, `timeout`, `max_retries`,
    `logprobs`, `top_logprobs`.
    """

    streaming: bool = False
    """Stream through callbacks when invoked (LangChain convention)."""
    logprobs: bool | None = None
    """Return the answer tokens' log probabilities (`response_metadata["logprobs"]`)."""
    top_logprobs: int | None = None
    """With `logprobs`: also the k (0..20) most likely tokens at each position."""

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

    def bind_tools(self, tools: Sequence[ToolLike], *, tool_choice: ToolChoice = None,
                   strict: bool | None = None, parallel_tool_calls: bool | None = None,
                   **kwargs: Any) -> Runnable[LanguageModelInput, AIMessage]:
        """This model with OpenAI `tools` (and `tool_choice`) on every request (tools.py)."""
        formatted = openai_tools(tools, strict=strict)
        choice = tool_choice_field(tool_choice, formatted)
        if choice is not None:
            kwargs["tool_choice"] = choice
        if parallel_tool_calls is not None:
            kwargs["parallel_tool_calls"] = parallel_tool_calls
        return super().bind(tools=formatted, **kwargs)

    def with_structured_output(self, schema: SchemaLike | None = None, *,
                               method: Method = "json_schema", include_raw: bool = False,
                               strict: bool | None = None,
                               **kwargs: Any) -> Runnable[LanguageModelInput, Any]:
        """Answers parsed into `schema` (pydantic: instances, else dicts); see
        structured_output.py for the methods."""
        if kwargs:
            raise ValueError(f"Received unsupported arguments {sorted(kwargs)}")
        return structured_output(self, schema, method, include_raw, strict)

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
        settings = {"logprobs": self.logprobs, "top_logprobs": self.top_logprobs}
        return {**self._request_body(stop, **{**settings, **kwargs}),
                "messages": to_openai_messages(messages)}


def _text_chunk(delta: Delta, summary: StreamSummary) -> ChatGenerationChunk | None:
    """A delta's text, tool calls and logprobs as a chunk (None when it carries none)."""
    summary.add(delta)
    if not (delta.text or delta.tool_calls or delta.logprobs):
        return None
    calls = [tool_call_chunk(name=(c.get("function") or {}).get("name"),
                             args=(c.get("function") or {}).get("arguments"),
                             id=c.get("id"), index=c.get("index"))
             for c in delta.tool_calls or ()]
    info = {"logprobs": delta.logprobs} if delta.logprobs else None
    message = AIMessageChunk(content=delta.text, tool_call_chunks=calls)
    return ChatGenerationChunk(message=message, generation_info=info)


def _last_chunk(summary: StreamSummary) -> ChatGenerationChunk:
    """The closing chunk: usage, model name and finish reason, `chunk_position="last"`."""
    metadata = summary.metadata()
    message = AIMessageChunk(content="", usage_metadata=usage_metadata(summary.usage),
                             response_metadata=metadata, chunk_position="last")
    return ChatGenerationChunk(message=message, generation_info=metadata)
