"""UNIT tests of application prefixes (manager/app_prefixes.py) over FakeEngine: an app's
constant prompt is prefilled once for all its sessions, held while they are open, and freed
after the last one closes."""
import asyncio

from parrot.manager import Manager
from parrot.protocol.criteria import LATENCY
from tests.manager.fake_engine import FakeEngine

SYSTEM = ("You are PatentPal. You explain patent grants, what ends them and who they cover. "
          "Answer in at most three sentences and cite the clause you rely on.\n")
ASK = "{{input:persona}}Question: {{input:q}}\nAnswer: {{output:a}}"


def ask(cid, persona, question, out="a", max_tokens=6):
    return {"id": cid, "template": ASK, "inputs": {"persona": persona, "q": question},
            "outputs": {"a": {"var": out, "sampling": {"max_tokens": max_tokens}}}}


async def one_call(manager, session, persona, question, cid="c"):
    manager.submit_calls(session, {"calls": [ask(cid, persona, question, out=cid)]})
    return await manager.get_variable(session, cid, LATENCY, 10)


def system_fills(engine, n):
    """Fills that prefilled at least `n` tokens (the long system prompt, not a tail)."""
    return [e for e in engine.log if e[0] in ("fill", "append") and e[2] >= n]


async def test_sessions_of_one_app_share_its_prompt(manager, engine):
    sessions = [manager.open_session() for _ in range(4)]
    for i, s in enumerate(sessions):
        value = await one_call(manager, s, SYSTEM, f"does grant {i} survive a fork?")
        prompt = SYSTEM + f"Question: does grant {i} survive a fork?\nAnswer: "
        assert value == engine.alone(prompt, 6)  # a fork gives what a fresh context gives
        manager.check_integrity()
    # the first call computed the system prompt alone; the second found the app's common
    # beginning, which was computed once more as the app prefix, and it and every later
    # session forked that
    assert len(system_fills(engine, len(SYSTEM))) == 2
    shared = [s.graph.calls["c"].shared_tokens for s in sessions]
    assert shared[0] == 0 and all(n >= len(SYSTEM) for n in shared[1:]), shared
    [app_prefix] = manager.apps.pool.prefixes.values()
    assert len(app_prefix.tokens) % 16 == 0  # whole blocks: a computed text is all cache hits
    assert app_prefix.holders == {s.id for s in sessions[1:]}
    assert app_prefix.ctx in engine.pinned  # its KV is not released to make room


async def test_app_prompt_outlives_a_session_and_goes_with_the_last(manager, engine):
    a, b = manager.open_session(), manager.open_session()
    await one_call(manager, a, SYSTEM, "first question about grants?")
    await one_call(manager, b, SYSTEM, "second question about grants?")
    assert len(manager.apps.pool.prefixes) == 1
    await manager.close_session(a)
    await manager.close_session(b)
    assert manager.apps.pool.prefixes == {}, "held after its last session closed"
    assert engine.live == {}
    c = manager.open_session()  # a later session registers it anew (blocks: engine cache)
    await one_call(manager, c, SYSTEM, "third question about grants?")
    d = manager.open_session()
    await one_call(manager, d, SYSTEM, "fourth question about grants?")
    before = len(system_fills(engine, len(SYSTEM)))
    e = manager.open_session()
    await one_call(manager, e, SYSTEM, "fifth question about grants?")
    assert len(system_fills(engine, len(SYSTEM))) == before, "the open app prefix was not used"
    manager.check_integrity()


async def test_apps_with_one_template_keep_their_own_prompts(manager, engine):
    other = SYSTEM.replace("PatentPal", "ShipItBot").replace("patent grants", "release bundles")
    sessions = {}
    for persona in (SYSTEM, other):
        for i in range(3):
            s = manager.open_session()
            await one_call(manager, s, persona, f"question number {i} here?")
            sessions.setdefault(persona, []).append(s)
    prefixes = list(manager.apps.pool.prefixes.values())
    assert len(prefixes) == 2
    for persona, group in sessions.items():
        [mine] = [sp for sp in prefixes if engine.tokenizer.decode(sp.tokens).startswith(persona)]
        assert mine.holders == {s.id for s in group[1:]}
    manager.check_integrity()


async def test_short_common_beginnings_are_not_kept(engine):
    manager = Manager([engine], app_prefix_min_tokens=len(SYSTEM) + 40)
    for i in range(3):
        await one_call(manager, manager.open_session(), SYSTEM, f"question {i}?")
    assert manager.apps.pool.prefixes == {}
    manager.check_integrity()
    await manager.close()
    assert engine.live == {}


async def test_pinned_tokens_are_capped_by_the_kv_share(engine):
    engine.stats = lambda: type("S", (), {"num_blocks": 10, "block_size": 16})()  # 160 tokens
    manager = Manager([engine])  # a quarter: 40 tokens, less than the system prompt
    for i in range(3):
        await one_call(manager, manager.open_session(), SYSTEM, f"question {i}?")
    assert manager.apps.pool.prefixes == {}
    await manager.close()
    assert engine.live == {}


