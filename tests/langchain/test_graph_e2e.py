"""Compiled LangGraph graphs reach the same final state as the plain graphs (greedy)."""
from __future__ import annotations

import operator
import warnings
from operator import itemgetter
from typing import Annotated, TypedDict

import pytest
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from langchain_parrot import ChatParrot, ParrotLLM, compile_graph, parrot_node

pytestmark = pytest.mark.e2e


class Debate(TypedDict, total=False):
    topic: str
    plan: str
    pro: str
    con: str
    verdict: str
    rounds: Annotated[list, operator.add]


@pytest.fixture
def chat(parrot_url: str) -> ChatParrot:
    return ChatParrot(temperature=0, max_tokens=8)


def compiled_quietly(builder: StateGraph):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return compile_graph(builder, keep_graph=True)


def test_linear_pipeline(parrot_url):
    llm = ParrotLLM(temperature=0, max_tokens=8, stop=["\n"])
    builder = StateGraph(Debate).add_sequence([
        ("plan", parrot_node("Topic: {topic}\nOne-line plan:", llm, "plan")),
        ("pro", parrot_node("Plan: {plan}\nBest argument:", llm, "pro")),
        ("verdict", parrot_node("Argument: {pro}\nVerdict:", llm, "verdict"))])
    builder.add_edge(START, "plan")
    compiled = compiled_quietly(builder)
    inputs = {"topic": "school uniforms"}
    assert compiled.invoke(inputs) == builder.compile().invoke(inputs)
    calls = compiled.last_graph["calls"]
    assert len(calls) == 3 and all(c["state"] == "done" for c in calls)


def multi_agent(chat: ChatParrot) -> StateGraph:
    """Planner fans out to two debaters, a judge joins them; a router may loop once."""
    builder = StateGraph(Debate)
    builder.add_node("planner", parrot_node("How should we debate {topic}?", chat, "plan"))
    builder.add_node("pro", parrot_node("Plan: {plan}\nArgue for {topic}.", chat, "pro"))
    builder.add_node("con", parrot_node("Plan: {plan}\nArgue against {topic}.", chat, "con"))
    builder.add_node("judge", parrot_node("For: {pro}\nAgainst: {con}\nWho wins?", chat,
                                          "verdict"))
    builder.add_node("count", lambda state: {"rounds": [len(state["verdict"])]})
    builder.add_edge(START, "planner")
    builder.add_edge("planner", "pro")
    builder.add_edge("planner", "con")
    builder.add_edge(["pro", "con"], "judge")
    builder.add_edge("judge", "count")
    builder.add_conditional_edges(
        "count", lambda state: "planner" if len(state["rounds"]) < 2 else END)
    return builder


async def test_fan_out_fan_in_with_router_and_function_node(chat):
    builder = multi_agent(chat)
    with pytest.warns(UserWarning, match=r"1 step\(s\) of this graph"):
        compiled = compile_graph(builder, keep_graph=True)
    inputs = {"topic": "homework"}
    plain = await builder.compile().ainvoke(inputs)
    assert await compiled.ainvoke(inputs) == plain
    assert len(plain["rounds"]) == 2
    assert len([c for c in compiled.last_graph["calls"] if c["kind"] == "llm"]) == 8


def test_unsupported_graph_runs_plainly(chat):
    class Free(TypedDict):
        x: str

    builder = StateGraph(Free)
    builder.add_node("a", lambda s: {"x": s["x"] + "!"}, defer=True)
    builder.add_edge(START, "a")
    with pytest.warns(UserWarning, match="runs plainly"):
        compiled = compile_graph(builder)
    assert compiled.invoke({"x": "hi"}) == {"x": "hi!"}


class MapReduce(TypedDict, total=False):
    items: list[str]
    item: str
    summaries: Annotated[list, operator.add]
    final: str


def map_reduce(chat: ChatParrot) -> StateGraph:
    """A router fans out one `Send("map", ...)` per item; a reduce node joins the results."""
    reduce_prompt = ChatPromptTemplate.from_messages(
        [("user", "Notes:\n{summaries}\nOne title for all of them:")])
    joined = {"summaries": RunnableLambda(itemgetter("summaries")) | "\n".join}
    builder = StateGraph(MapReduce)
    builder.add_node("map", parrot_node("Five words about {item}:", chat, "summaries",
                                        append=True))
    builder.add_node("reduce", RunnableParallel(
        final=joined | reduce_prompt | chat | StrOutputParser()))
    builder.add_conditional_edges(
        START, lambda state: [Send("map", {"item": x}) for x in state["items"]], ["map"])
    builder.add_edge("map", "reduce")
    builder.add_edge("reduce", END)
    return builder


def test_send_fan_out_is_one_program(chat):
    builder = map_reduce(chat)
    compiled = compiled_quietly(builder)
    inputs = {"items": ["owls", "tea", "rain"]}
    plain = builder.compile().invoke(inputs)
    assert compiled.invoke(inputs) == plain
    assert len(plain["summaries"]) == 3 and plain["final"]
    graph = compiled.last_graph
    assert sorted(c["kind"] for c in graph["calls"]) == ["llm"] * 4 + ["render"]  # + join
    assert is_one_program(graph)


def is_one_program(graph: dict) -> bool:
    """Was every call submitted before the first value was fetched (no client split)?"""
    whats = [r["what"] for r in graph["requests"]]
    first_get = next(i for i, w in enumerate(whats) if w.startswith("get"))
    return not any(w in ("add_variables", "submit_calls") for w in whats[first_get:])
