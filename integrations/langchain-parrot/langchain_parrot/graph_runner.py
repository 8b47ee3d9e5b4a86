"""LangGraph's superstep loop over compiled nodes, with state values that may be planned text.

The semantics follow LangGraph's Pregel loop for StateGraphs: the nodes triggered in a step
all read the state as it was at the start of the step; their updates are applied together
(in node-name order) through the graph's own channels (`LastValue` refuses two writes to a
key in one step, reducers combine); a node's static edges and satisfied join edges trigger
their targets in the next step; a conditional edge's router reads the state with that
node's own update applied. Routers need real values, so they materialize the state: the
server runs everything planned so far first. A reducer other than list `operator.add` also
gets real values (it may not be structural).

A router may return `Send(node, arg)`s (map-reduce fan-out): each is a task of its own in
the next step, running `node` on `arg` instead of the state. As in LangGraph, the edge-
triggered tasks' updates apply first (by node name), then the Sends' in the order sent; so
`[Send("map", {"item": x}) for x in items]` into a list channel with `operator.add` keeps
the items' order, and the map calls are planned together: one program up to the next router.
"""
from __future__ import annotations

import asyncio
import operator
from dataclasses import dataclass, field
from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.channels.binop import BinaryOperatorAggregate
from langgraph.constants import END, START
from langgraph.errors import GraphRecursionError, InvalidUpdateError
from langgraph.types import Command, Send

from langchain_parrot.program import Program
from langchain_parrot.steps import RunContext, Step
from langchain_parrot.symbols import is_symbolic

DEFAULT_RECURSION_LIMIT = 25
Task = str | Send  # a node triggered by edges (reads the state), or a Send (reads its arg)


@dataclass
class GraphPlan:
    nodes: dict[str, Step]
    channels: dict[str, Any]  # key -> LangGraph channel (a template, copied per run)
    edges: dict[str, list[str]]  # start -> targets
    joins: list[tuple[tuple[str, ...], str]]  # (all of these starts) -> target
    branches: dict[str, list[Any]]  # start -> BranchSpecs
    output_keys: list[str]

    @classmethod
    def from_builder(cls, builder: Any, nodes: dict[str, Step],
                     output_keys: list[str]) -> GraphPlan:
        edges: dict[str, list[str]] = {}
        for start, end in sorted(builder.edges):
            edges.setdefault(start, []).append(end)
        branches = {start: list(specs.values()) for start, specs in builder.branches.items()}
        return cls(nodes, dict(builder.channels), edges, sorted(builder.waiting_edges),
                   branches, output_keys)


@dataclass
class _GraphRun:
    plan: GraphPlan
    ctx: RunContext
    channels: dict[str, Any]
    joins_seen: dict[int, set[str]] = field(default_factory=dict)

    @property
    def program(self) -> Program:
        return self.ctx.program

    async def step(self, tasks: list[Task]) -> list[Task]:
        """Run `tasks` on the current state; apply their updates; the next step's tasks."""
        state = read(self.channels)
        updates = await asyncio.gather(*(self.run_task(t, state) for t in tasks))
        triggered: list[Task] = []
        for task, update in zip(tasks, updates):
            triggered += await self.successors(task_node(task), update)
        await self.write(self.channels, updates)
        return next_tasks(triggered)

    async def run_task(self, task: Task, state: dict[str, Any]) -> dict[str, Any]:
        if isinstance(task, Send):
            return await self.run_node(task.node, task.arg)
        return await self.run_node(task, dict(state))

    async def run_node(self, name: str, node_input: Any) -> dict[str, Any]:
        update = await self.plan.nodes[name].run(self.ctx, node_input)
        if update is None:
            return {}
        if isinstance(update, (Command, Send)) or not isinstance(update, dict):
            raise InvalidUpdateError(f"Expected dict, got {update!r} (node {name!r}); "
                                     "a node returning Command is not compiled by "
                                     "langchain_parrot")
        return {k: v for k, v in update.items() if k in self.channels}

    async def successors(self, name: str, update: dict[str, Any]) -> list[Task]:
        targets: list[Task] = list(self.plan.edges.get(name, ()))
        for i, (starts, end) in enumerate(self.plan.joins):
            if name in starts:
                seen = self.joins_seen.setdefault(i, set())
                seen.add(name)
                if seen == set(starts):
                    targets.append(end)
                    seen.clear()
        for branch in self.plan.branches.get(name, ()):
            targets += await self.route(branch, update)
        return targets

    async def route(self, branch: Any, update: dict[str, Any]) -> list[str]:
        """A conditional edge: its router on the real state with this node's update."""
        local = {k: ch.copy() for k, ch in self.channels.items()}
        await self.write(local, [update])
        state = await self.program.materialize({**update, **read(local)})
        result = await branch.path.ainvoke(state, self.ctx.config)
        results = result if isinstance(result, (list, tuple)) else [result]
        targets = [r if isinstance(r, Send) else branch.ends[r] if branch.ends else r
                   for r in results]
        if any(t is None or t == START for t in targets):
            raise ValueError("Branch did not return a valid destination")
        for send in (t for t in targets if isinstance(t, Send)):
            if send.node not in self.plan.nodes:
                raise InvalidUpdateError(f"Invalid node name {send.node!r} in Send")
        return targets

    async def write(self, channels: dict[str, Any], updates: list[dict[str, Any]]) -> None:
        for key in dict.fromkeys(k for u in updates for k in u):
            values = [u[key] for u in updates if key in u]
            channel = channels[key]
            if isinstance(channel, BinaryOperatorAggregate) and not _is_structural(channel,
                                                                                 values):
                values = await self.program.materialize(values)
            channel.update(values)


def task_node(task: Task) -> str:
    return task.node if isinstance(task, Send) else task


def next_tasks(triggered: list[Task]) -> list[Task]:
    """The next step's tasks in LangGraph's order of applying updates: the edge-triggered
    nodes once each, by name, then every Send in the order sent."""
    names = sorted({t for t in triggered if isinstance(t, str) and t != END})
    return [*names, *(t for t in triggered if isinstance(t, Send))]


def _is_structural(channel: BinaryOperatorAggregate, values: list[Any]) -> bool:
    """Can the reducer run on planned values? (list concatenation can; others may not)."""
    if not is_symbolic(values):
        return True
    return channel.operator is operator.add and all(isinstance(v, list) for v in values)


def read(channels: dict[str, Any], keys: list[str] | None = None) -> dict[str, Any]:
    return {k: ch.get() for k, ch in channels.items()
            if (keys is None or k in keys) and ch.is_available()}


async def run_graph(plan: GraphPlan, program: Program, input: dict[str, Any],
                    config: RunnableConfig | None) -> dict[str, Any]:
    """Run the graph from START on `input`; the final state's output keys, real values."""
    run = _GraphRun(plan, RunContext(program, config),
                    {k: ch.copy() for k, ch in plan.channels.items()})
    if not isinstance(input, dict):
        raise InvalidUpdateError(f"Expected dict input, got {input!r}")
    await run.write(run.channels, [{k: v for k, v in input.items() if k in run.channels}])
    triggered = next_tasks(await run.successors(START, {}))
    limit = (config or {}).get("recursion_limit", DEFAULT_RECURSION_LIMIT)
    steps = 0
    while triggered:
        steps += 1
        if steps > limit:
            raise GraphRecursionError(f"Recursion limit of {limit} reached without hitting a "
                                      "stop condition.")
        triggered = await run.step(triggered)
    return await program.materialize(read(run.channels, plan.output_keys))
