"""Iteration-level scheduling: which requests compute how many tokens this step.

All policy lives here; block mechanics live in ContextTree/BlockManager.
Order: running requests by (priority, arrival), then waiting ones. Decodes take
one token each; prefills are chunked under the step's token budget. While
latency-critical work runs, other work's prefill chunks get what fits in time: the
step-cost model (fitted as the engine runs) predicts the step of the latency work
alone, and other prefills may grow the step to `latency_step_factor` times that
(before the model is warm: `latency_token_budget` tokens). Admission never overcommits the
pool; when a running request needs a block and none is free, the lowest-priority,
latest request is preempted (its blocks released, recomputed later). The waiting members of
a task group (requests sharing a `group`) are admitted together, in one step, once the pool
has room for all of them; they then share the step budget like any running requests.
Waiting requests go by priority, then arrival, except that one of the next `LOOKAHEAD` of
the first one's priority with at most `CHEAP_PREFILL` tokens left to compute once the prefix
cache is counted (a fork's question, a prompt whose app prefix is cached) goes first: it
costs its step little, and first-come order would hold it behind long prefills (SGLang's
cache-aware order, bounded: the long prompt waits at most for these short ones). A waiting
request whose next uncached block a running prefill is computing waits for it (it then
finds it in the prefix cache) instead of computing it a second time in the same steps.
"""
from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field

from parrot.engine.config import EngineConfig
from parrot.engine.context import Context, ContextTree
from parrot.engine.request import Request, Status
from parrot.engine.sampling_params import Priority
from parrot.engine.step_cost import StepCostModel, StepFeatures


@dataclass
class ScheduledSeq:
    request: Request
    num_new: int  # tokens computed for it this step
    sample: bool  # the step reaches its last token and it generates: sample a token


@dataclass
class StepPlan:
    seqs: list[ScheduledSeq] = field(default_factory=list)
    copies: list[tuple[int, int]] = field(default_factory=list)  # copy-on-write (src, dst) blocks
    done: list[Request] = field(default_factory=list)  # admitted with nothing left to compute

    @property
    def num_tokens(self) -> int:
        return sum(s.num_new for s in self.seqs)


