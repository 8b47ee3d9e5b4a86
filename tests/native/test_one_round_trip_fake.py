"""UNIT tests of the client's lazy open (issue 14): a one-call program is ONE request (open +
call + get), counted at the in-process server (FakeEngine). Async API only: the server runs
on the test's loop (see test_client_fake.py)."""
import asyncio

import pytest

import parrot as P
from parrot.server.keys import MANAGER
from tests.manager.fake_engine import FakeEngine
from tests.native.fake_app import make_fake_app

OPEN = "POST /v1/sessions"


@P.semantic_function(max_tokens=6)
def summarize(text, summary):
    """Summarize briefly: {{input:text}}
    Summary: {{output:summary}}"""


@pytest.fixture
async def served(aiohttp_server):
    engine, log = FakeEngine(), []
    server = await aiohttp_server(make_fake_app([engine], request_log=log))
    yield str(server.make_url("")).rstrip("/"), engine, server.app[MANAGER], log


def prompt(text: str) -> str:
    return f"Summarize briefly: {text}\nSummary: "


async def test_a_one_call_program_is_one_request(served):
    url, engine, manager, log = served
    async with P.Session(url) as s:
        assert await summarize("parrots talk").aget() == engine.alone(prompt("parrots talk"), 6)
        assert log == [OPEN]
        sid = s.id  # known from the answer: no request
        assert log == [OPEN] and sid in manager.sessions
    assert log == [OPEN, f"DELETE /v1/sessions/{sid}"]
    assert manager.sessions == {}
    manager.check_integrity()


async def test_a_chain_wired_on_the_server_is_still_one_request(served):
    url, engine, _, log = served
    async with P.Session(url):
        doc = P.variable("parrots talk")
        final = summarize(summarize(doc))
        value = await final.aget()
        assert log == [OPEN]
    assert value == engine.alone(prompt(engine.alone(prompt("parrots talk"), 6)), 6)


async def test_a_two_step_program_opens_once_then_uses_the_session(served):
    url, engine, manager, log = served
    async with P.Session(url) as s:
        first = await summarize("a").aget()
        step = summarize(first)
        assert await step.aget() == engine.alone(prompt(first), 6)
        sid = s.id
        assert log == [OPEN, f"POST /v1/sessions/{sid}/calls",
                       f"GET /v1/sessions/{sid}/variables/{step.id}"]
    assert manager.sessions == {}


async def test_parallel_gets_of_unrelated_calls_open_plainly(served):
    url, engine, manager, log = served
    async with P.Session(url) as s:
        a, b = summarize("a"), summarize("b")
        values = await asyncio.gather(a.aget(), b.aget())
        assert values == [engine.alone(prompt("a"), 6), engine.alone(prompt("b"), 6)]
        sid = s.id
    # b is not upstream of a: the open carries both calls, then both GETs run side by side
    assert log[0] == OPEN and sorted(log[1:3]) == [f"GET /v1/sessions/{sid}/variables/{a.id}",
                                                   f"GET /v1/sessions/{sid}/variables/{b.id}"]
    assert len(log) == 4 and manager.sessions == {}


async def test_a_session_that_needed_nothing_sends_nothing(served):
    url, _, _, log = served
    async with P.Session(url):
        P.variable(name="unused")
        summarize("never fetched")
        await asyncio.sleep(0.05)  # no background flush for a session not open yet
        assert log == []
    assert log[0] == OPEN and log[1].startswith("DELETE")  # queued work is still checked
    log.clear()
    async with P.Session(url):
        pass
    assert log == []


async def test_other_first_operations_open_then_act(served):
    url, engine, manager, log = served
    async with P.Session(url) as s:
        topic = P.variable(name="topic")
        reply = summarize(topic)
        await topic.aset("why?")
        assert log[0] == OPEN and log[1].startswith("PUT ")  # the open carried the graph
        chunks = [piece async for piece in reply.astream()]
        assert "".join(chunks) == engine.alone(prompt("why?"), 6)
        graph = await s.agraph()
        assert {c["state"] for c in graph["calls"]} == {"done"}
    assert [line.split()[0] for line in log] == ["POST", "PUT", "GET", "GET", "DELETE"]
    assert manager.sessions == {}


@P.semantic_function(max_tokens=6, outputs={"n": P.Output(regex="([0-9")})
def broken(q, n):
    """Count {{input:q}}: {{output:n}}"""


async def refused_submit(url: str, manager, *, open_first: bool) -> P.ServerError:
    with pytest.raises(P.ServerError) as err:
        async with P.Session(url) as s:
            if open_first:
                await s.aopen()
            try:
                await broken("q").aget()
            finally:
                assert len(manager.sessions) == int(open_first)  # the refused open is gone
    return err.value


