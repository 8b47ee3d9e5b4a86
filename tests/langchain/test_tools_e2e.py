"""ChatParrot's tools, structured output and logprobs, and a LangGraph ReAct agent, against
the real server and model (tool choices forced where a 135M model's judgment is too weak)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langgraph.prebuilt import create_react_agent
from pydantic import BaseModel

from examples.agent_tools import TOOLS, get_weather, multiply
from langchain_parrot import ChatParrot, ParrotLLM

pytestmark = pytest.mark.e2e



class City(BaseModel):
    """A city and its country."""

    name: str
    country: str


@pytest.fixture
def chat(parrot_url: str) -> ChatParrot:
    return ChatParrot(temperature=0, max_tokens=64)


def test_named_tool_choice_gives_a_parsed_call(chat):
    model = chat.bind_tools(TOOLS, tool_choice="multiply", parallel_tool_calls=False)
    message = model.invoke("What is 6 times 7?")
    [call] = message.tool_calls
    assert call["name"] == "multiply" and set(call["args"]) == {"a", "b"}
    assert all(isinstance(v, int) for v in call["args"].values()) and call["id"]
    assert message.response_metadata["finish_reason"] == "tool_calls"
    streamed = None
    for chunk in model.stream("What is 6 times 7?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert [(c["name"], c["args"]) for c in streamed.tool_calls] == [("multiply", call["args"])]
    assert json.loads(streamed.tool_call_chunks[0]["args"]) == call["args"]


async def test_required_tool_choice_calls_one_of_the_tools(chat):
    message = await chat.bind_tools(TOOLS, tool_choice="any").ainvoke(
        "What is the weather in Paris?")
    assert message.tool_calls and message.tool_calls[0]["name"] in ("multiply", "get_weather")
    assert not message.invalid_tool_calls


def test_tool_results_in_the_history_reach_the_model(chat):
    call = {"name": "get_weather", "args": {"city": "Paris"}, "id": "call_1",
            "type": "tool_call"}
    question = HumanMessage("What is the weather in Paris?")
    history = [question, AIMessage("", tool_calls=[call]),
               ToolMessage(get_weather.invoke(call["args"]), tool_call_id="call_1")]
    model = chat.bind_tools(TOOLS, tool_choice="none")
    answer = model.invoke(history)
    assert isinstance(answer, AIMessage) and answer.content and not answer.tool_calls
    bare = model.invoke([question])
    assert answer.usage_metadata["input_tokens"] > bare.usage_metadata["input_tokens"] + 10


@pytest.mark.parametrize("method", ["json_schema", "function_calling", "json_mode"])
def test_structured_output_parses(chat, method):
    prompt = ("Name a city in France. Answer in JSON with keys 'name' and 'country'."
              if method == "json_mode" else "Name a city in France.")
    city = chat.with_structured_output(City, method=method).invoke(prompt)
    assert isinstance(city, City) and city.name
    raw = chat.with_structured_output(City.model_json_schema(), method=method,
                                      include_raw=True).invoke(prompt)
    assert raw["parsing_error"] is None and isinstance(raw["raw"], AIMessage)
    assert set(raw["parsed"]) >= {"name", "country"}


def test_chat_logprobs(parrot_url):
    model = ChatParrot(temperature=0, max_tokens=6, logprobs=True, top_logprobs=2)
    message = model.invoke("Say hello.")
    content = message.response_metadata["logprobs"]["content"]
    assert len(content) == message.usage_metadata["output_tokens"]
    assert "".join(t["token"] for t in content) == message.content
    assert all(len(t["top_logprobs"]) == 2 and t["logprob"] <= 0 for t in content)
    streamed = None
    for chunk in ChatParrot(temperature=0, max_tokens=6).bind(logprobs=True).stream("Say hello."):
        streamed = chunk if streamed is None else streamed + chunk
    assert [t["token"] for t in streamed.response_metadata["logprobs"]["content"]] == [
        t["token"] for t in content]


def test_llm_logprobs(parrot_url):
    llm = ParrotLLM(temperature=0, max_tokens=5, logprobs=2)
    generation = llm.generate(["The capital of France is"]).generations[0][0]
    logprobs = generation.generation_info["logprobs"]
    assert "".join(logprobs["tokens"]) == generation.text
    assert len(logprobs["token_logprobs"]) == len(logprobs["tokens"]) == 5
    assert all(len(top) <= 2 for top in logprobs["top_logprobs"])
    assert logprobs["text_offset"] == sorted(logprobs["text_offset"])


def forced_steps(chat: ChatParrot):
    """The agent's model: multiply first, then get_weather, then an answer in text (closed
    schemas, strict=True: the 135M model otherwise adds invented keys to the arguments). The
    loop itself (model -> tool call -> ToolNode -> result -> model) is LangGraph's."""
    def choose(state: dict, runtime) -> object:
        done = sum(isinstance(m, ToolMessage) for m in state["messages"])
        choice = ["multiply", "get_weather", "none"][min(done, 2)]
        return chat.bind_tools(TOOLS, tool_choice=choice, parallel_tool_calls=False,
                               strict=True)

    return choose


def test_react_agent_runs_a_multi_step_tool_loop(chat):
    agent = create_react_agent(forced_steps(chat), TOOLS)
    question = "What is 6 times 7, and what is the weather in Paris?"
    messages = agent.invoke({"messages": [HumanMessage(question)]})["messages"]
    assert [type(m).__name__ for m in messages] == [
        "HumanMessage", "AIMessage", "ToolMessage", "AIMessage", "ToolMessage", "AIMessage"]
    _, first, first_result, second, second_result, final = messages
    [multiply_call], [weather_call] = first.tool_calls, second.tool_calls
    assert (multiply_call["name"], weather_call["name"]) == ("multiply", "get_weather")
    # The tools really ran on the model's arguments, and their results went back to it.
    assert first_result.content == str(multiply.invoke(multiply_call["args"]))
    assert second_result.content == get_weather.invoke(weather_call["args"])
    assert (first_result.tool_call_id, second_result.tool_call_id) == (
        multiply_call["id"], weather_call["id"])
    assert final.content and not final.tool_calls
    # The second step read the first call and its result (the last, tool_choice="none", is
    # prompted without the tool definitions, so it is not comparable).
    assert second.usage_metadata["input_tokens"] > first.usage_metadata["input_tokens"] + 10


def test_example_agent_runs(parrot_url):
    script = Path(__file__).parents[2] / "examples" / "agent_tools.py"
    out = subprocess.run([sys.executable, str(script), "--url", parrot_url], check=True,
                         capture_output=True, text=True, timeout=300).stdout.splitlines()
    assert out[0].startswith("user: ") and out[-1].startswith("model: ")
    assert sum(line.startswith("model calls ") for line in out) == 2
    assert sum(line.startswith("tool ") for line in out) == 2
