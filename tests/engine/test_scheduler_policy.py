"""The Scheduler's policy on a real context tree and block pool, with no model: each step is
applied the way the engine's postprocess applies it (commit, append the sampled token,
finish a fill that has nothing left), and the tests read what every step computed."""
from __future__ import annotations

from dataclasses import dataclass

from parrot.engine.block_manager import BlockManager
from parrot.engine.config import EngineConfig
from parrot.engine.context import Context, ContextTree
from parrot.engine.request import Request, Status
from parrot.engine.sampling_params import Priority, SamplingParams
from parrot.engine.scheduler import Scheduler

BS = 4  # block size
NORMAL, LATENCY, THROUGHPUT = Priority.NORMAL, Priority.LATENCY, Priority.THROUGHPUT


@dataclass(eq=False, repr=False)
class Req(Request):
    name: str = ""

    def __repr__(self) -> str:  # keeps assertion diffs readable
        return self.name


def scheduler(num_blocks: int, **config) -> Scheduler:
    tree = ContextTree(BlockManager(num_blocks, BS, enable_prefix_caching=False))
    return Scheduler(EngineConfig(block_size=BS, **config), tree)


def submit(sched: Scheduler, name: str, num_tokens: int, generate: bool = False,
           priority: Priority = NORMAL, arrival: float = 0.0, ctx: Context | None = None,
           group: str | None = None) -> Req:
    """A fill (or, with `generate`, a generation) of `num_tokens` prompt tokens."""
    if ctx is None:
        ctx = sched.tree.new()
        ctx.token_ids = list(range(num_tokens))
    sampling = SamplingParams(max_tokens=100) if generate else None
    req = Req(ctx, sampling, priority, group, arrival=arrival, name=name)
    sched.add(req)
    return req


def step(sched: Scheduler) -> dict[Req, int]:
    """Schedule one step and apply it; returns {request: tokens computed}."""
    plan = sched.schedule()
    for req in plan.done:
        finish(sched, req)
    for s in plan.seqs:
        req = s.request
        sched.tree.commit(req.ctx, s.num_new)
        if s.sample:
            req.ctx.token_ids.append(7)
            req.num_generated += 1
        elif req.is_fill and req.ctx.num_pending == 0:
            finish(sched, req)
    assert plan.num_tokens <= sched.config.max_num_batched_tokens
    sched.tree.check_integrity()
    return {s.request: s.num_new for s in plan.seqs}


def finish(sched: Scheduler, req: Request) -> None:
    sched.remove(req)
    req.status = Status.FINISHED


def computed_context(sched: Scheduler, num_tokens: int, last_used: float) -> Context:
    """An idle context whose `num_tokens` tokens are all computed."""
    ctx = sched.tree.new()
    ctx.token_ids = list(range(num_tokens))
    sched.tree.prepare_slots(ctx, num_tokens)
    sched.tree.commit(ctx, num_tokens)
    ctx.last_used = last_used
    return ctx


def test_prefills_are_chunked_first_come_first_served_under_the_step_budget():
    sched = scheduler(64, max_num_batched_tokens=16)
    a = submit(sched, "a", 40, arrival=0)
    b = submit(sched, "b", 10, arrival=1)
    assert [step(sched) for _ in range(4)] == [{a: 16}, {a: 16}, {a: 8, b: 8}, {b: 2}]
    assert a.status is b.status is Status.FINISHED and not sched.has_work
    assert (a.ctx.num_computed, b.ctx.num_computed) == (40, 10)


def test_decodes_take_one_token_each_and_prefill_chunks_fill_the_rest():
    sched = scheduler(64, max_num_batched_tokens=8)
    g = submit(sched, "g", 3, generate=True, arrival=0)
    f = submit(sched, "f", 20, arrival=1)
    steps = [step(sched) for _ in range(5)]
    assert steps == [{g: 3, f: 5}, {g: 1, f: 7}, {g: 1, f: 7}, {g: 1, f: 1}, {g: 1}]
    assert g.num_generated == 5 and g.ctx.num_tokens == 8 and f.status is Status.FINISHED


