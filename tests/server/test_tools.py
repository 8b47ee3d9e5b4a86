"""Tool calling without a model: request parsing, the required-call grammar, the prompt a
template without tool support gets, and calls split out of text however it is streamed."""
from __future__ import annotations

import json

import pytest

from parrot.server.errors import ApiError
from parrot.server.openai_protocol import parse_chat_request, parse_completion_request
from parrot.server.prompts import chat_prompt_text
from parrot.server.openai_protocol import parse_chat_request
from parrot.server.tools import CallStream, ToolSet, call_grammar, split_calls

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather of a city", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
ADD = {"type": "function", "function": {"name": "add", "parameters": {
    "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}}}}}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
ADD_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 1, "b": 2}}\n</tool_call>'


def parse_tool_set(body: dict) -> ToolSet:
    """A chat request's tools, validated as the endpoint validates them."""
    return parse_chat_request({"messages": [{"role": "user", "content": "hi"}], **body},
                              max_n=1).tools


def tools(**body) -> ToolSet:
    return parse_tool_set({"tools": [WEATHER, ADD], **body})


def test_tool_choice_modes():
    assert tools().mode == "auto" and tools().active
    assert parse_tool_set({}).mode == "none" and not parse_tool_set({}).active
    assert not tools(tool_choice="none").active
    named = tools(tool_choice={"type": "function", "function": {"name": "add"}})
    assert (named.mode, [t.name for t in named.callable]) == ("required", ["add"])
    assert tools().constraint() is None  # auto: the model chooses, nothing is enforced
    assert named.constraint().kind == "grammar"


@pytest.mark.parametrize("body, param", [
    ({"tools": "x"}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools[0].type"),
    ({"tools": [{"type": "function"}]}, "tools[0].function"),
    ({"tools": [{"type": "function", "function": {"name": "bad name"}}]},
     "tools[0].function.name"),
    ({"tools": [WEATHER, WEATHER]}, "tools"),
    ({"tools": [WEATHER], "tool_choice": "sometimes"}, "tool_choice"),
    ({"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "add"}}},
     "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [WEATHER], "parallel_tool_calls": "yes"}, "parallel_tool_calls"),
])
def test_bad_tool_fields_name_the_field(body, param):
    with pytest.raises(ApiError) as e:
        parse_tool_set(body)
    assert e.value.param == param


def test_required_grammar_names_each_tool_once_and_repeats_only_when_parallel():
    grammar = call_grammar(tools().callable, parallel=True)
    assert grammar.startswith('start: call ("\\n" call)*')
    assert '"const": "get_weather"' in grammar and '"const": "add"' in grammar
    assert call_grammar(tools().callable, parallel=False).startswith("start: call\n")


@pytest.mark.parametrize("cut", range(0, len(CALL) + 12, 3))
def test_calls_split_out_of_text_streamed_in_any_pieces(cut):
    text = "Let me check.\n" + CALL + "\n" + ADD_CALL
    stream = CallStream(tools())
    pieces = [stream.feed(text[:cut]), stream.feed(text[cut:]), stream.finish()]
    content = "".join(c for c, _ in pieces)
    calls = [call for _, cs in pieces for call in cs]
    assert content == "Let me check.\n"
    assert [(c.name, json.loads(c.arguments)) for c in calls] == [
        ("get_weather", {"city": "Paris"}), ("add", {"a": 1, "b": 2})]
    assert len({c.id for c in calls}) == 2


def test_text_that_only_looks_like_a_call_stays_content():
    for text in ("a <tool_ and more", "<tool_call>\nnot json\n</tool_call>",
                 '<tool_call>\n{"name": "unknown", "arguments": {}}\n</tool_call>'):
        assert split_calls(text, tools()) == (text, [])
    assert split_calls("ends with <tool", tools()) == ("ends with <tool", [])


def test_an_unclosed_last_call_still_counts_and_parallel_false_keeps_one():
    assert [c.name for c in split_calls(CALL[:-len("</tool_call>")], tools())[1]] == [
        "get_weather"]
    content, calls = split_calls(CALL + "\n" + ADD_CALL, tools(parallel_tool_calls=False))
    assert [c.name for c in calls] == ["get_weather"] and content == "\n" + ADD_CALL


def test_history_with_calls_renders_as_text_for_a_template_without_tools(smollm):
    req = parse_chat_request({"tools": [WEATHER], "messages": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function",
         "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"}]}, max_n=1)
    text = chat_prompt_text(smollm.tokenizer, req.messages, req.tools)
    assert text.startswith("<|im_start|>system\n# Tools")  # replaces SmolLM's default prompt
    assert json.dumps(WEATHER) in text
    assert CALL in text and "<tool_response>\nsunny\n</tool_response>" in text
    assert text.endswith("<|im_start|>assistant\n")


def test_structured_output_fields_become_one_constraint():
    schema = {"type": "object"}
    chat = parse_chat_request({"messages": [{"role": "user", "content": "x"}],
                               "response_format": {"type": "json_schema", "json_schema": {
                                   "name": "s", "schema": schema}}}, max_n=1)
    assert chat.options.constraint.kind == "json_schema"
    assert chat.options.constraint_param == "response_format"
    cases = {"guided_choice": (["a", "b"], "choice"), "guided_regex": ("a+", "regex"),
             "structured_outputs": ({"grammar": "start: \"x\""}, "grammar")}
    for name, (value, kind) in cases.items():
        req = parse_completion_request({"prompt": "x", name: value}, max_n=1)
        assert req.options.constraint.kind == kind
    with pytest.raises(ApiError, match="cannot be combined"):
        parse_chat_request({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER],
                            "tool_choice": "required", "guided_regex": "a"}, max_n=1)


def test_logprobs_fields():
    chat = parse_chat_request({"messages": [{"role": "user", "content": "x"}],
                               "logprobs": True, "top_logprobs": 3}, max_n=1)
    assert chat.options.logprobs == 3
    assert parse_chat_request({"messages": [{"role": "user", "content": "x"}],
                               "logprobs": True}, max_n=1).options.logprobs == 0
    assert parse_completion_request({"prompt": "x", "logprobs": 2},
                                    max_n=1).options.logprobs == 2
    assert parse_completion_request({"prompt": "x"}, max_n=1).options.logprobs is None


def test_a_required_call_cut_off_by_max_tokens_is_neither_a_call_nor_content():
    required = tools(tool_choice="required")
    content, calls = split_calls(CALL + "\n" + ADD_CALL[:30], required)
    assert content == "" and [c.name for c in calls] == ["get_weather"]
    assert split_calls(ADD_CALL[:30], tools()) == (ADD_CALL[:30], [])  # auto: the model's text
