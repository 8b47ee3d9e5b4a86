"""Tools, structured output and logprobs of ChatParrot / ParrotLLM against a fake stream."""
from __future__ import annotations

import json
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from pydantic import BaseModel, Field
from typing_extensions import TypedDict

from langchain_parrot import ChatParrot, ParrotLLM, chat_models, llms
from langchain_parrot.compiler import Compiler
from langchain_parrot.messages import to_openai_messages
from langchain_parrot.steps import ClientStep
from langchain_parrot.tools import tool_choice_field
from langchain_parrot.transport import _parse_line

URL = "http://127.0.0.1:9"  # never contacted


def multiply(a: int, b: int) -> int:
    """Multiply two integers."""
    return a * b


def get_weather(city: str) -> str:
    """The weather in a city."""
    return "sunny"


class Joke(BaseModel):
    """A joke."""

    setup: str = Field(description="the question")
    punchline: str


class JokeDict(TypedDict):
    """A joke."""

    setup: Annotated[str, ..., "the question"]
    punchline: str


def chunk(delta: dict | None = None, finish: str | None = None, **choice: Any) -> dict:
    return {"model": "m", "choices": [{"index": 0, "delta": delta or {}, "finish_reason": finish,
                                       **choice}]}


def call_delta(index: int, name: str, args: dict) -> dict:
    return {"tool_calls": [{"index": index, "id": f"call_{index}", "type": "function",
                            "function": {"name": name, "arguments": json.dumps(args)}}]}


USAGE = {"model": "m", "choices": [],
         "usage": {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}}


class FakeServer:
    """Replays one SSE stream for every request and records the request bodies."""

    def __init__(self, events: list[dict]) -> None:
        self.lines = [f"data: {json.dumps(e)}\n" for e in events] + ["data: [DONE]\n"]
        self.bodies: list[dict] = []

    def deltas(self, endpoint: Any, path: str, body: dict):
        self.bodies.append(body)
        for line in self.lines:
            deltas = _parse_line(line)
            if deltas is None:
                return
            yield from deltas

    async def adeltas(self, endpoint: Any, path: str, body: dict):
        for delta in self.deltas(endpoint, path, body):
            yield delta


@pytest.fixture
def serve(monkeypatch: pytest.MonkeyPatch):
    def start(*events: dict) -> FakeServer:
        server = FakeServer([*events, USAGE])
        for module in (chat_models, llms):
            monkeypatch.setattr(module, "stream_deltas", server.deltas)
            monkeypatch.setattr(module, "astream_deltas", server.adeltas)
        return server

    return start


TOOL_CALLS = (chunk(call_delta(0, "multiply", {"a": 6, "b": 7})),
              chunk(call_delta(1, "get_weather", {"city": "Paris"})), chunk(finish="tool_calls"))


def test_bind_tools_sends_openai_tools_and_choice(serve):
    server = serve(*TOOL_CALLS)
    model = ChatParrot(base_url=URL).bind_tools([multiply, get_weather], tool_choice="any",
                                                parallel_tool_calls=True)
    model.invoke("hi")
    body = server.bodies[0]
    assert [t["function"]["name"] for t in body["tools"]] == ["multiply", "get_weather"]
    assert body["tools"][0]["function"]["parameters"]["required"] == ["a", "b"]
    assert body["tool_choice"] == "required" and body["parallel_tool_calls"] is True


@pytest.mark.parametrize("choice, sent", [
    ("auto", "auto"), ("none", "none"), ("required", "required"), ("any", "required"),
    (True, "required"), (None, None), ("multiply", {"type": "function",
                                                    "function": {"name": "multiply"}}),
    ({"type": "function", "function": {"name": "x"}}, {"type": "function",
                                                       "function": {"name": "x"}})])
def test_tool_choice_follows_langchain_openai(choice, sent):
    tools = [{"type": "function", "function": {"name": "multiply"}}]
    assert tool_choice_field(choice, tools) == sent


def test_unknown_tool_choice_is_refused():
    with pytest.raises(ValueError, match="bound tool's name"):
        ChatParrot(base_url=URL).bind_tools([multiply], tool_choice="divide")


async def test_tool_calls_on_invoke_and_as_stream_chunks(serve):
    serve(*TOOL_CALLS)
    model = ChatParrot(base_url=URL).bind_tools([multiply, get_weather])
    message = model.invoke("hi")
    assert [(c["name"], c["args"], c["id"]) for c in message.tool_calls] == [
        ("multiply", {"a": 6, "b": 7}, "call_0"), ("get_weather", {"city": "Paris"}, "call_1")]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    chunks = [c async for c in model.astream("hi")]
    assert [c.tool_call_chunks[0]["name"] for c in chunks if c.tool_call_chunks] == [
        "multiply", "get_weather"]
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.tool_calls == message.tool_calls