class Scheduler:
    CHEAP_PREFILL = 64  # tokens: a waiting request this cheap may go before earlier ones
    LOOKAHEAD = 16  # waiting requests looked at for one

    def __init__(self, config: EngineConfig, tree: ContextTree):
        self.config = config
        self.tree = tree
        self.waiting: list[Request] = []
        self.running: list[Request] = []
        self.num_preemptions = 0
        self.num_prefix_hit_tokens = 0
        self.num_idle_releases = 0
        self.cost = StepCostModel()  # the engine feeds it every step: `step_features` + its time
        self.last_background_budget: int | None = None  # for tests and stats

    def add(self, req: Request) -> None:
        bisect.insort(self.waiting, req, key=lambda r: r.sort_key)

    def remove(self, req: Request) -> None:
        for queue in (self.waiting, self.running):
            if req in queue:
                queue.remove(req)

    def requests_on(self, ctx: Context) -> list[Request]:
        """The requests queued or running on `ctx` (at most one, by the engine's rule)."""
        return [r for r in self.waiting + self.running if r.ctx is ctx]

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> StepPlan:
        plan = StepPlan()
        budget = _Budget(self.config, self._background_budget())
        self.running.sort(key=lambda r: r.sort_key)
        for req in list(self.running):
            if req.status is Status.RUNNING:
                self._schedule_running(req, plan, budget)
        self._admit_waiting(plan, budget)
        # Row order does not change any result. Ordered by block table (a DFS of the context
        # tree), sequences sharing a prefix sit side by side: each cascade group is one run
        # of rows, and on CUDA every complete level fits FlashInfer's multi-level wrapper.
        plan.seqs.sort(key=lambda s: s.request.ctx.block_table)
        return plan

    def _latency_active(self) -> bool:
        return any(r.priority == Priority.LATENCY for r in self.running + self.waiting[:1])

    def _background_budget(self) -> int:
        """Prefill tokens other work may take this step (latency work is never capped)."""
        total = self.config.max_num_batched_tokens
        if not self._latency_active():
            budget = total
        elif not self.cost.is_warm:
            budget = self.config.latency_token_budget
        else:
            decodes = [r for r in self.running if r.is_decoding]
            latency = [r for r in self.running + self.waiting[:1] if r.priority == Priority.LATENCY]
            alone = _features([r for r in decodes if r.priority == Priority.LATENCY],
                              sum(min(r.ctx.num_pending, total) for r in latency if not r.is_decoding))
            with_others = _features(decodes, alone.num_prefill_tokens)
            target = self.config.latency_step_factor * self.cost.predict(alone)
            # at least a block a step: throughput work always progresses. (A floor of an
            # eighth of the step measured worse on the mixed workload: chat p90 89 vs 66 ms
            # per token, for jobs 15% faster.)
            budget = max(self.config.block_size, self.cost.prefill_tokens_within(with_others, target))
        self.last_background_budget = min(budget, total)
        return self.last_background_budget

    def step_features(self, plan: StepPlan) -> StepFeatures:
        """What the cost model sees of a planned step (read before it runs)."""
        decodes = [s.request for s in plan.seqs if s.request.is_decoding]
        return _features(decodes, sum(s.num_new for s in plan.seqs if not s.request.is_decoding))

    def _schedule_running(self, req: Request, plan: StepPlan, budget: "_Budget") -> None:
        n = budget.grant(req, req.ctx.num_pending)
        if n == 0:
            return
        while not self.tree.blocks.can_allocate(self.tree.num_blocks_needed(req.ctx, n)):
            victim = self.running[-1]
            self._preempt(victim)
            if victim is req:
                return
        self._commit_slots(req, n, plan, budget)

    def _admit_waiting(self, plan: StepPlan, budget: "_Budget") -> None:
        in_flight, deferred = self._blocks_in_flight(), set()
        while self.waiting and len(self.running) < self.config.max_num_seqs:
            head, req = self._next_waiting(deferred)
            if req is None:
                return
            if req.group is None and self._waits_for(req, in_flight):
                deferred.add(req)
                continue
            group = self._admissible_group(req)
            if group is not None:
                members, need = group
                if not self._make_room(need):
                    return
                for member in members:
                    self.waiting.remove(member)
                    self._start(member, budget.grant(member, member.ctx.num_pending), plan, budget)
                continue
            n = budget.grant(req, req.ctx.num_pending)
            if n == 0:
                return
            if not self._make_room(self.tree.num_blocks_needed(req.ctx, n) + self._watermark()):
                if req is head:
                    return
                deferred.add(req)  # a cheap one that does not fit: the head may
                continue
            self.waiting.remove(req)
            self._start(req, n, plan, budget)
            if req.ctx.num_pending > 1:  # a same-step duplicate of its blocks waits for them
                self._add_in_flight(in_flight, req)

    def _next_waiting(self, deferred: set[Request]) -> tuple[Request | None, Request | None]:
        """(the first waiting request not deferred, the one to admit next): the first, or a
        cheap one among the next few of its priority while the first has been passed over
        fewer than LOOKAHEAD times (so it waits a bounded number of admissions)."""
        candidates = [r for r in self.waiting if r not in deferred] if deferred else self.waiting
        if not candidates:
            return None, None
        head = candidates[0]
        if head.num_passed >= self.LOOKAHEAD:
            return head, head
        for req in candidates[:self.LOOKAHEAD]:
            if req.priority != head.priority:
                break
            if self._uncached_pending(req) <= self.CHEAP_PREFILL:
                if req is not head:
                    head.num_passed += 1
                return head, req
        return head, head

    def _keys(self, req: Request) -> list[tuple[int, tuple[int, ...]]]:
        """Cache keys of `req`'s unregistered full prompt blocks (memoized on it)."""
        ctx, registered = req.ctx, len(req.ctx.block_hashes)
        limit = ctx.num_tokens if req.is_fill else ctx.num_tokens - 1  # generate needs logits
        if req.block_keys is None or req.block_keys[0] > registered or req.block_keys[1] != limit:
            req.block_keys = (registered, limit, self.tree.block_keys(ctx, limit))
        start, _, keys = req.block_keys
        return keys[registered - start:]

    def _uncached_pending(self, req: Request) -> int:
        """Tokens `req` would compute if admitted now (its prefix-cache hits counted)."""
        return req.ctx.num_pending - self.tree.num_cached(req.ctx, self._keys(req))

    def _blocks_in_flight(self) -> dict[int, int]:
        """Hashes of the prompt blocks running prefills have yet to compute -> the most urgent
        priority computing each (none without a prefix cache: nobody finds them then)."""
        in_flight: dict[int, int] = {}
        for r in self.running:
            if r.ctx.num_pending > 1:
                self._add_in_flight(in_flight, r)
        return in_flight

    def _add_in_flight(self, in_flight: dict[int, int], req: Request) -> None:
        if not self.tree.blocks.enable_prefix_caching:
            return
        for block_hash, _ in self._keys(req):
            in_flight[block_hash] = min(in_flight.get(block_hash, int(req.priority)), int(req.priority))

    def _waits_for(self, req: Request, in_flight: dict[int, int]) -> bool:
        """`req`'s next uncached block is one a running prefill at least as urgent computes
        (a latency request never waits on background work's pace)."""
        if not in_flight or not self.tree.can_match(req.ctx):
            return False
        keys = self._keys(req)
        hit = self.tree.num_cached(req.ctx, keys) // self.tree.bs
        return hit < len(keys) and in_flight.get(keys[hit][0], 1 << 30) <= int(req.priority)

    def _start(self, req: Request, n: int, plan: StepPlan, budget: "_Budget") -> None:
        """Admit `req` (prefix matched, running) and compute up to `n` of its tokens now."""
        self._adopt_cached(req)
        req.status = Status.RUNNING
        self.running.append(req)
        n = min(n, req.ctx.num_pending)
        if n > 0:
            self._commit_slots(req, n, plan, budget)
        elif req.ctx.num_pending == 0:  # a fill found entirely in the prefix cache
            plan.done.append(req)

    def admit_from_cache(self, req: Request) -> bool:
        """A new fill whose pending tokens the prefix cache holds, every one (whole blocks: a
        shared prefix that earlier calls computed): adopt them now (True: it is done), rather
        than at the next planning, which a busy engine reaches only when its running step
        ends. False (nothing changed): it is queued as any request."""
        if not req.is_fill or self.tree.num_cached(req.ctx, self._keys(req)) < req.ctx.num_pending:
            return False
        self._adopt_cached(req)
        return True

    def _adopt_cached(self, req: Request) -> None:
        """`req`'s context adopts the prefix cache's blocks for its next pending tokens."""
        hit = self.tree.adopt(req.ctx, self._keys(req))  # the keys it was scheduled by
        self.num_prefix_hit_tokens += hit
        if not req.is_admitted:  # a preempted request's rematch is not a cache hit
            req.is_admitted, req.num_cached_tokens = True, req.num_cached_tokens + hit

    def _admissible_group(self, req: Request) -> tuple[list[Request], int] | None:
        """The waiting members of `req`'s task group and the blocks they need together, if
        they can ever run together; None without a group, or for a group too large for the
        sequence limit or the pool (its members then go one by one)."""
        if req.group is None:
            return None
        members = [r for r in self.waiting if r.group == req.group]
        need = self._blocks_for_all(members)
        if (len(members) < 2 or len(self.running) + len(members) > self.config.max_num_seqs
                or need > self.tree.blocks.num_blocks):
            return None
        return members, need

    def _blocks_for_all(self, members: list[Request]) -> int:
        """Blocks for every member's whole pending prompt, and the next decodes' blocks."""
        return (sum(self.tree.num_blocks_needed(r.ctx, r.ctx.num_pending) for r in members)
                + self._watermark())

    def _watermark(self) -> int:
        return sum(1 for r in self.running if not r.is_fill)  # the next decode blocks

    def _make_room(self, num_blocks: int) -> bool:
        """Free blocks for admission, releasing idle contexts (least recently used first).

        An idle context (no request on it) keeps its tokens and recomputes its KV when
        used again, mostly from the prefix cache; this way held contexts never deadlock
        the pool.
        """
        blocks = self.tree.blocks
        if blocks.can_allocate(num_blocks):
            return True
        busy = {r.ctx.context_id for r in self.running + self.waiting}
        idle = sorted((c for c in self.tree.live.values()
                       if c.block_table and not c.is_pinned and c.context_id not in busy),
                      key=lambda c: c.last_used)
        for ctx in idle:
            self.tree.release(ctx)
            self.num_idle_releases += 1
            if blocks.can_allocate(num_blocks):
                return True
        return False

    def _commit_slots(self, req: Request, n: int, plan: StepPlan, budget: "_Budget") -> None:
        if req.first_scheduled is None:
            req.first_scheduled = time.monotonic()
        plan.copies += self.tree.prepare_slots(req.ctx, n)
        sample = not req.is_fill and n == req.ctx.num_pending
        plan.seqs.append(ScheduledSeq(req, n, sample))
        budget.spend(req, n)

    def _preempt(self, req: Request) -> None:
        self.running.remove(req)
        self.tree.release(req.ctx)
        req.status = Status.WAITING
        self.num_preemptions += 1
        self.add(req)


def _features(decodes: list[Request], num_prefill_tokens: int) -> StepFeatures:
    return StepFeatures(num_prefill_tokens, len(decodes), sum(r.ctx.num_tokens for r in decodes))


class _Budget:
    """Tokens left in this step; non-latency prefills share `background` tokens of it."""

    def __init__(self, config: EngineConfig, background: int):
        self.total = config.max_num_batched_tokens
        self.background = background

    def grant(self, req: Request, want: int) -> int:
        if want <= 1 or req.priority == Priority.LATENCY:
            return min(want, self.total)
        return min(want, self.total, self.background)

    def spend(self, req: Request, n: int) -> None:
        self.total -= n
        if n > 1 and req.priority != Priority.LATENCY:
            self.background -= n