def test_latency_work_caps_other_prefills_at_the_latency_budget():
    sched = scheduler(64, max_num_batched_tokens=32, latency_token_budget=4)
    f = submit(sched, "f", 20, arrival=0)
    lat = submit(sched, "lat", 6, generate=True, priority=LATENCY, arrival=1)
    assert step(sched) == {lat: 6, f: 4}  # the later latency request goes first, whole
    assert step(sched) == {lat: 1, f: 4}
    finish(sched, lat)
    assert step(sched) == {f: 12}  # no latency work left: the full budget again


def test_waiting_requests_are_admitted_by_priority_then_arrival():
    sched = scheduler(64, max_num_seqs=1)
    n1 = submit(sched, "n1", 4, priority=NORMAL, arrival=0)
    t = submit(sched, "t", 4, priority=THROUGHPUT, arrival=1)
    n2 = submit(sched, "n2", 4, priority=NORMAL, arrival=2)
    lat = submit(sched, "lat", 4, priority=LATENCY, arrival=3)
    assert [step(sched) for _ in range(4)] == [{lat: 4}, {n1: 4}, {n2: 4}, {t: 4}]


def test_preemption_takes_the_lowest_priority_request_not_the_one_that_needs_a_block():
    """x (throughput, arrived first) decodes; a (normal) prefills in chunks and runs out of
    blocks: x is preempted, a keeps going, and x recomputes once a finishes."""
    sched = scheduler(3, max_num_batched_tokens=4)
    x = submit(sched, "x", 2, generate=True, priority=THROUGHPUT, arrival=0)
    assert step(sched) == {x: 2}
    a = submit(sched, "a", 12, priority=NORMAL, arrival=1)
    assert step(sched) == {x: 1, a: 3}
    assert step(sched) == {a: 4}  # a, first by priority, takes the whole budget
    assert sched.tree.blocks.num_free_blocks == 0
    assert step(sched) == {a: 4}  # a needed a third block: x gave its one back
    assert sched.num_preemptions == 1 and x.status is Status.WAITING and x in sched.waiting
    assert x.ctx.block_table == [] and (x.ctx.num_computed, x.ctx.num_tokens) == (0, 4)
    assert step(sched) == {a: 1}  # x does not fit while a holds every block
    assert a.status is Status.FINISHED and len(a.ctx.block_table) == 3
    assert step(sched) == {x: 4}  # a's finished, idle context gave its blocks to x
    assert sched.num_idle_releases == 1 and a.ctx.block_table == [] and a.ctx.num_tokens == 12
    assert x.num_generated == 3 and sched.num_preemptions == 1


def test_a_pinned_idle_context_is_never_released_for_room():
    sched = scheduler(3)
    pinned = computed_context(sched, 8, last_used=0.5)  # the least recently used
    pinned.is_pinned = True
    other = computed_context(sched, 4, last_used=1.0)
    f = submit(sched, "f", 4, arrival=0)
    assert step(sched) == {f: 4}  # the unpinned one made room
    assert other.block_table == [] and len(pinned.block_table) == 2
    g = submit(sched, "g", 8, arrival=1)
    assert step(sched) == {}  # nothing else may go: g waits, the pinned context stays
    assert len(pinned.block_table) == 2 and pinned.num_computed == 8
    assert g.status is Status.WAITING and f.ctx.block_table == []  # f's, finished, went


def test_a_task_group_is_admitted_together_and_shares_the_budget():
    sched = scheduler(64, max_num_batched_tokens=8)
    m1 = submit(sched, "m1", 6, generate=True, arrival=0, group="g")
    x = submit(sched, "x", 6, generate=True, arrival=1)  # arrived between the members
    m2 = submit(sched, "m2", 6, generate=True, arrival=2, group="g")
    # without the group, m1 and x would start and m2 wait; the group goes first, whole
    assert step(sched) == {m1: 6, m2: 2}
    assert m2.status is Status.RUNNING and x.status is Status.WAITING
    assert step(sched) == {m1: 1, m2: 4, x: 3}
    assert step(sched) == {m1: 1, m2: 1, x: 3}


