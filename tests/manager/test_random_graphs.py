"""UNIT stress test over FakeEngine: random DAGs, random gets, closes mid-flight. After every
step the manager's integrity checks hold; at the end every context is freed."""
import asyncio
import random

from parrot.manager import Manager
from parrot.protocol.criteria import LATENCY, THROUGHPUT
from tests.manager.fake_engine import FakeEngine

PREFIXES = ["Shared instructions for every call in this test, long enough to share. ",
            "Another family of prompts with a different but also long preamble here. "]


def random_calls(rng: random.Random, n: int) -> list[dict]:
    calls = []
    for i in range(n):
        earlier = [f"v{j}" for j in range(i)]
        x = {"var": rng.choice(earlier)} if earlier and rng.random() < 0.6 else f"const {i}"
        template = rng.choice(PREFIXES) + "In: {{input:x}} Out: {{output:y}}"
        if rng.random() < 0.2:
            template += " More: {{output:z}}"
        outputs = {"y": {"var": f"v{i}", "sampling": {"max_tokens": rng.randint(1, 6)}}}
        if "output:z" in template:
            outputs["z"] = {"var": f"z{i}", "sampling": {"max_tokens": 2}}
        calls.append({"id": f"c{i}", "template": template, "inputs": {"x": x},
                      "outputs": outputs, "eager": rng.random() < 0.1})
        if i >= 2 and rng.random() < 0.2:
            parts = [{"var": v} for v in rng.sample(earlier, 2)]
            calls.append({"id": f"j{i}", "kind": "join", "parts": parts,
                          "output": {"var": f"joined{i}"}})
    return calls


async def run_session(manager: Manager, rng: random.Random) -> None:
    session = manager.open_session()
    calls = random_calls(rng, rng.randint(3, 12))
    manager.submit_calls(session, {"calls": calls})
    outputs = [v["var"] for c in calls for v in ([c["output"]] if "output" in c
                                                 else c["outputs"].values())]
    wanted = rng.sample(outputs, k=min(len(outputs), rng.randint(1, 4)))
    gets = [asyncio.ensure_future(manager.get_variable(
        session, v, rng.choice([LATENCY, THROUGHPUT]), 10)) for v in wanted]
    for _ in range(rng.randint(1, 6)):
        await asyncio.sleep(rng.random() * 0.01)
        manager.check_integrity()
    if rng.random() < 0.3:
        await manager.close_session(session)  # mid-flight
    await asyncio.gather(*gets, return_exceptions=True)
    manager.check_integrity()
    if not session.is_closed:
        await manager.close_session(session)


async def test_random_graphs_keep_invariants_and_free_everything():
    rng = random.Random(1234)
    engines = [FakeEngine(step_s=0.001), FakeEngine(step_s=0.001)]
    manager = Manager(engines)
    for _ in range(8):
        await asyncio.gather(*(run_session(manager, rng) for _ in range(4)))
    manager.check_integrity()
    await manager.close()
    assert all(e.live == {} for e in engines)
    assert all(n == 0 for n in manager.executor.loads)
    assert sum(e.counters.num_decode_tokens for e in engines) > 100  # work was done
    assert all(e.counters.num_cached_tokens > 0 for e in engines)  # forks on both engines
