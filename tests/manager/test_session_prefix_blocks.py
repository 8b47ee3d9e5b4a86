"""UNIT test: a session prefix shared by few ready calls is cut to whole KV blocks (the
FakeEngine's blocks are 16 tokens, one token per character); more members share its tail."""
import asyncio

from parrot.manager import Manager
from parrot.protocol.criteria import LATENCY
from tests.manager.fake_engine import FakeEngine

TEMPLATE = "Read this: " + "y" * 90 + " Now: {{input:x}}\nAnswer: {{output:y}}"
COMMON = len("Read this: " + "y" * 90 + " Now: question ")  # 116 tokens: 7 blocks and 4


async def shared_tokens(num_calls: int) -> list[int]:
    engine = FakeEngine()
    manager = Manager([engine], app_prefix_min_tokens=10**6)  # no app prefix: the session's own
    session = manager.open_session()
    calls = [{"id": f"c{i}", "template": TEMPLATE, "inputs": {"x": f"question {i}"},
              "outputs": {"y": {"var": f"v{i}", "sampling": {"max_tokens": 4}}}}
             for i in range(num_calls)]
    manager.submit_calls(session, {"calls": calls})
    await asyncio.gather(*(manager.get_variable(session, f"v{i}", LATENCY, 10) for i in range(num_calls)))
    shared = [c["tokens"]["shared"] for c in manager.graph_json(session)["calls"]]
    await manager.close()
    assert engine.live == {}
    return shared


async def test_two_members_fork_a_prefix_of_whole_blocks():
    assert await shared_tokens(2) == [COMMON - COMMON % 16] * 2


async def test_three_members_share_the_partial_tail_too():
    assert await shared_tokens(3) == [COMMON] * 3
