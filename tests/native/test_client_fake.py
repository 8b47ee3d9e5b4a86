"""UNIT tests of the Python client (`import parrot as P`) against the native API over
FakeEngine, served in-process. The client runs on its own background loop, so these tests use
its async API (a sync call would block the loop that serves it); the sync facade is exercised
against a real server in test_e2e.py and by the examples."""
import asyncio

import pytest

import parrot as P
from parrot.server.keys import MANAGER
from tests.manager.fake_engine import FakeEngine
from tests.native.fake_app import make_fake_app


@P.semantic_function(max_tokens=6)
def summarize(text, summary):
    """Summarize briefly: {{input:text}}
    Summary: {{output:summary}}"""


@P.semantic_function(max_tokens=5, outputs={"body": P.Output(max_tokens=7)})
def write(topic, title, body):
    """Topic: {{input:topic}}
    Title: {{output:title}}
    Body: {{output:body}}"""


@pytest.fixture
async def served(aiohttp_server):
    engine = FakeEngine()
    server = await aiohttp_server(make_fake_app([engine]))
    yield str(server.make_url("")).rstrip("/"), engine, server.app[MANAGER]


async def test_chain_map_reduce_and_join(served):
    url, engine, manager = served
    async with P.Session(url) as s:
        parts = [summarize(f"chunk {i}") for i in range(3)]
        final = summarize(P.join(parts, sep="\n"))
        assert isinstance(final, P.SemanticVariable) and not final.is_ready
        value = await final.aget(P.LATENCY)
        values = [await p.aget() for p in parts]
        prompt = "Summarize briefly: " + "\n".join(values) + "\nSummary: "
        assert value == engine.alone(prompt, 6) == final.value
        graph = (await asyncio.get_running_loop().run_in_executor(None, s.graph))
        assert {c["state"] for c in graph["calls"]} == {"done"}
        assert [c["kind"] for c in graph["calls"]].count("render") == 1
    assert manager.sessions == {}
    assert engine.live == {}


async def test_multi_output_variables_and_stream(served):
    url, engine, _ = served
    async with P.Session(url):
        topic = P.variable(name="topic")
        title, body = write(topic)
        await topic.aset("parrots")
        chunks = [piece async for piece in body.astream()]
        assert "".join(chunks) == body.value == engine.alone(
            "Topic: parrots\nTitle: " + await title.aget() + "\nBody: ", 7)
        assert len(chunks) > 1


async def test_lazy_calls_never_run_and_errors_surface(served):
    url, engine, manager = served
    async with P.Session(url) as s:
        wanted, _unwanted = summarize("a"), summarize("b")
        await wanted.aget(P.THROUGHPUT)
        states = {c.id: c.state.value for c in manager.sessions[s.id].graph.calls.values()}
        assert sorted(states.values()) == ["done", "pending"]
        x = P.variable("fixed")
        with pytest.raises(P.ServerError) as err:
            await x.aset("again")
        assert err.value.status == 409
    with pytest.raises(P.NoSessionError):
        summarize("outside")


async def test_cross_session_variables_are_refused(served):
    url, _, _ = served
    async with P.Session(url):
        va = P.variable("mine")
        async with P.Session(url):
            with pytest.raises(ValueError, match="another Parrot session"):
                summarize(va)
