"""LangGraph on Parrot: `compile_graph(StateGraph)` runs a graph as Semantic-Variable programs.

    builder = StateGraph(State)
    builder.add_node("critic", parrot_node("Criticize: {draft}", llm, "critique"))
    ...
    compiled = compile_graph(builder)          # or a compiled graph (builder.compile())
    compiled.invoke({"topic": "parrots"})      # same final state as builder.compile().invoke

Nodes whose runnable the chain compiler handles (`parrot_node(...)`, or any compilable LCEL
returning a state update) are *planned* on the state, whose values may be text the server
has not produced yet; static edges (fan-out, fan-in, sequences) need no values, so
everything up to the next conditional edge is one program the server runs at once. A
conditional edge's router, and any node that is a plain Python function, runs on the client
on real values: the program splits there (`graph_runner.py` keeps LangGraph's superstep
semantics). A router's `Send`s fan out (map-reduce): the mapped node's calls are planned
together, so the map, a join of its results and the reduce are one program. Graph features
outside this model (checkpointers, `Command`, deferred nodes, error handlers,
non-TypedDict states) make the whole graph run plainly, with a warning.
"""
from __future__ import annotations

import typing
import warnings
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import BasePromptTemplate, ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import Runnable, RunnableConfig, RunnableParallel
from langchain_core.runnables.config import get_config_list

from langchain_parrot.compiler import Compiler
from langchain_parrot.graph_runner import GraphPlan, run_graph
from langchain_parrot.runnable import ProgramRunner, run_sync, warn_client_steps
from langchain_parrot.steps import as_list


def parrot_node(prompt: BasePromptTemplate | str, llm: Runnable, output_key: str, *,
                append: bool = False) -> Runnable:
    """A graph node that formats `prompt` from the state, calls `llm`, and writes the text to
    `output_key`. A string prompt is a user message for a chat model, else a text template.
    `append=True` writes `[text]`, for a list channel with an `operator.add` reducer (the map
    node of a map-reduce fanned out by `Send`)."""
    if isinstance(prompt, str):
        is_chat = isinstance(getattr(llm, "bound", llm), BaseChatModel)
        prompt = (ChatPromptTemplate.from_messages([("user", prompt)]) if is_chat
                  else PromptTemplate.from_template(prompt))
    chain = prompt | llm | StrOutputParser()
    return RunnableParallel({output_key: chain | as_list if append else chain})


class ParrotGraph(Runnable[dict, dict]):
    """A `StateGraph` run as Semantic-Variable programs (see the module docstring)."""

    def __init__(self, graph: Any, plan: GraphPlan | None, runner: ProgramRunner) -> None:
        self.graph = graph  # the compiled LangGraph graph (the plain fallback)
        self.plan = plan
        self.runner = runner

    @property
    def last_graph(self) -> dict | None:
        return self.runner.last_graph

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        return name or f"Parrot[{self.graph.get_name()}]" + (suffix or "")

    def invoke(self, input: dict, config: RunnableConfig | None = None, **kwargs: Any) -> dict:
        return run_sync(self.ainvoke(input, config, **kwargs))

    async def ainvoke(self, input: dict, config: RunnableConfig | None = None,
                      **kwargs: Any) -> dict:
        return (await self.abatch([input], config))[0]

    def batch(self, inputs: list[dict], config: Any = None, *, return_exceptions: bool = False,
              **kwargs: Any) -> list[dict]:
        return run_sync(self.abatch(inputs, config, return_exceptions=return_exceptions))

    async def abatch(self, inputs: list[dict], config: Any = None, *,
                     return_exceptions: bool = False, **kwargs: Any) -> list[dict]:
        if self.plan is None:
            return await self.graph.abatch(inputs, config, return_exceptions=return_exceptions)
        configs = get_config_list(config, len(inputs))
        return await self.runner.run_all(self._run_one, inputs, configs, return_exceptions)

    async def _run_one(self, program: Any, input: dict, config: RunnableConfig) -> dict:
        async def run(value: dict, config: RunnableConfig) -> dict:
            return await run_graph(self.plan, program, value, config)

        return await self._acall_with_config(run, input, config)


def compile_graph(graph: Any, *, keep_graph: bool = False) -> ParrotGraph:
    """Compile a `StateGraph` (or its compiled graph) to run on Parrot's Semantic Variables."""
    builder = getattr(graph, "builder", graph)
    compiled = graph if hasattr(graph, "builder") else builder.compile()
    reason = _unsupported(builder, compiled)
    if reason is not None:
        warnings.warn(f"langchain_parrot: {reason}; the graph runs plainly, not compiled.",
                      stacklevel=2)
        return ParrotGraph(compiled, None, ProgramRunner(None))
    compiler = Compiler()
    nodes = {name: compiler.compile(spec.runnable) for name, spec in builder.nodes.items()}
    warn_client_steps(compiler, what="graph")
    plan = GraphPlan.from_builder(builder, nodes, _output_keys(builder))
    return ParrotGraph(compiled, plan, ProgramRunner(compiler.server, keep_graph=keep_graph))


def _unsupported(builder: Any, compiled: Any) -> str | None:
    if not typing.is_typeddict(builder.state_schema):
        return "only TypedDict graph states are compiled"
    if getattr(compiled, "checkpointer", None) or builder.managed:
        return "checkpointers and managed values are not compiled"
    for name, spec in builder.nodes.items():
        if spec.defer or spec.ends or spec.is_error_handler or spec.error_handler_node:
            return f"node {name!r} uses defer/Command routing/error handling"
    return None


def _output_keys(builder: Any) -> list[str]:
    schema = builder.output_schema
    keys = typing.get_type_hints(schema) if schema is not builder.state_schema else {}
    return [k for k in builder.channels if not keys or k in keys]
