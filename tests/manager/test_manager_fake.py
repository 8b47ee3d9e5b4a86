"""UNIT tests of the manager over FakeEngine (a recording stand-in; see fake_engine.py).

They pin down scheduling behaviour cheaply; the same properties are checked against the
real engine and model in tests/native/test_e2e.py.
"""
import asyncio

import pytest

from parrot.engine.sampling_params import Priority
from parrot.manager import Manager, NotFound, ProducerFailed, Unauthorized, WaitTimeout
from parrot.manager.call import CallState
from parrot.protocol.criteria import LATENCY, THROUGHPUT
from tests.manager.fake_engine import FakeEngine

SYSTEM = "You are a careful assistant who writes short, precise summaries of documents.\n"
SUMMARIZE = SYSTEM + "Text: {{input:x}}\nSummary: {{output:y}}"


def llm(cid, x, out, template=SUMMARIZE, max_tokens=8, **extra):
    binding = {"var": x[1:]} if x.startswith("$") else x
    return {"id": cid, "template": template, "inputs": {"x": binding},
            "outputs": {"y": {"var": out, "sampling": {"max_tokens": max_tokens}}}, **extra}


def fills(engine, ctx_ids=None):
    return [e for e in engine.log if e[0] == "fill"]


async def test_chain_runs_in_place_and_matches_alone(manager, engine):
    s = manager.open_session()
    chain = [llm("c0", "a first document", "v0")]
    chain += [llm(f"c{i}", f"$v{i - 1}", f"v{i}") for i in range(1, 4)]
    manager.submit_calls(s, {"calls": chain})
    final = await manager.get_variable(s, "v3", LATENCY, timeout=10)
    values = {v: s.graph.variables[v].value for v in ("v0", "v1", "v2", "v3")}
    previous = "a first document"
    for i in range(4):
        prompt = SUMMARIZE.replace("{{input:x}}", previous).split("{{output:y}}")[0]
        assert values[f"v{i}"] == engine.alone(prompt, 8)
        previous = values[f"v{i}"]
    assert final == values["v3"]
    requests = [t for t, _ in s.requests]
    for i in range(1, 4):
        producer, consumer = s.graph.calls[f"c{i - 1}"], s.graph.calls[f"c{i}"]
        assert consumer.times["started"] >= producer.times["finished"] - 0.01
        assert consumer.times["started"] - producer.times["finished"] < 0.5
        assert not any(producer.times["finished"] <= t <= consumer.times["started"]
                       for t in requests), "a client request sat between producer and consumer"
        assert consumer.priority == Priority.LATENCY
    manager.check_integrity()


async def test_map_reduce_prefills_shared_prefix_once(manager, engine):
    s = manager.open_session()
    docs = [f"document number {i} talks about topic {i}" for i in range(4)]
    calls = [llm(f"m{i}", d, f"s{i}") for i, d in enumerate(docs)]
    calls.append({"id": "j", "kind": "join", "parts": [{"var": f"s{i}"} for i in range(4)],
                  "output": {"var": "all"}})
    calls.append(llm("r", "$all", "final"))
    manager.submit_calls(s, {"calls": calls})
    final = await manager.get_variable(s, "final", LATENCY, timeout=10)
    joined = "\n".join(s.graph.variables[f"s{i}"].value for i in range(4))
    assert s.graph.variables["all"].value == joined
    assert final == engine.alone(SUMMARIZE.split("{{output")[0].replace("{{input:x}}", joined), 8)
    prefix = len(SYSTEM + "Text: ")
    full_prompts = sum(len(SUMMARIZE.split("{{output")[0].replace("{{input:x}}", d)) for d in docs)
    # The maps' common prefix ("...Text: document number ") is filled once, not 4 times.
    assert engine.counters.num_prefill_tokens < full_prompts + 60
    maps = [s.graph.calls[f"m{i}"] for i in range(4)]
    assert all(m.shared_tokens >= prefix - 2 for m in maps)
    assert {m.group for m in maps} == {"feeds:r"} and maps[0].priority == Priority.NORMAL
    assert s.graph.calls["r"].priority == Priority.LATENCY
    # the engine admits the maps together: they name one group, unique to the session
    assert sorted(engine.groups.values(), key=str) == [None] + [f"{s.id}/feeds:r"] * 4