def test_history_carries_tool_calls_and_results():
    call = {"name": "multiply", "args": {"a": 6, "b": 7}, "id": "c1", "type": "tool_call"}
    messages = [HumanMessage("6*7?"),
                AIMessage([{"type": "text", "text": "let me"},
                           {"type": "tool_use", "id": "c1", "name": "multiply",
                            "input": {"a": 6, "b": 7}}], tool_calls=[call]),
                AIMessage("", tool_calls=[call]),
                ToolMessage("42", tool_call_id="c1", status="error")]
    sent = to_openai_messages(messages)
    openai_call = {"id": "c1", "type": "function",
                   "function": {"name": "multiply", "arguments": '{"a": 6, "b": 7}'}}
    assert sent[1] == {"role": "assistant", "content": "let me", "tool_calls": [openai_call]}
    assert sent[2] == {"role": "assistant", "content": None, "tool_calls": [openai_call]}
    assert sent[3] == {"role": "tool", "content": "42", "tool_call_id": "c1"}


def token(text: str, logprob: float) -> dict:
    return {"token": text, "logprob": logprob, "bytes": list(text.encode()), "top_logprobs": []}


def test_chat_logprobs_in_response_metadata(serve):
    server = serve(chunk({"content": "Hi"}, logprobs={"content": [token("Hi", -0.5)]}),
                   chunk({"content": "!"}, logprobs={"content": [token("!", -1.0)]}),
                   chunk(finish="stop"))
    message = ChatParrot(base_url=URL, logprobs=True, top_logprobs=2).invoke("hi")
    assert [t["token"] for t in message.response_metadata["logprobs"]["content"]] == ["Hi", "!"]
    assert (server.bodies[0]["logprobs"], server.bodies[0]["top_logprobs"]) == (True, 2)
    bound = ChatParrot(base_url=URL).bind(logprobs=True)
    first = next(iter(bound.stream("hi")))
    assert first.response_metadata["logprobs"]["content"][0]["logprob"] == -0.5
    assert server.bodies[-1]["logprobs"] is True
    assert "logprobs" not in ChatParrot(base_url=URL)._chat_body([HumanMessage("x")], None, {})


def test_llm_logprobs_in_generation_info(serve):
    def piece(text: str, offset: int) -> dict:
        return {"model": "m", "choices": [{"index": 0, "text": text, "finish_reason": None,
                                           "logprobs": {"tokens": [text], "token_logprobs": [-1.0],
                                                        "top_logprobs": [{text: -1.0}],
                                                        "text_offset": [offset]}}]}

    server = serve(piece(" Paris", 10), piece(".", 16))
    result = ParrotLLM(base_url=URL, logprobs=1).generate(["The capital is"])
    logprobs = result.generations[0][0].generation_info["logprobs"]
    assert logprobs["tokens"] == [" Paris", "."] and logprobs["text_offset"] == [10, 16]
    assert server.bodies[0]["logprobs"] == 1


def test_logprobs_are_not_compiled():
    for model in (ChatParrot(base_url=URL, max_tokens=4, logprobs=True),
                  ParrotLLM(base_url=URL, logprobs=0)):
        assert isinstance(Compiler().compile(model), ClientStep)


JOKE = {"setup": "Why?", "punchline": "Because."}


@pytest.mark.parametrize("schema, expected", [(Joke, Joke(**JOKE)), (JokeDict, JOKE),
                                              (Joke.model_json_schema(), JOKE)])
def test_structured_output_json_schema(serve, schema, expected):
    server = serve(chunk({"content": json.dumps(JOKE)[:9]}),
                   chunk({"content": json.dumps(JOKE)[9:]}), chunk(finish="stop"))
    structured = ChatParrot(base_url=URL).with_structured_output(schema, strict=True)
    assert structured.invoke("joke") == expected
    response_format = server.bodies[0]["response_format"]
    assert response_format["type"] == "json_schema"
    spec = response_format["json_schema"]
    assert spec["name"] in ("Joke", "JokeDict") and spec["strict"] is True
    assert set(spec["schema"]["properties"]) == {"setup", "punchline"}
    assert list(structured.stream("joke"))[-1] == expected


@pytest.mark.parametrize("schema, expected", [(Joke, Joke(**JOKE)), (JokeDict, JOKE)])
def test_structured_output_function_calling(serve, schema, expected):
    server = serve(chunk(call_delta(0, schema.__name__, JOKE)), chunk(finish="tool_calls"))
    structured = ChatParrot(base_url=URL).with_structured_output(schema,
                                                                 method="function_calling")
    assert structured.invoke("joke") == expected
    body = server.bodies[0]
    assert body["tool_choice"] == {"type": "function", "function": {"name": schema.__name__}}
    assert body["parallel_tool_calls"] is False and len(body["tools"]) == 1


def test_structured_output_json_mode_and_raw(serve):
    server = serve(chunk({"content": '{"setup": "Why?"'}), chunk(finish="length"))
    model = ChatParrot(base_url=URL)
    result = model.with_structured_output(Joke, method="json_mode", include_raw=True).invoke("j")
    assert server.bodies[0]["response_format"] == {"type": "json_object"}
    assert isinstance(result["raw"], AIMessage) and result["parsed"] is None
    assert result["parsing_error"] is not None  # cut off: reported, not raised
    with pytest.raises(ValueError, match="needs a schema"):
        model.with_structured_output(None)
    # Without a schema, a dict (JsonOutputParser closes a cut-off object, as it does anywhere).
    assert model.with_structured_output(method="json_mode").invoke("j") == {"setup": "Why?"}
