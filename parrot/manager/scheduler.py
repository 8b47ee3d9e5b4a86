"""App-centric scheduling policy: order ready calls, share their prefixes, place them on engines.

For the calls of one session that became ready in one pass:

1. Objective -> engine priority. A call on the path of a LATENCY get runs as `Priority.LATENCY`
   (served first, small token budget), except members of a task group (several calls feeding
   one consumer), which run as `Priority.NORMAL` so the whole group fills one large batch and
   finishes together; THROUGHPUT work runs as `Priority.THROUGHPUT`; eager calls nobody
   waits for yet run as NORMAL.
2. Order: priority, then deepest-first (longest chain of model calls still to run after this
   one), then submission time.
3. Prefix sharing: the first prompt segment of every ready call, and the known constant
   beginning of every active call still waiting for inputs, go through `shared_prefixes`; each
   branching point with a ready member becomes a shared context (one prefill, many forks),
   kept while its known pending consumers still need it.
   A call whose template's calls (in any session) begin alike forks the app prefix for that
   beginning (`app_prefixes.py`), held by its session; session prefixes longer than it fork it.
4. Placement (`placement`, default "prefix-affine"): a call forking a shared prefix runs on
   that prefix's engine; others go to the least-loaded engine. "least-loaded" and
   "round-robin" ignore prefixes (no shared contexts: each call opens its own, and only the
   engine's prefix cache reuses what that engine computed); they exist to measure placement
   (`benchmarks/scale_sim.py`).
"""
from __future__ import annotations

from typing import Any, Callable, NamedTuple

from parrot.engine.sampling_params import Priority
from parrot.manager.app_prefixes import AppPrefixes, EngineChoice
from parrot.manager.call import Call
from parrot.manager.graph import Graph
from parrot.manager.objective import remaining_depth, task_group
from parrot.manager.prefix import shared_prefixes
from parrot.manager.prefix_pool import PrefixPool, SharedPrefix
from parrot.protocol.criteria import Criteria

PENDING_MARGIN = 2  # tokens dropped from a partial prompt: its end may re-tokenize
PLACEMENTS = ("prefix-affine", "least-loaded", "round-robin")


class Assignment(NamedTuple):
    call: Call
    engine_index: int
    parent: SharedPrefix | None  # fork from this shared prefix, or start a fresh context


def engine_priority(criteria: Criteria | None, group_size: int) -> Priority:
    if criteria == Criteria.LATENCY:
        return Priority.NORMAL if group_size >= 2 else Priority.LATENCY
    if criteria == Criteria.THROUGHPUT:
        return Priority.THROUGHPUT
    return Priority.NORMAL


def prioritize(graph: Graph, calls: list[Call]) -> list[Call]:
    """Deduce each call's priority and task group; return them in dispatch order."""
    memo: dict[str, int] = {}
    for call in calls:
        group = task_group(graph, call)
        call.assign(int(engine_priority(call.criteria, group[1] if group else 1)),
                    group[0] if group else None)
    return sorted(calls, key=lambda c: (c.priority, -remaining_depth(graph, c, memo),
                                        c.times["submitted"]))


# A session prefix with at most this many ready members is cut to whole KV blocks: its
# fill is then all prefix-cache hits when earlier calls computed its text (a multi-stage
# program re-creates such prefixes stage after stage, each partial tail computed anew), and
# each member's prompt continues where the cache can match it. More members share the
# partial tail instead (each would recompute it): multi-agent 1,560 -> 1,330 prefill
# tokens with the cut; map-reduce's 4 maps compute fewer tokens without it.
WHOLE_BLOCKS_UP_TO = 2


