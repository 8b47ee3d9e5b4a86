"""compile_graph's superstep loop without a server: Send fan-out on client-side nodes."""
from __future__ import annotations

import operator
import warnings
from typing import Annotated, TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import Send

from langchain_parrot import ChatParrot, compile_graph, parrot_node
from langchain_parrot.compiler import Compiler
from langchain_parrot.graph_runner import next_tasks
from langchain_parrot.steps import ListStep


class Fan(TypedDict, total=False):
    items: list[str]
    done: Annotated[list, operator.add]
    total: str


def fan_out_graph() -> StateGraph:
    builder = StateGraph(Fan)
    builder.add_node("map", lambda arg: {"done": [arg["item"].upper()]})
    builder.add_node("side", lambda state: {"done": ["side"]})
    builder.add_node("reduce", lambda state: {"total": "+".join(state["done"])})
    builder.add_conditional_edges(
        START, lambda s: ["side", *(Send("map", {"item": x}) for x in s["items"])],
        ["map", "side"])
    builder.add_edge("map", "reduce")
    builder.add_edge("side", "reduce")
    builder.add_edge("reduce", END)
    return builder


def test_send_fan_out_matches_langgraph():
    builder = fan_out_graph()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # no Parrot model: runs on the client
        compiled = compile_graph(builder)
    assert compiled.plan is not None  # compiled, not the plain fallback
    inputs = {"items": ["a", "b", "c"]}
    expected = builder.compile().invoke(inputs)
    assert expected["done"] == ["side", "A", "B", "C"]  # edge tasks first, then Sends in order
    assert compiled.invoke(inputs) == expected


def test_next_tasks_orders_edge_nodes_then_sends():
    a, b = Send("map", {"x": 1}), Send("map", {"x": 1})
    assert next_tasks(["z", a, "b", END, "z", b]) == ["b", "z", a, b]


def test_append_node_compiles_to_a_list_step():
    chat = ChatParrot(base_url="http://127.0.0.1:9", max_tokens=4)
    step = Compiler().compile(parrot_node("{item}", chat, "out", append=True))
    assert isinstance(step.branches["out"].steps[-1], ListStep)
