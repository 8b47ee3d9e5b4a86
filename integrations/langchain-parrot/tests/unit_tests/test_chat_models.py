"""Unit tests of ChatParrot (no network): LangChain's standard suite, request bodies."""
from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_tests.unit_tests import ChatModelUnitTests

from langchain_parrot import ChatParrot
from langchain_parrot.messages import to_openai_messages, usage_metadata


class TestChatParrotUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[ChatParrot]:
        return ChatParrot

    @property
    def chat_model_params(self) -> dict:
        return {"base_url": "http://127.0.0.1:9"}  # never contacted

    @property
    def init_from_env_params(self) -> tuple[dict, dict, dict]:
        env = {"PARROT_BASE_URL": "http://parrot.test:8000", "PARROT_API_KEY": "secret"}
        return env, {}, {"base_url": "http://parrot.test:8000", "api_key": "secret"}

    # Tool calling, tool choice and structured output: detected from bind_tools /
    # with_structured_output being overridden (langchain-tests' defaults).


def test_request_body_merges_settings_and_call_overrides():
    model = ChatParrot(temperature=0.0, max_tokens=8, stop=["\n"], seed=3)
    body = model._chat_body([HumanMessage("hi")], None, {"max_tokens": 4, "stream": False})
    assert body["temperature"] == 0.0 and body["seed"] == 3
    assert body["max_tokens"] == 4 and body["stop"] == ["\n"]
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "model" not in body and "top_p" not in body
    assert model._chat_body([HumanMessage("hi")], ["x"], {})["stop"] == ["x"]


def test_messages_become_openai_roles():
    messages = [SystemMessage("s"), HumanMessage([{"type": "text", "text": "a"}, "b"]),
                AIMessage("c")]
    assert to_openai_messages(messages) == [
        {"role": "system", "content": "s"}, {"role": "user", "content": "ab"},
        {"role": "assistant", "content": "c"}]
    with pytest.raises(ValueError, match="image"):
        to_openai_messages([HumanMessage([{"type": "image", "url": "http://x/y.png"}])])


def test_usage_metadata_counts_cached_prompt_tokens():
    usage = {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13,
             "prompt_tokens_details": {"cached_tokens": 8}}
    assert usage_metadata(usage) == {"input_tokens": 10, "output_tokens": 3, "total_tokens": 13,
                                     "input_token_details": {"cache_read": 8}}
    assert usage_metadata(None) is None


def test_ls_params_name_provider_and_model():
    params = ChatParrot(model="m", stop=["x"])._get_ls_params()
    assert params["ls_provider"] == "parrot" and params["ls_model_name"] == "m"
    assert params["ls_stop"] == ["x"]
    assert ChatParrot()._get_ls_params(model="other")["ls_model_name"] == "other"


def test_penalties_are_sent_when_set_and_bindable():
    model = ChatParrot(frequency_penalty=1.5, repetition_penalty=1.1)
    body = model._chat_body([HumanMessage("hi")], None, {"presence_penalty": 0.5})
    assert (body["frequency_penalty"], body["repetition_penalty"], body["presence_penalty"]) == (1.5, 1.1, 0.5)
    assert "presence_penalty" not in ChatParrot()._chat_body([HumanMessage("hi")], None, {})
    assert model._identifying_params["frequency_penalty"] == 1.5