async def test_unfetched_calls_never_run(manager, engine):
    s = manager.open_session()
    manager.submit_calls(s, {"calls": [llm("a", "doc a", "va"), llm("b", "$va", "vb"),
                                       llm("c", "doc c", "vc"), llm("d", "$vc", "vd")]})
    await manager.get_variable(s, "va", THROUGHPUT, timeout=10)
    await asyncio.sleep(0.05)
    states = {cid: c.state for cid, c in s.graph.calls.items()}
    assert states == {"a": CallState.DONE, "b": CallState.PENDING, "c": CallState.PENDING,
                      "d": CallState.PENDING}
    assert len([e for e in engine.log if e[0] == "generate"]) == 1
    assert s.graph.calls["a"].priority == Priority.THROUGHPUT


async def test_eager_call_runs_without_a_get(manager, engine):
    s = manager.open_session()
    manager.submit_calls(s, {"calls": [llm("e", "doc", "ve", eager=True)]})
    await asyncio.wait_for(s.graph.variables["ve"].wait(), 5)
    assert s.graph.calls["e"].state == CallState.DONE


async def test_calls_submitted_together_share_one_prefill(manager, engine):
    s = manager.open_session()
    long_system = "Background: " + "the quick brown fox jumps over the lazy dog. " * 10
    template = long_system + "Question: {{input:x}}\nAnswer: {{output:y}}"
    n = 5
    manager.submit_calls(s, {"calls": [llm(f"q{i}", f"question {i}?", f"a{i}", template)
                                       for i in range(n)]})
    await asyncio.gather(*(manager.get_variable(s, f"a{i}", LATENCY, 10) for i in range(n)))
    for i in range(n):
        prompt = template.split("{{output")[0].replace("{{input:x}}", f"question {i}?")
        assert s.graph.variables[f"a{i}"].value == engine.alone(prompt, 8)
    assert engine.counters.num_prefill_tokens < len(long_system) + n * 40
    assert s.pool.prefixes == {}, "shared prefix kept after its last consumer forked"


async def test_gets_arriving_one_by_one_still_share_the_prefix(manager, engine):
    s = manager.open_session()
    template = ("Background: " + "lorem ipsum dolor sit amet " * 8 +
                "\nQ: {{input:x}}\nA: {{output:y}}")
    manager.submit_calls(s, {"calls": [llm(f"q{i}", f"question {i}?", f"a{i}", template)
                                       for i in range(4)]})

    async def fetch(i):
        await asyncio.sleep(0.0005 * i)  # separate requests, a moment apart
        return await manager.get_variable(s, f"a{i}", LATENCY, 10)

    await asyncio.gather(*(fetch(i) for i in range(4)))
    shared = [s.graph.calls[f"q{i}"].shared_tokens for i in range(4)]
    assert min(shared) >= len(template.split("{{")[0]) - 2, shared
    assert s.pool.prefixes == {}


async def test_pending_consumer_keeps_shared_prefix(manager, engine):
    s = manager.open_session()
    calls = [llm("c0", "start", "v0"), llm("c1", "$v0", "v1"), llm("c2", "$v1", "v2")]
    manager.submit_calls(s, {"calls": calls})
    await manager.get_variable(s, "v2", LATENCY, timeout=10)
    shared = [s.graph.calls[c].shared_tokens for c in ("c0", "c1", "c2")]
    assert all(n >= len(SYSTEM) for n in shared), shared
    assert s.pool.prefixes == {}