def test_a_task_group_waits_until_the_pool_holds_all_of_it():
    sched = scheduler(4, max_num_batched_tokens=64)
    a = submit(sched, "a", 4, generate=True, arrival=0)  # holds 2 blocks once it decodes
    assert step(sched) == {a: 4}
    m1 = submit(sched, "m1", 4, generate=True, arrival=1, group="g")
    m2 = submit(sched, "m2", 4, generate=True, arrival=2, group="g")
    # room for one member, not both (each needs a block, plus a's next decode): none starts
    assert step(sched) == {a: 1}
    assert m1.status is m2.status is Status.WAITING
    finish(sched, a)
    sched.tree.release(a.ctx)
    assert step(sched) == {m1: 4, m2: 4}


def test_a_task_group_larger_than_the_pool_goes_one_by_one():
    sched = scheduler(3, max_num_batched_tokens=64)
    members = [submit(sched, f"m{i}", 8, generate=True, arrival=i, group="g") for i in range(2)]
    assert step(sched) == {members[0]: 8}  # 4 blocks for both can never be free: no deadlock


def test_preemption_between_equal_priorities_takes_the_latest_arrival():
    """x arrived first and needs a block for its next decode: a, later, is preempted."""
    sched = scheduler(3, max_num_batched_tokens=4)
    x = submit(sched, "x", 2, generate=True, priority=NORMAL, arrival=0)
    assert step(sched) == {x: 2}
    a = submit(sched, "a", 12, priority=NORMAL, arrival=1)
    assert step(sched) == {x: 1, a: 3}
    assert step(sched) == {x: 1, a: 3}
    assert step(sched) == {x: 1}  # x's fifth token needed a block: a gave back both of its
    assert sched.num_preemptions == 1 and a.status is Status.WAITING
    assert a.ctx.block_table == [] and a.ctx.num_computed == 0
    assert len(x.ctx.block_table) == 2 and sched.tree.blocks.num_free_blocks == 1


def test_admission_releases_idle_contexts_least_recently_used_first_and_only_as_needed():
    sched = scheduler(5)
    old = computed_context(sched, 4, last_used=1.0)
    new = computed_context(sched, 4, last_used=2.0)
    busy = computed_context(sched, 8, last_used=0.5)  # the oldest, but a request is on it
    sched.tree.uncompute_last(busy)
    w = submit(sched, "w", 0, generate=True, arrival=0, ctx=busy)
    f = submit(sched, "f", 4, arrival=1)
    # f needs a block plus one kept for w's next decode; one is free: the LRU idle one goes.
    assert step(sched) == {w: 1, f: 4}
    assert sched.num_idle_releases == 1
    assert old.block_table == [] and old.num_computed == 0 and old.token_ids == [0, 1, 2, 3]
    assert new.num_computed == 4 and len(new.block_table) == 1
    assert len(busy.block_table) == 2 and busy.num_computed == 8
    assert sched.tree.blocks.num_free_blocks == 1


def cached_scheduler(num_blocks: int, **config) -> Scheduler:
    tree = ContextTree(BlockManager(num_blocks, BS, enable_prefix_caching=True))
    return Scheduler(EngineConfig(block_size=BS, **config), tree)


def test_a_waiting_request_mostly_in_the_prefix_cache_goes_before_earlier_long_prefills():
    sched = cached_scheduler(128, max_num_batched_tokens=80)
    warm = submit(sched, "warm", 100, arrival=0)  # computes blocks that `b` will find cached
    while sched.has_work:
        step(sched)
    sched.tree.free(warm.ctx)
    a = submit(sched, "a", 200, arrival=1)
    a.ctx.token_ids = [1000 + i for i in range(200)]  # nothing cached: a long prefill
    b = submit(sched, "b", 102, arrival=2)  # the warm prompt and 2 more tokens: 100 cached
    assert step(sched) == {b: 2, a: 78}  # b first although later: it costs the step 2 tokens
    assert b.num_cached_tokens == 100


