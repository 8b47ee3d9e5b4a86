"""Readiness: which active calls can run now. Model-free calls (joins, projections) run right
here, inline."""
from __future__ import annotations

from parrot.manager.call import Call, CallKind
from parrot.manager.graph import Graph
from parrot.manager.projection import run_projection


def collect_ready(graph: Graph) -> tuple[list[Call], list[Call]]:
    """(model calls ready to dispatch, calls that just failed because an input failed).

    Repeats until nothing changes, since a join that completes or a call that fails can make
    further calls ready or failed. Calls not yet activated by a get are left alone (lazy).
    """
    failed: list[Call] = []
    changed = True
    while changed:
        changed = False
        for call in graph.pending_calls():
            if not call.is_active:
                continue
            reason = graph.failed_input(call)
            if reason is not None:
                failed += graph.fail_call(call, reason)
                changed = True
            elif call.kind == CallKind.RENDER and graph.is_ready(call):
                run_render(graph, call)
                changed = True
            elif call.kind == CallKind.PROJECT and graph.is_ready(call):
                failed += run_projection(graph, call)
                changed = True
    ready = [c for c in graph.pending_calls()
             if c.kind == CallKind.LLM and c.is_active and graph.is_ready(c)]
    for call in ready:
        call.stamp("ready")
    return ready, failed


def run_render(graph: Graph, call: Call) -> None:
    """A render call's single output is its rendered text (no model)."""
    for event in ("ready", "started", "first_token"):
        call.stamp(event)
    (stage,) = call.stages
    text = call.render(stage.pieces, graph.value_of)
    assert text is not None, "render call run before its inputs were ready"
    graph.variables[call.outputs[stage.output]].resolve(text)
    call.finish()
