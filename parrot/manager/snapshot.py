"""Read-only snapshots of the manager for the dashboard (parrot/server/dashboard.py).

Nothing here changes state: no `touch` (watching a session does not keep it alive, nor
fills its request log) and no activation. A call's *phase* refines its state for display:

    waiting -> ready -> queued -> prefilling -> decoding -> done | failed | cancelled

- waiting: an input has no value yet, or nobody asked for the call yet (`active` false);
- ready: runnable, not yet handed to an engine (a dispatch pass is due);
- queued: handed to an engine, but its shared prefix is still being filled or its engine
  request waits for a batch slot;
- prefilling: the engine is computing its prompt; decoding: its tokens are coming.

A running call's context is the one in its run record (`CallRun`, kept by the executor);
what the engine holds for it (blocks, whether it is in the running batch) comes from the
engine's public status view (`EngineClient.status()`), read once per snapshot.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from parrot.engine.client import EngineClient
from parrot.engine.sampling_params import Priority
from parrot.engine.status import ContextStatus, EngineStatus
from parrot.manager.call import Call, CallKind, CallState
from parrot.manager.call_run import CallRun
from parrot.manager.graph import Graph
from parrot.manager.objective import task_group
from parrot.manager.prefix_pool import PrefixPool
from parrot.manager.session import Session

PHASES = ("waiting", "ready", "queued", "prefilling", "decoding", "done", "failed", "cancelled")
MAX_GROUP_SCAN = 512  # deduce task groups of undispatched calls only in graphs this small
PREVIEW_CHARS = 120

_FINISHED = {CallState.DONE: "done", CallState.FAILED: "failed",
             CallState.CANCELLED: "cancelled"}


def sessions_summary(sessions: Iterable[Session]) -> list[dict]:
    """Ids and counts only: what any API-key holder may see of every open session."""
    return [{"session_id": s.id, "created_at": s.created_at,
             "num_calls": len(s.graph.calls), "num_variables": len(s.graph.variables),
             "calls": dict(Counter(c.state.value for c in s.graph.calls.values())),
             "num_shared_prefixes": len(s.pool.prefixes)}
            for s in sessions if not s.is_closed]


def session_view(session: Session, engines: list[EngineClient],
                 runs: Mapping[Call, CallRun]) -> dict:
    """The session's graph (calls with phases, variables, task groups) and context tree."""
    graph = session.graph
    statuses = [engine.status() for engine in engines]
    groups = task_groups(graph)
    group_of = {cid: g["id"] for g in groups for cid in g["members"]}
    ctx_of: dict[str, ContextStatus] = {}
    calls = []
    for call in graph.calls.values():
        ctx = _run_context(runs.get(call), statuses)
        if ctx is not None:
            ctx_of[call.id] = ctx
        calls.append(call_view(call, call_phase(call, graph, session.pool, ctx),
                               group_of.get(call.id), ctx))
    return {"session_id": session.id, "created_at": session.created_at,
            "closed": session.is_closed,
            "counts": dict(Counter(c["phase"] for c in calls)),
            "calls": calls,
            "variables": [variable_view(v) for v in graph.variables.values()],
            "groups": groups,
            "context_tree": context_tree(session, ctx_of, statuses)}


def variable_value(session: Session, var_id: str) -> dict:
    """A variable's whole value (or the text generated so far); never waits, never asks."""
    var = session.graph.variable(var_id)
    text = var.value if var.value is not None else "".join(var.partial)
    return {"id": var.id, "name": var.name, "state": var.state.value, "value": text,
            "is_final": var.value is not None, "error": var.error}


# -- calls ------------------------------------------------------------------------------
def _run_context(run: CallRun | None, statuses: list[EngineStatus]) -> ContextStatus | None:
    if run is None or run.ctx is None:
        return None
    return statuses[run.engine_index].contexts.get(run.ctx)


def call_phase(call: Call, graph: Graph, pool: PrefixPool, ctx: ContextStatus | None) -> str:
    """The call's display phase; `ctx` is what its engine reports of its context."""
    if call.state in _FINISHED:
        return _FINISHED[call.state]
    if call.state == CallState.PENDING:
        return "ready" if call.is_active and graph.is_ready(call) else "waiting"
    if "first_token" in call.times:
        return "decoding"
    if _waits_for_prefix(call, pool) or ctx is None or not ctx.is_computing:
        return "queued"
    return "prefilling"


def call_view(call: Call, phase: str, group: str | None, ctx: ContextStatus | None) -> dict:
    return {
        "id": call.id, "name": call.name, "kind": call.kind.value, "state": call.state.value,
        "phase": phase, "active": call.is_active, "eager": call.is_eager,
        "criteria": call.criteria.value if call.criteria else None,
        "priority": Priority(call.priority).name.lower() if call.priority is not None else None,
        "group": group, "engine": call.engine,
        "inputs": call.input_vars, "outputs": dict(call.outputs), "error": call.error,
        "tokens": {"prompt": call.prompt_tokens, "shared": call.shared_tokens,
                   "completion": call.completion_tokens},
        "blocks_held": _blocks_held(ctx), "times": dict(call.times),
    }