class Scheduler:
    def __init__(self, loads: list[int], tokenize: Callable[[str], list[int]],
                 apps: AppPrefixes, min_shared_tokens: int = 16,
                 is_alive: Callable[[int], bool] = lambda index: True,
                 placement: str = "prefix-affine") -> None:
        if placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, got {placement!r}")
        self.placement = placement
        self._next = 0  # round-robin: the engine after the last one given a call
        self.loads = loads  # in-flight work per engine, kept by the executor
        self.is_alive = is_alive  # a lost engine gets no new work (engine/client.py)
        self.tokenize = tokenize
        self.apps = apps
        self.min_shared_tokens = min_shared_tokens
        self._reserved = [0] * len(loads)

    def plan(self, session_id: str, graph: Graph, pool: PrefixPool, ready: list[Call],
             waiting: list[Call]) -> list[Assignment]:
        """Assignments for `ready` calls. `waiting` are the session's other pending model
        calls: their known prompt beginnings shape the shared prefixes, and the active ones
        (someone waits for them) also keep those prefixes alive until they run."""
        self._reserved = [0] * len(self.loads)  # calls bound to new shared prefixes, this pass
        ordered = prioritize(graph, ready)
        prompts = [(c, self.first_prompt(graph, c)) for c in ordered]
        if self.placement != "prefix-affine":
            return [Assignment(call, self._place(None), None) for call, _ in prompts]
        partial = [(c, self.known_prompt(graph, c)) for c in waiting]
        engines = EngineChoice(lambda: self._app_engine(pool), self._least_loaded, self._load)
        apps = {c.id: self.apps.prefix_for(c.template.source, tokens, session_id, c.priority,
                                           engines) for c, tokens in prompts}
        parents = self._share(pool, apps, prompts, [p for p in partial if p[1]])
        return [Assignment(call, self._place(parents[call.id]), parents[call.id])
                for call, _ in prompts]

    def first_prompt(self, graph: Graph, call: Call) -> list[int]:
        """Tokens of the text before the call's first output (cached: values never change)."""
        if call.first_tokens is None:
            text = call.render(call.stages[0].pieces, graph.value_of)
            call.set_first_tokens(self.tokenize(text))
        return call.first_tokens

    def known_prompt(self, graph: Graph, call: Call) -> list[int]:
        """Tokens of the first stage up to its first missing input, minus a safety margin."""
        text = call.known_prefix(graph.value_of)
        if call.known_tokens is None or call.known_tokens[0] != text:
            tokens = self.tokenize(text)
            call.set_known_tokens(text, tokens[:-PENDING_MARGIN] if len(tokens) > PENDING_MARGIN
                                  else [])
        return call.known_tokens[1]

    def _share(self, pool: PrefixPool, apps: dict[str, SharedPrefix | None],
               ready: list[tuple[Call, list[int]]],
               waiting: list[tuple[Call, list[int]]]) -> dict[str, SharedPrefix | None]:
        """Each call's parent: the longest of its session's shared prefixes (made here for the
        trie's nodes, or live) and its app prefix. Session prefixes are held by the calls
        that fork them; app prefixes by the session (already)."""
        seqs = [tokens for _, tokens in ready + waiting]
        made: list[tuple[Any, SharedPrefix]] = []
        for node in shared_prefixes(seqs, self.min_shared_tokens):
            members = [i for i in node.members if i < len(ready)]
            if members:
                app = _longest(apps.get(ready[i][0].id) for i in members)
                sp = self._prefix_for(pool, app, seqs, members, node.depth,
                                      min(ready[i][0].priority for i in members))
                if sp is not None:
                    made.append((node, sp))
        parents: dict[str, SharedPrefix | None] = {}
        for i, (call, tokens) in enumerate(ready + waiting):
            sp = max((sp for node, sp in made if i in node.members),
                     key=lambda sp: len(sp.tokens), default=None)
            if i < len(ready) and sp is None:
                sp = pool.longest_prefix_of(tokens, len(tokens) - 1)
            if i < len(ready):
                sp = _longest([sp, apps.get(call.id)])
            usable = sp is not None and len(sp.tokens) >= self.min_shared_tokens
            if usable and pool.owns(sp) and (i < len(ready) or call.is_active):
                pool.hold(sp, call.id)
            parents[call.id] = sp if usable else None
        for _, sp in made:
            if pool.owns(sp):
                pool.discard_if_unheld(sp)
        return parents

    def _prefix_for(self, pool: PrefixPool, app: SharedPrefix | None, seqs: list[list[int]],
                    members: list[int], depth: int, priority: int) -> SharedPrefix | None:
        """The shared prefix for a trie node: an existing one (of the session, or the app
        prefix `app`), a new child of one, or new."""
        depth = min([depth] + [len(seqs[i]) - 1 for i in members])  # each member fills >= 1
        if len(members) <= WHOLE_BLOCKS_UP_TO:
            depth -= depth % self.apps.block_size()
        if depth < self.min_shared_tokens:
            return None
        tokens = seqs[members[0]][:depth]
        base = pool.longest_prefix_of(tokens, depth)
        if app is not None and len(app.tokens) <= depth:
            base = _longest([base, app])
        if base is not None and depth - len(base.tokens) < self.min_shared_tokens:
            return base
        engine = base.engine_index if base is not None else self._least_loaded()
        self._reserved[engine] += len(members)
        return pool.create(tokens, engine, priority, base, holders=set())

    def _place(self, parent: SharedPrefix | None) -> int:
        if parent is not None:
            index = parent.engine_index
        elif self.placement == "round-robin":
            index = self._round_robin()
        else:
            index = self._least_loaded()
        self.loads[index] += 1
        return index

    def _round_robin(self) -> int:
        n = len(self.loads)
        order = [(self._next + k) % n for k in range(n)]
        index = next((i for i in order if self.is_alive(i)), order[0])
        self._next = (index + 1) % n
        return index

    def _app_engine(self, pool: PrefixPool) -> int:
        """The engine for a new app prefix of a session: the live engine holding most of the
        session's shared prefixes (beside the prompts its calls also fork), else the least
        loaded one (counted, so the next new one goes elsewhere)."""
        engines = [sp.engine_index for sp in pool.prefixes.values() if self.is_alive(sp.engine_index)]
        return max(set(engines), key=engines.count) if engines else self._reserve()

    def _reserve(self) -> int:
        """The engine for a new app prefix (counted, so the next one goes elsewhere)."""
        index = self._least_loaded()
        self._reserved[index] += 1
        return index

    def _load(self, index: int) -> int:
        return self.loads[index] + self._reserved[index]

    def _least_loaded(self) -> int:
        alive = [i for i in range(len(self.loads)) if self.is_alive(i)] or range(len(self.loads))
        return min(alive, key=lambda i: self.loads[i] + self._reserved[i])


def _longest(prefixes) -> SharedPrefix | None:
    return max((sp for sp in prefixes if sp is not None), key=lambda sp: len(sp.tokens),
               default=None)
