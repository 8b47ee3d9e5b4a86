"""UNIT tests of a lost engine over FakeEngine: no new work is placed on it, a call it had not
started on starts again elsewhere, a call it was generating fails with a 503 naming it."""
from parrot.engine.client import EngineLost
from parrot.manager import Manager
from parrot.manager.errors import EngineUnavailable
from parrot.protocol.criteria import LATENCY
from tests.manager.fake_engine import FakeEngine

T = ("A long enough shared instruction for the calls below, well past sixteen tokens.\n"
     "Text: {{input:x}}\nAnswer: {{output:y}}")


def llm(cid, x):
    return {"id": cid, "template": T, "inputs": {"x": x},
            "outputs": {"y": {"var": cid, "sampling": {"max_tokens": 5}}}}


class DyingEngine(FakeEngine):
    """Loses itself on its next generate, before or after its first token."""

    def __init__(self, after_tokens: int) -> None:
        super().__init__()
        self.after_tokens = after_tokens

    async def generate(self, ctx_id, sampling, priority=1, group=None):
        n = 0
        async for chunk in super().generate(ctx_id, sampling, priority, group):
            if n == self.after_tokens:
                self.is_alive, self.error = False, "engine lost: dying (test)"
                raise EngineLost("dying", "test")
            n += 1
            yield chunk


async def run(engines, calls):
    manager = Manager(engines)
    s = manager.open_session()
    manager.submit_calls(s, {"calls": calls})
    results = []
    for call in calls:
        try:
            results.append(await manager.get_variable(s, call["id"], LATENCY, timeout=10))
        except EngineUnavailable as e:
            results.append(e)
    manager.check_integrity()
    await manager.close()
    return s, results


async def test_no_work_is_placed_on_a_lost_engine():
    lost, alive = FakeEngine(), FakeEngine()
    lost.is_alive, lost.error = False, "engine lost: test"
    s, results = await run([lost, alive], [llm(f"c{i}", f"document {i}") for i in range(3)])
    assert all(isinstance(r, str) for r in results)
    calls = [s.graph.calls[f"c{i}"] for i in range(3)]
    assert {c.engine for c in calls} == {1} and all(c.shared_tokens > 16 for c in calls)
    assert lost.log == [] and alive.live == {}


async def test_a_call_not_started_moves_a_started_one_fails_with_503():
    dying, alive = DyingEngine(after_tokens=0), FakeEngine()
    s, [moved] = await run([dying, alive], [llm("a", "x")])
    assert moved == alive.alone(T.split("{{output")[0].replace("{{input:x}}", "x"), 5)
    assert s.graph.calls["a"].engine == 1
    dying, alive = DyingEngine(after_tokens=2), FakeEngine()
    s, [failed] = await run([dying, alive], [llm("a", "x")])
    assert isinstance(failed, EngineUnavailable) and failed.status == 503
    assert "engine lost: dying" in failed.message
    assert alive.live == {}