def task_groups(graph: Graph) -> list[dict]:
    """Task groups (model calls feeding one consumer in parallel): those the scheduler set at
    dispatch, and, in small graphs, those of active calls not dispatched yet."""
    members: dict[str, list[str]] = {}
    can_scan = len(graph.calls) <= MAX_GROUP_SCAN
    for call in graph.calls.values():
        group = call.group
        if (group is None and can_scan and call.kind == CallKind.LLM and call.is_active
                and call.state == CallState.PENDING):
            found = task_group(graph, call)
            group = found[0] if found else None
        if group is not None:
            members.setdefault(group, []).append(call.id)
    return [{"id": gid, "members": ids} for gid, ids in members.items()]


def variable_view(var: Any) -> dict:
    """The variable's own JSON, its value preview under the dashboard's names."""
    view = var.to_json(PREVIEW_CHARS)
    view["preview"], view["chars"] = view.pop("value_preview"), view.pop("value_chars")
    return view


# -- the context tree -------------------------------------------------------------------
def context_tree(session: Session, ctx_of: dict[str, ContextStatus],
                 statuses: list[EngineStatus]) -> dict:
    """Which calls share which prefix: the session's live shared prefixes, and those its
    calls forked earlier (found again from their prompt tokens), nested by prefix."""
    nodes: dict[tuple[int, tuple[int, ...]], dict] = {}
    block_size = statuses[0].block_size if statuses else None

    def node(engine: int, tokens: list[int]) -> dict:
        key = (engine, tuple(tokens))
        if key not in nodes:
            nodes[key] = {"id": _prefix_id(engine, tokens), "engine": engine,
                          "tokens": len(tokens), "blocks": _blocks(len(tokens), block_size),
                          "live": False, "filled": True, "blocks_held": 0,
                          "parent": None, "forked_by": [], "waiting": []}
        return nodes[key]

    for sp in session.pool.prefixes.values():
        node(sp.engine_index, sp.tokens).update(
            live=True, filled=sp.filled.is_set(),
            blocks_held=_blocks_held(statuses[sp.engine_index].contexts.get(sp.ctx)),
            waiting=sorted(h for h in sp.holders if h in session.graph.calls))
    started = [c for c in session.graph.calls.values()
               if c.kind == CallKind.LLM and c.engine is not None]
    prefix_of: dict[str, str] = {}
    for call in started:
        if call.shared_tokens and call.first_tokens:
            shared = node(call.engine, call.first_tokens[:call.shared_tokens])
            shared["forked_by"].append(call.id)
            prefix_of[call.id] = shared["id"]
    _link_parents(nodes)
    calls = [{"call": c.id, "name": c.name, "engine": c.engine,
              "prefix": prefix_of.get(c.id),
              "prompt_tokens": c.prompt_tokens or len(c.first_tokens or ()),
              "shared_tokens": c.shared_tokens, "blocks_held": _blocks_held(ctx_of.get(c.id)),
              "is_live": c.id in ctx_of} for c in started]
    return {"block_size": block_size, "prefixes": list(nodes.values()), "calls": calls,
            "num_shared_tokens": sum(c.shared_tokens for c in started)}


def _link_parents(nodes: dict[tuple[int, tuple[int, ...]], dict]) -> None:
    """Each prefix's parent: the longest other prefix on its engine that it starts with."""
    keys = sorted(nodes, key=lambda k: len(k[1]))
    for i, (engine, tokens) in enumerate(keys):
        for other_engine, other in reversed(keys[:i]):
            if other_engine == engine and len(other) < len(tokens) \
                    and tokens[:len(other)] == other:
                nodes[(engine, tokens)]["parent"] = nodes[(other_engine, other)]["id"]
                break


def _prefix_id(engine: int, tokens: list[int]) -> str:
    """A stable id for a prefix (the same while it lives and after it is freed)."""
    digest = hashlib.blake2b(repr(tokens).encode(), digest_size=4).hexdigest()
    return f"prefix:{engine}:{len(tokens)}:{digest}"


def _waits_for_prefix(call: Call, pool: PrefixPool) -> bool:
    return any(call.id in sp.holders and not sp.filled.is_set()
               for sp in pool.prefixes.values())


def _blocks_held(ctx: ContextStatus | None) -> int | None:
    return ctx.num_blocks if ctx is not None else None


def _blocks(num_tokens: int, block_size: int | None) -> int | None:
    return -(-num_tokens // block_size) if block_size else None