def test_a_cheap_request_never_goes_before_a_higher_priority_one():
    sched = cached_scheduler(128, max_num_batched_tokens=40, max_num_seqs=1)
    long_lat = submit(sched, "long", 100, priority=LATENCY, arrival=1)
    short = submit(sched, "short", 8, priority=NORMAL, arrival=0)
    assert step(sched) == {long_lat: 40}
    assert short.status is Status.WAITING


def test_among_cheap_and_long_requests_a_long_one_waits_only_for_the_cheap_ones():
    sched = cached_scheduler(128, max_num_batched_tokens=64, max_num_seqs=1)
    a = submit(sched, "a", 100, arrival=0)
    c1 = submit(sched, "c1", 8, arrival=1)
    c2 = submit(sched, "c2", 8, arrival=2)
    for i, req in enumerate((a, c1, c2)):  # nothing in common: no cache hits
        req.ctx.token_ids = [1000 * (i + 1) + t for t in range(req.ctx.num_tokens)]
    assert [step(sched) for _ in range(4)] == [{c1: 8}, {c2: 8}, {a: 64}, {a: 36}]


def test_a_waiting_prompt_waits_for_the_blocks_a_running_prefill_is_computing():
    sched = cached_scheduler(128, max_num_batched_tokens=100)
    a = submit(sched, "a", 150, arrival=0)
    assert step(sched) == {a: 100}
    b = submit(sched, "b", 168, arrival=1)  # a's first 148 tokens (37 blocks), then its own 20
    b.ctx.token_ids = a.ctx.token_ids[:148] + [5000 + i for i in range(20)]
    # a's blocks 25-36 are computing: b would compute them again beside it; it waits
    assert step(sched) == {a: 50}
    assert step(sched) == {b: 20}
    assert b.num_cached_tokens == 148


def test_without_a_prefix_cache_nothing_waits_for_blocks_in_flight():
    sched = scheduler(128, max_num_batched_tokens=100)
    a = submit(sched, "a", 150, arrival=0)
    assert step(sched) == {a: 100}
    b = submit(sched, "b", 20, arrival=1)  # the same first tokens (0..19)
    assert step(sched) == {a: 50, b: 20}


def test_a_latency_prompt_does_not_wait_for_blocks_background_work_is_computing():
    sched = cached_scheduler(128, max_num_batched_tokens=100)
    t = submit(sched, "t", 150, priority=THROUGHPUT, arrival=0)
    assert step(sched) == {t: 100}
    lat = submit(sched, "lat", 150, generate=True, priority=LATENCY, arrival=1)  # t's tokens
    assert step(sched)[lat] == 50  # hits t's 100 computed tokens, computes the rest itself


def test_two_waiting_copies_of_one_new_prompt_compute_it_once():
    sched = cached_scheduler(128, max_num_batched_tokens=100)
    a = submit(sched, "a", 60, arrival=0)
    b = submit(sched, "b", 60, arrival=1)  # the same 60 tokens
    assert step(sched) == {a: 60}  # b waits for a's blocks (it would compute them beside it)
    assert step(sched) == {} and b.status is Status.FINISHED  # then finds all 60 cached
    assert b.num_cached_tokens == 60


def test_a_long_request_is_passed_over_at_most_lookahead_times():
    sched = cached_scheduler(256, max_num_batched_tokens=16, max_num_seqs=1)
    long = submit(sched, "long", 100, arrival=0)
    long.ctx.token_ids = [9000 + i for i in range(100)]
    cheap = []
    for i in range(Scheduler.LOOKAHEAD + 4):
        c = submit(sched, f"c{i}", 4, arrival=1 + i)
        c.ctx.token_ids = [100 * i + t for t in range(4)]
        cheap.append(c)
    order = []
    while long.status is not Status.FINISHED:
        order += [r.name for r in step(sched)]
    assert order.index("long") == Scheduler.LOOKAHEAD  # after 16 cheap ones, not all 20
