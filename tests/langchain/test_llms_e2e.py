"""ParrotLLM against a live Parrot server: invoke, stream, batch (sync and async), usage."""
from __future__ import annotations

import pytest

from langchain_parrot import ParrotAPIError, ParrotLLM

pytestmark = pytest.mark.e2e

PROMPT = "The capital of France is"


@pytest.fixture
def llm(parrot_url: str) -> ParrotLLM:
    return ParrotLLM(temperature=0, max_tokens=6)


def test_invoke_stream_and_batch_agree(llm):
    text = llm.invoke(PROMPT)
    assert text
    assert "".join(llm.stream(PROMPT)) == text
    assert llm.batch([PROMPT, "One, two,"])[0] == text


async def test_async_agrees_with_sync(llm):
    text = llm.invoke(PROMPT)
    assert await llm.ainvoke(PROMPT) == text
    assert "".join([c async for c in llm.astream(PROMPT)]) == text
    assert (await llm.abatch([PROMPT, "One, two,"]))[0] == text


def test_stop_and_usage(llm):
    result = llm.generate([PROMPT], stop=["."])
    generation = result.generations[0][0]
    assert "." not in generation.text
    assert generation.generation_info["finish_reason"] in ("stop", "length")
    usage = result.llm_output["token_usage"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert result.llm_output["model_name"]


def test_server_refusal_is_an_error(parrot_url):
    with pytest.raises(ParrotAPIError) as info:
        ParrotLLM(model="no-such-model", max_retries=0).invoke(PROMPT)
    assert info.value.status == 404
