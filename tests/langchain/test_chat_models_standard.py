"""LangChain's standard integration suite for ChatParrot, against a live Parrot server."""
from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.integration_tests.chat_models import (
    _validate_tool_call_message, _validate_tool_call_message_no_args, magic_function,
    magic_function_no_args)

from langchain_parrot import ChatParrot

pytestmark = pytest.mark.e2e

# Tool-call and JSON tests need room (a call is ~35 tokens), not the 8 tokens that keep the
# other tests fast. At temperature 0 the 135M model loops on one phrase inside a JSON string
# until max_tokens ('A cat is a cat, a cat is a cat, ...'): a mild repetition penalty stops
# it in the JSON tests (in tool calls it makes the arguments worse: 'input': 256 for 3).
ROOMY_TESTS = {"tool": {"max_tokens": 96}, "agent": {"max_tokens": 96},
               "structured": {"max_tokens": 96, "repetition_penalty": 1.1},
               "json_mode": {"max_tokens": 96, "repetition_penalty": 1.1}}

# Measured with SmolLM2-135M-Instruct, temperature 0 (tests whose assertion is the model's
# judgment; each has a forced variant below that passes).
SCHEMA_ECHO = ("the model's judgment: with tool_choice='any' it copies the parameter schema "
               "into the arguments, {'input': 3, 'exclusiveMaximum': 1000, 'exclusiveMinimum': "
               "-1000, 'type': 'integer'} (a schema without additionalProperties=false allows "
               "that), and may write the call twice; passes with strict=True, "
               "parallel_tool_calls=False (test_forced_strict_tool_call)")
NO_ARGS_TWICE = ("the model's judgment: it calls magic_function_no_args twice with invented "
                 "arguments, {'magic_function_no_args': 'The magic function is not defined.'}; "
                 "passes with strict=True, parallel_tool_calls=False "
                 "(test_forced_strict_tool_call_no_arguments)")
ANSWERS_IN_TEXT = ("the model's judgment: with tool_choice unset ('auto') it answers 'What is "
                   "the weather in San Francisco, CA?' in text, 'The weather in San Francisco, "
                   "CA, is a combination of the San Francisco Snow and Fire, ...', instead of "
                   "calling get_weather; passes with tool_choice='get_weather' "
                   "(test_forced_agent_loop)")


# Long enough to fill whole KV blocks, so a repeat of it is served from the prefix cache.
CACHED_PROMPT = "Read this twice. " * 40 + "Now say hello."


class TestChatParrotIntegration(ChatModelIntegrationTests):
    @pytest.fixture(autouse=True)
    def _server(self, parrot_url: str) -> None:
        """ChatParrot() finds the shared e2e server through PARROT_BASE_URL."""

    @property
    def chat_model_class(self) -> type[ChatParrot]:
        return ChatParrot

    @property
    def chat_model_params(self) -> dict:
        return {"temperature": 0, "max_tokens": 8}  # short answers keep the suite fast

    @pytest.fixture
    def model(self, request: pytest.FixtureRequest) -> ChatParrot:
        """The suite's model, with ROOMY_TESTS' settings for tool-call and JSON tests."""
        params = {**self.standard_chat_model_params, **self.chat_model_params,
                  **(getattr(request, "param", None) or {})}
        for word, settings in ROOMY_TESTS.items():
            if word in request.node.name:
                params.update(settings)
        return ChatParrot(**params)

    # Tools (grammar-enforced when forced), tool choice, structured output, JSON mode.
    @property
    def has_tool_calling(self) -> bool:
        return True

    @property
    def has_tool_choice(self) -> bool:
        return True

    @property
    def has_structured_output(self) -> bool:
        return True

    @property
    def supports_json_mode(self) -> bool:
        return True

    @property
    def supports_image_inputs(self) -> bool:
        return False

    @property
    def supports_model_override(self) -> bool:
        return False  # a server serves one model

    @property
    def supported_usage_metadata_details(self) -> dict:
        return {"invoke": ["cache_read_input"], "stream": ["cache_read_input"]}

    def invoke_with_cache_read_input(self, *, stream: bool = False) -> AIMessage:
        model = ChatParrot(**self.chat_model_params)
        model.invoke(CACHED_PROMPT)  # fills the prefix cache
        if not stream:
            return model.invoke(CACHED_PROMPT)
        full = None
        for chunk in model.stream(CACHED_PROMPT):
            full = chunk if full is None else full + chunk
        return full

    # -- tests of the model's judgment (xfailed), and their forced variants ------------------
    @pytest.mark.xfail(reason=SCHEMA_ECHO, strict=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_tool_calling(self, model: ChatParrot) -> None:
        super().test_tool_calling(model)

    @pytest.mark.xfail(reason=SCHEMA_ECHO, strict=False)
    async def test_tool_calling_async(self, model: ChatParrot) -> None:
        await super().test_tool_calling_async(model)

    @pytest.mark.xfail(reason=NO_ARGS_TWICE, strict=False)
    def test_tool_calling_with_no_arguments(self, model: ChatParrot) -> None:
        super().test_tool_calling_with_no_arguments(model)

    @pytest.mark.xfail(reason=ANSWERS_IN_TEXT, strict=False)
    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_agent_loop(self, model: ChatParrot) -> None:
        super().test_agent_loop(model)

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_forced_strict_tool_call(self, model: ChatParrot) -> None:
        forced = model.bind_tools([magic_function], tool_choice="magic_function", strict=True,
                                  parallel_tool_calls=False)
        query = "What is the value of magic_function(3)? Use the tool."
        _validate_tool_call_message(forced.invoke(query))
        _validate_tool_call_message(_streamed(forced, query))

    def test_forced_strict_tool_call_no_arguments(self, model: ChatParrot) -> None:
        forced = model.bind_tools([magic_function_no_args], tool_choice="any", strict=True,
                                  parallel_tool_calls=False)
        query = "What is the value of magic_function_no_args()? Use the tool."
        _validate_tool_call_message_no_args(forced.invoke(query))
        _validate_tool_call_message_no_args(_streamed(forced, query))

    @pytest.mark.parametrize("model", [{}, {"output_version": "v1"}], indirect=True)
    def test_forced_agent_loop(self, model: ChatParrot) -> None:
        """test_agent_loop with the first step's tool forced (the second is the model's)."""
        @tool
        def get_weather(location: str) -> str:
            """Get the weather at a location."""
            return "It's sunny."

        question = HumanMessage("What is the weather in San Francisco, CA?")
        call = model.bind_tools([get_weather], tool_choice="get_weather",
                                parallel_tool_calls=False).invoke([question])
        assert any(block["type"] == "tool_call" for block in call.content_blocks)
        [tool_call] = call.tool_calls
        result = get_weather.invoke(tool_call)
        assert isinstance(result, ToolMessage)
        answer = model.bind_tools([get_weather]).invoke([question, call, result])
        assert isinstance(answer, AIMessage)


def _streamed(model, query: str) -> AIMessageChunk:
    full = None
    for chunk in model.stream(query):
        full = chunk if full is None else full + chunk
    return full