async def test_a_refused_submit_raises_as_before_and_leaves_no_session(served):
    url, _, manager, log = served
    combined = await refused_submit(url, manager, open_first=False)
    assert log == [OPEN] and manager.sessions == {}  # closed by the server: nothing to DELETE
    before = await refused_submit(url, manager, open_first=True)
    assert log[1:3] == [OPEN, log[2]] and log[2].endswith("/calls")
    assert (combined.status, combined.message, combined.param) == \
        (before.status, before.message, before.param)
    assert combined.status == 400 and "invalid regex" in combined.message
    assert manager.sessions == {}
    manager.check_integrity()


async def test_a_failing_get_keeps_the_session_usable(served):
    url, _, manager, log = served
    async with P.Session(url) as s:
        question = P.variable(name="question")
        with pytest.raises(P.ServerError) as err:
            await question.aget(timeout=0.05)  # nobody set it
        assert err.value.status == 408 and "not produced within 0.05 s" in err.value.message
        assert log == [OPEN] and s.id in manager.sessions
        await question.aset("now")
        assert await question.aget() == "now"
        sid = s.id
    path = f"/v1/sessions/{sid}/variables/{question.id}"
    assert log[1:] == [f"PUT {path}", f"DELETE /v1/sessions/{sid}"]  # aset resolved it here
    assert manager.sessions == {}


async def test_an_eager_call_is_sent_at_once(served):
    url, engine, manager, log = served

    @P.semantic_function(max_tokens=4, eager=True)
    def note(text, out):
        """Note: {{input:text}} -> {{output:out}}"""

    async with P.Session(url):
        note("keep going")
        for _ in range(100):
            if log:
                break
            await asyncio.sleep(0.01)
        assert log == [OPEN]


async def test_a_call_streamed_in_an_open_session_is_one_request(served):
    url, engine, manager, log = served
    async with P.Session(url) as s:
        await s.aopen()
        first = summarize("a")
        chunks = [piece async for piece in first.astream()]
        assert "".join(chunks) == engine.alone(prompt("a"), 6)
        second = summarize(first)  # wired to the first's output: its call travels the same way
        assert "".join([piece async for piece in second.astream()]) == \
            engine.alone(prompt("".join(chunks)), 6)
        sid = s.id
    stream = f"POST /v1/sessions/{sid}/variables/{{}}/stream"
    assert log == [OPEN, stream.format(first.id), stream.format(second.id), f"DELETE /v1/sessions/{sid}"]
    assert manager.sessions == {}
    manager.check_integrity()


async def test_calls_queued_behind_a_stream_keep_their_order(served):
    url, engine, manager, _ = served
    async with P.Session(url) as s:
        await s.aopen()
        first = summarize("a")
        streaming = asyncio.ensure_future(first.aget())  # the stream POST carries `first`'s call
        second = summarize(first)  # queued meanwhile: sent after the server has `first`
        assert await second.aget() == engine.alone(prompt(await streaming), 6)
    assert manager.sessions == {}


async def test_a_refused_call_carried_by_a_stream_is_the_sessions_refusal(served):
    url, engine, manager, log = served
    with pytest.raises(P.ServerError) as err:
        async with P.Session(url) as s:
            await s.aopen()
            async for _ in broken("q").astream():
                pass
    assert err.value.status == 400 and "invalid regex" in err.value.message
    assert log[1].endswith("/stream") and manager.sessions == {}
    async with P.Session(url):  # the server keeps serving
        assert await summarize("b").aget() == engine.alone(prompt("b"), 6)
    manager.check_integrity()


async def test_a_first_stream_opens_the_session_in_the_same_request(served):
    url, engine, manager, log = served
    async with P.Session(url) as s:
        first = summarize("parrots talk")
        chunks = [piece async for piece in first.astream()]
        assert "".join(chunks) == engine.alone(prompt("parrots talk"), 6)
        assert log == [OPEN] and s.id in manager.sessions  # the id came in the first event
        second = summarize(first)  # now open: the next stream carries its call
        streaming = second.astream()
        assert "".join([piece async for piece in streaming]) == engine.alone(prompt("".join(chunks)), 6)
        sid = s.id
    assert log == [OPEN, f"POST /v1/sessions/{sid}/variables/{second.id}/stream", f"DELETE /v1/sessions/{sid}"]
    assert manager.sessions == {}
    manager.check_integrity()


async def test_a_refused_opening_stream_leaves_no_session(served):
    url, engine, manager, log = served
    with pytest.raises(P.ServerError) as err:
        async with P.Session(url):
            async for _ in broken("q").astream():
                pass
    assert err.value.status == 400 and "invalid regex" in err.value.message
    assert log == [OPEN] and manager.sessions == {}
    manager.check_integrity()
