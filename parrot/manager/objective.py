"""Lazy activation and objective deduction over a session's graph.

A call may run only once it is *active*: it is eager, or a `get` reached one of its outputs
directly or through downstream calls. `request` walks backwards from the requested
variable, activating producers and handing them the strongest criteria seen
(LATENCY > THROUGHPUT > none). Calls with no model (joins, projections) are transparent: the
model calls on either side of one see each other as producer and consumer.

Task groups: the model calls that feed one consumer are siblings; the consumer can start only
when the slowest of them finishes, so they are scheduled together as a group.
"""
from __future__ import annotations

from parrot.manager.call import Call, CallKind
from parrot.manager.graph import Graph
from parrot.protocol.criteria import Criteria, stronger


def request(graph: Graph, var_id: str, criteria: Criteria | None) -> list[Call]:
    """A get on `var_id`: activate what produces it; return the calls newly activated."""
    var = graph.variable(var_id)
    var.is_requested = True
    return _propagate(graph, [var_id], criteria)


def on_calls_added(graph: Graph, calls: list[Call]) -> list[Call]:
    """Activate new calls that are eager, or whose outputs someone already waits for."""
    activated: list[Call] = []
    for call in calls:
        if call.is_eager:
            activated += _activate(graph, call, None)
        for var_id in call.output_vars:
            demand = _demand(graph, var_id)
            if demand is not False:
                activated += _propagate(graph, [var_id], demand)
    return activated


def _demand(graph: Graph, var_id: str) -> Criteria | None | bool:
    """The criteria a variable is already wanted with, or False if nobody wants it yet."""
    var = graph.variables[var_id]
    wanted = var.is_requested or any(graph.calls[c].is_active for c in var.consumers)
    return var.criteria if wanted else False


def _activate(graph: Graph, call: Call, criteria: Criteria | None) -> list[Call]:
    return _propagate(graph, [], criteria, start=call)


def _propagate(graph: Graph, var_ids: list[str], criteria: Criteria | None,
               start: Call | None = None) -> list[Call]:
    activated: list[Call] = []
    calls = [start] if start is not None else []
    stack = list(var_ids)
    while stack or calls:
        for call in calls:
            was_active, old = call.is_active, call.criteria
            call.activate(criteria)
            if not was_active:
                activated.append(call)
            if not was_active or call.criteria != old:
                stack.extend(call.input_vars)
        calls = []
        while stack:
            var = graph.variables[stack.pop()]
            var.criteria = stronger(var.criteria, criteria)
            producer = graph.calls.get(var.producer) if var.producer else None
            if producer is not None and (
                    not producer.is_active
                    or stronger(producer.criteria, criteria) != producer.criteria):
                calls.append(producer)
    return activated


def llm_producers(graph: Graph, call: Call) -> set[str]:
    """Model calls whose outputs reach `call`'s inputs, looking through model-free calls."""
    found: set[str] = set()
    stack = [graph.variables[v].producer for v in call.input_vars]
    while stack:
        producer_id = stack.pop()
        if producer_id is None:  # set by the client
            continue
        producer = graph.calls[producer_id]
        if producer.kind != CallKind.LLM:
            stack.extend(graph.variables[v].producer for v in producer.input_vars)
        else:
            found.add(producer.id)
    return found


def llm_consumers(graph: Graph, call: Call) -> set[str]:
    """Active model calls reading `call`'s outputs, looking through model-free calls."""
    found: set[str] = set()
    stack = [c for v in call.output_vars for c in graph.variables[v].consumers]
    while stack:
        consumer = graph.calls[stack.pop()]
        if not consumer.is_active:
            continue
        if consumer.kind != CallKind.LLM:
            stack.extend(c for v in consumer.output_vars for c in graph.variables[v].consumers)
        else:
            found.add(consumer.id)
    return found


def llm_ancestors(graph: Graph, call: Call) -> set[str]:
    """Every model call upstream of `call`."""
    found: set[str] = set()
    stack = [call]
    while stack:
        for producer in llm_producers(graph, stack.pop()):
            if producer not in found:
                found.add(producer)
                stack.append(graph.calls[producer])
    return found


def task_group(graph: Graph, call: Call) -> tuple[str, int] | None:
    """(group id, size) if `call` is one of several model calls feeding one consumer in
    parallel (a producer upstream of another producer of that consumer is not a sibling)."""
    for consumer_id in sorted(llm_consumers(graph, call)):
        siblings = llm_producers(graph, graph.calls[consumer_id])
        upstream = set().union(*(llm_ancestors(graph, graph.calls[s]) for s in siblings))
        parallel = siblings - upstream
        if call.id in parallel and len(parallel) >= 2:
            return f"feeds:{consumer_id}", len(parallel)
    return None


def remaining_depth(graph: Graph, call: Call, memo: dict[str, int]) -> int:
    """Model calls on the longest active path from `call` to the end (itself included)."""
    if call.id not in memo:
        memo[call.id] = 1 + max((remaining_depth(graph, graph.calls[c], memo)
                                 for c in llm_consumers(graph, call)), default=0)
    return memo[call.id]
