"""UNIT tests of the scheduler's placement policies over FakeEngine: prefix-affine (the
default) keeps calls forking one shared prefix on its engine; least-loaded and round-robin
ignore prefixes (no shared contexts) and spread the same calls over the engines."""
import asyncio

import pytest

from parrot.manager import Manager
from parrot.protocol.criteria import LATENCY
from tests.manager.fake_engine import FakeEngine

T = ("A long enough shared instruction for the calls below, well past sixteen tokens.\n"
     "Text: {{input:x}}\nAnswer: {{output:y}}")


def llm(cid, x):
    return {"id": cid, "template": T, "inputs": {"x": x},
            "outputs": {"y": {"var": cid, "sampling": {"max_tokens": 5}}}}


async def run(placement, num_engines, num_calls, dead=()):
    engines = [FakeEngine() for _ in range(num_engines)]
    for i in dead:
        engines[i].is_alive, engines[i].error = False, "engine lost: test"
    manager = Manager(engines, placement=placement)
    s = manager.open_session()
    calls = [llm(f"c{i}", f"document {i}") for i in range(num_calls)]
    manager.submit_calls(s, {"calls": calls})
    values = await asyncio.gather(*(manager.get_variable(s, c["id"], LATENCY, timeout=10)
                                    for c in calls))  # all asked at once: all in flight
    manager.check_integrity()
    await manager.close()
    assert all(e.live == {} for e in engines), "contexts leaked"
    prompt = T.split("{{")[0]
    for i, value in enumerate(values):  # the same text wherever it ran
        assert value == engines[0].alone(f"{prompt}document {i}\nAnswer: ", 5)
    return engines, [s.graph.calls[c["id"]] for c in calls]


async def test_prefix_affine_keeps_forks_on_the_prefix_engine():
    engines, calls = await run("prefix-affine", 3, 6)
    assert len({c.engine for c in calls}) == 1 and all(c.shared_tokens > 16 for c in calls)


async def test_round_robin_cycles_the_engines_without_shared_prefixes():
    engines, calls = await run("round-robin", 3, 7)
    assert [c.engine for c in sorted(calls, key=lambda c: int(c.id[1:]))] == [0, 1, 2, 0, 1, 2, 0]
    assert all(c.shared_tokens == 0 for c in calls)
    assert all(e.counters.num_cached_tokens == 0 for e in engines)  # nothing was forked
    assert [sum(1 for c in calls if c.engine == i) for i in range(3)] == [3, 2, 2]


async def test_least_loaded_spreads_calls_sharing_a_prefix():
    engines, calls = await run("least-loaded", 3, 6)
    assert [sum(1 for c in calls if c.engine == i) for i in range(3)] == [2, 2, 2]
    assert all(c.shared_tokens == 0 for c in calls)


@pytest.mark.parametrize("placement", ["least-loaded", "round-robin"])
async def test_policies_skip_a_lost_engine(placement):
    engines, calls = await run(placement, 3, 4, dead=(1,))
    assert {c.engine for c in calls} == {0, 2} and engines[1].log == []


def test_an_unknown_placement_is_refused():
    with pytest.raises(ValueError, match="round-robin"):
        Manager([FakeEngine()], placement="random")
