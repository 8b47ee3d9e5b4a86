"""`ParrotLLM`: a LangChain text-completion model served by Parrot's `/v1/completions`.

    from langchain_parrot import ParrotLLM

    llm = ParrotLLM(temperature=0, max_tokens=32)
    llm.invoke("The capital of France is")

The prompt is sent as is (no chat template). One code path: every request streams;
`_generate` aggregates the streamed chunks. Several prompts (`batch`, `generate`) go to the
server in one request (64 at most each) and run concurrently there. `max_tokens=None` means
the OpenAI default of 16 tokens. `logprobs=k` puts the completions API's log probabilities
(`tokens`, `token_logprobs`, `top_logprobs`, `text_offset`) in each generation's
`generation_info["logprobs"]`, as langchain-openai's `OpenAI` does.
"""
from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseLLM, LangSmithParams
from langchain_core.outputs import GenerationChunk, LLMResult

from langchain_parrot.client_params import ParrotClientParams
from langchain_parrot.messages import usage_metadata
from langchain_parrot.transport import Delta, StreamSummary, astream_deltas, stream_deltas

COMPLETIONS_PATH = "/v1/completions"
MAX_PROMPTS_PER_REQUEST = 64  # the server's limit of prompts in one request
Indexed = tuple[int, GenerationChunk]  # (prompt index, chunk)


class ParrotLLM(ParrotClientParams, BaseLLM):
    """Text-completion model on a Parrot server (OpenAI-compatible completions API).

    Key init args: `base_url` (env `PARROT_BASE_URL`), `api_key` (env `PARROT_API_KEY`),
    `model`, `temperature`, `max_tokens`, `top_p`, `seed`, `stop`, `timeout`, `max_retries`,
    `logprobs`.
    """

    logprobs: int | None = None
    """Log probabilities of each token and of the k most likely ones (0: the token's only)."""

    @property
    def _llm_type(self) -> str:
        return "parrot-llm"

    def _get_ls_params(self, stop: list[str] | None = None, **kwargs: Any) -> LangSmithParams:
        params = super()._get_ls_params(stop=stop, **kwargs)
        params["ls_provider"] = "parrot"
        params["ls_model_name"] = self._ls_model_name(**kwargs)
        return params

    def _generate(self, prompts: list[str], stop: list[str] | None = None,
                  run_manager: CallbackManagerForLLMRun | None = None,
                  **kwargs: Any) -> LLMResult:
        summary = StreamSummary()
        chunks = self._stream_indexed(prompts, stop, run_manager, summary, kwargs)
        return _result(len(prompts), chunks, summary)

    async def _agenerate(self, prompts: list[str], stop: list[str] | None = None,
                         run_manager: AsyncCallbackManagerForLLMRun | None = None,
                         **kwargs: Any) -> LLMResult:
        summary = StreamSummary()
        chunks = [c async for c in self._astream_indexed(prompts, stop, run_manager, summary,
                                                         kwargs)]
        return _result(len(prompts), chunks, summary)

    def _stream(self, prompt: str, stop: list[str] | None = None,
                run_manager: CallbackManagerForLLMRun | None = None,
                **kwargs: Any) -> Iterator[GenerationChunk]:
        summary = StreamSummary()
        for _, chunk in self._stream_indexed([prompt], stop, run_manager, summary, kwargs):
            yield chunk
        yield _last_chunk(summary)

    async def _astream(self, prompt: str, stop: list[str] | None = None,
                       run_manager: AsyncCallbackManagerForLLMRun | None = None,
                       **kwargs: Any) -> AsyncIterator[GenerationChunk]:
        summary = StreamSummary()
        async for _, chunk in self._astream_indexed([prompt], stop, run_manager, summary,
                                                    kwargs):
            yield chunk
        yield _last_chunk(summary)

    def _stream_indexed(self, prompts: list[str], stop: list[str] | None,
                        run_manager: CallbackManagerForLLMRun | None, summary: StreamSummary,
                        kwargs: dict[str, Any]) -> Iterator[Indexed]:
        for offset, body in self._completion_bodies(prompts, stop, kwargs):
            for delta in stream_deltas(self._endpoint(), COMPLETIONS_PATH, body):
                item = _text_chunk(delta, offset, summary)
                if item is not None:
                    if run_manager:
                        run_manager.on_llm_new_token(item[1].text, chunk=item[1])
                    yield item

    async def _astream_indexed(self, prompts: list[str], stop: list[str] | None,
                               run_manager: AsyncCallbackManagerForLLMRun | None,
                               summary: StreamSummary,
                               kwargs: dict[str, Any]) -> AsyncIterator[Indexed]:
        for offset, body in self._completion_bodies(prompts, stop, kwargs):
            async for delta in astream_deltas(self._endpoint(), COMPLETIONS_PATH, body):
                item = _text_chunk(delta, offset, summary)
                if item is not None:
                    if run_manager:
                        await run_manager.on_llm_new_token(item[1].text, chunk=item[1])
                    yield item

    def _completion_bodies(self, prompts: list[str], stop: list[str] | None,
                           kwargs: dict[str, Any]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(offset, request body) per slice of at most MAX_PROMPTS_PER_REQUEST prompts."""
        kwargs.pop("stream", None)
        body = self._request_body(stop, **{"logprobs": self.logprobs, **kwargs})
        for offset in range(0, len(prompts), MAX_PROMPTS_PER_REQUEST):
            yield offset, {**body, "prompt": prompts[offset:offset + MAX_PROMPTS_PER_REQUEST]}


def _text_chunk(delta: Delta, offset: int, summary: StreamSummary) -> Indexed | None:
    delta = delta._replace(index=delta.index + offset)
    summary.add(delta)
    if not (delta.text or delta.logprobs):
        return None
    info = {"logprobs": delta.logprobs} if delta.logprobs else None
    return delta.index, GenerationChunk(text=delta.text, generation_info=info)


def _last_chunk(summary: StreamSummary) -> GenerationChunk:
    return GenerationChunk(text="", generation_info={
        **summary.metadata(), "usage_metadata": usage_metadata(summary.usage)})


def _result(num_prompts: int, chunks: Iterator[Indexed] | list[Indexed],
            summary: StreamSummary) -> LLMResult:
    """Each prompt's chunks summed into one generation (logprobs concatenated); usage for
    the whole request."""
    texts: list[GenerationChunk] = [GenerationChunk(text="") for _ in range(num_prompts)]
    for index, chunk in chunks:
        texts[index] += chunk
    generations = [[GenerationChunk(text=t.text, generation_info={
        **(t.generation_info or {}), **summary.metadata(i)})] for i, t in enumerate(texts)]
    return LLMResult(generations=generations, llm_output={
        "token_usage": summary.usage or {}, "model_name": summary.model or ""})