async def test_a_failed_app_prefill_is_dropped_and_calls_still_run(manager, engine):
    real_fill, failures = engine.fill, []

    async def failing_fill(ctx, token_ids, priority=1):
        if not failures and len(token_ids) >= len(SYSTEM):  # the app prefix's own fill
            failures.append(ctx)
            raise RuntimeError("injected fill failure")
        return await real_fill(ctx, token_ids, priority)

    s1, s2 = manager.open_session(), manager.open_session()
    await one_call(manager, s1, SYSTEM, "question one?")
    engine.fill = failing_fill
    assert await one_call(manager, s2, SYSTEM, "question two?") == engine.alone(
        SYSTEM + "Question: question two?\nAnswer: ", 6)
    assert failures
    s3 = manager.open_session()
    await one_call(manager, s3, SYSTEM, "question three?")  # prunes and registers anew
    assert all(sp.error is None for sp in manager.apps.pool.prefixes.values())
    manager.check_integrity()


async def test_a_session_prefix_forks_the_app_prefix(manager, engine):
    first = manager.open_session()
    await one_call(manager, first, SYSTEM, "warm up the app with this question?")
    await one_call(manager, manager.open_session(), SYSTEM, "and register it, please?")
    s, before = manager.open_session(), engine.counters.num_prefill_tokens
    doc = "Clause 7: a grant ends when the licensee sues anyone over the work. " * 2
    manager.submit_calls(s, {"calls": [ask(f"q{i}", SYSTEM + doc, f"part {i}?", out=f"a{i}")
                                       for i in range(3)]})
    await asyncio.gather(*(manager.get_variable(s, f"a{i}", LATENCY, 10) for i in range(3)))
    shared = [s.graph.calls[f"q{i}"].shared_tokens for i in range(3)]
    assert all(n >= len(SYSTEM) + len(doc) for n in shared), shared
    # app prefixes are whole 16-token blocks: the first one (SYSTEM + "Question: ", 158
    # tokens) is its first 144, which the later calls (SYSTEM + doc + ...) begin with too, so
    # the session prefix (SYSTEM + doc) forks that one
    texts = sorted(engine.tokenizer.decode(sp.tokens) for sp in manager.apps.pool.prefixes.values())
    assert texts == [SYSTEM[:144]]
    computed = engine.counters.num_prefill_tokens - before
    assert computed < len(SYSTEM) + len(doc) + 3 * 20, "computed more than once"
    assert s.pool.prefixes == {}
    manager.check_integrity()


async def test_a_new_app_prefix_goes_beside_its_sessions_prefixes():
    engines = [FakeEngine(), FakeEngine()]
    manager = Manager(engines)
    s = manager.open_session()
    sched = manager.scheduler
    manager.executor.loads[1] += 3  # engine 1 is the busier one
    assert sched._app_engine(s.pool) == 0  # no session prefixes: the least loaded
    s.pool.create([1] * 40, 1, 1, None, {"holder"})
    assert sched._app_engine(s.pool) == 1  # beside the session's prefix, though busier
    s.pool.release_holder("holder")
    await asyncio.sleep(0.01)
    manager.executor.loads[1] -= 3
    await manager.close()
    assert all(e.live == {} for e in engines)


async def test_a_hot_app_prefix_is_copied_to_an_idle_engine():
    engines = [FakeEngine(), FakeEngine()]
    manager = Manager(engines)
    for i in range(2):  # registered on one engine
        await one_call(manager, manager.open_session(), SYSTEM, f"question {i}?")
    [first] = manager.apps.pool.prefixes.values()
    busy, idle = first.engine_index, 1 - first.engine_index
    manager.executor.loads[busy] += manager.apps.replicate_at  # its engine is now hot
    s = manager.open_session()
    await one_call(manager, s, SYSTEM, "question on the idle engine?")
    copies = sorted(manager.apps.pool.prefixes.values(), key=lambda sp: sp.engine_index != busy)
    assert [sp.engine_index for sp in copies] == [busy, idle]
    assert copies[1].tokens == first.tokens and s.id in copies[1].holders
    assert s.graph.calls["c"].engine == idle and s.graph.calls["c"].shared_tokens >= len(SYSTEM)
    s2 = manager.open_session()  # a later call takes the copy on the less loaded engine
    await one_call(manager, s2, SYSTEM, "question again?")
    assert s2.graph.calls["c"].engine == idle and len(manager.apps.pool.prefixes) == 2
    manager.check_integrity()
    manager.executor.loads[busy] -= manager.apps.replicate_at
    await manager.close()
    assert all(e.live == {} for e in engines)