async def test_multi_output_generates_in_one_context(manager, engine):
    s = manager.open_session()
    template = "Topic: {{input:x}}\nTitle: {{output:t}}\nBody: {{output:b}}"
    manager.submit_calls(s, {"calls": [{"id": "w", "template": template,
                                        "inputs": {"x": "parrots"}, "sampling": {"max_tokens": 5},
                                        "outputs": {"t": {"var": "t"}, "b": {"var": "b"}}}]})
    body = await manager.get_variable(s, "b", LATENCY, timeout=10)
    title = s.graph.variables["t"].value
    first = "Topic: parrots\nTitle: "
    assert title == engine.alone(first, 5)
    assert body == engine.alone(first + title + "\nBody: ", 5)


async def test_failure_is_reported_and_isolated(manager, engine):
    engine.max_model_len = 300
    s = manager.open_session()
    manager.submit_calls(s, {"calls": [llm("big", "x" * 400, "v"), llm("after", "$v", "w"),
                                       llm("fine", "small", "ok")]})
    with pytest.raises(ProducerFailed, match="exceeds max_model_len"):
        await manager.get_variable(s, "w", LATENCY, timeout=10)
    assert await manager.get_variable(s, "ok", LATENCY, timeout=10)
    assert s.graph.calls["after"].state == CallState.FAILED


async def test_get_timeout_and_stream(manager, engine):
    s = manager.open_session()
    manager.add_variables(s, {"variables": [{"id": "in"}]})
    manager.submit_calls(s, {"calls": [llm("c", "$in", "out", max_tokens=6)]})
    with pytest.raises(WaitTimeout):
        await manager.get_variable(s, "out", LATENCY, timeout=0.05)
    events = []

    async def consume():
        async for event in manager.stream_variable(s, "out", LATENCY):
            events.append(event)

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.01)
    manager.set_variable(s, "in", "now")
    await asyncio.wait_for(task, 5)
    assert events[-1][0] == "done"
    assert "".join(t for k, t in events[:-1]) == events[-1][1] and len(events) > 2


async def test_sessions_are_isolated_and_close_frees_everything(manager, engine):
    a, b = manager.open_session(), manager.open_session()
    manager.add_variables(a, {"variables": [{"id": "secret", "value": "a's"}]})
    with pytest.raises(NotFound):
        b.graph.variable("secret")
    with pytest.raises(NotFound):
        manager.session(a.id, b.token)
    with pytest.raises(Unauthorized):
        manager.session(a.id, None)
    engine.step_s = 0.02
    manager.submit_calls(a, {"calls": [llm("slow", "doc", "v", max_tokens=16)]})
    waiter = asyncio.ensure_future(manager.get_variable(a, "v", LATENCY, timeout=10))
    await asyncio.sleep(0.05)
    assert engine.live
    await manager.close_session(a)
    with pytest.raises(NotFound):
        await waiter
    assert engine.live == {}
    with pytest.raises(NotFound):
        manager.session(a.id, a.token)


async def test_idle_session_expires(engine):
    manager = Manager([engine], sweep_interval=0.02)
    s = manager.open_session(idle_timeout=0.05)
    manager.add_variables(s, {"variables": [{"id": "x", "value": "1"}]})
    await asyncio.sleep(0.2)
    assert s.is_closed and s.id not in manager.sessions
    await manager.close()


async def test_two_engines_place_prefix_groups_together():
    engines = [FakeEngine(), FakeEngine()]
    manager = Manager(engines)
    s = manager.open_session()
    other = ("Translate into French, word by word, the sentence below, please.\n"
             "{{input:x}} => {{output:y}}")
    calls = [llm(f"s{i}", f"doc {i}", f"v{i}") for i in range(3)]
    calls += [llm(f"t{i}", f"phrase {i}", f"w{i}", other) for i in range(3)]
    manager.submit_calls(s, {"calls": calls})
    await asyncio.gather(*(manager.get_variable(s, v, LATENCY, 10)
                           for v in ("v0", "v1", "v2", "w0", "w1", "w2")))
    summaries = {s.graph.calls[f"s{i}"].engine for i in range(3)}
    translations = {s.graph.calls[f"t{i}"].engine for i in range(3)}
    assert len(summaries) == 1 and len(translations) == 1 and summaries != translations
    manager.check_integrity()
    await manager.close()
    assert all(e.live == {} for e in engines)
