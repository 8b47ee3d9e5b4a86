"""UNIT tests of `POST /v1/sessions` carrying `variables`, `calls` and a `get` (issue 14): one
request for a whole small program, refusals that leave no session, a failed get that keeps it."""
import pytest

from parrot.server.keys import MANAGER
from tests.manager.fake_engine import FakeEngine
from tests.native.fake_app import make_fake_app
from tests.native.test_native_api_fake import call, llm


@pytest.fixture
async def client(aiohttp_client):
    return await aiohttp_client(make_fake_app([FakeEngine()]))


async def post_open(client, body):
    resp = await client.post("/v1/sessions", json=body)
    return resp.status, await resp.json()


def auth(body: dict) -> dict:
    return {"X-Parrot-Session-Token": body["token"]}


async def test_open_graph_and_get_in_one_request(client):
    status, body = await post_open(client, {
        "variables": [{"id": "doc", "value": "parrots talk"}],
        "calls": [llm("c1", {"var": "doc"}, "s1"), llm("c2", {"var": "s1"}, "s2")],
        "get": {"var": "s2", "criteria": "latency", "timeout": 5}})
    assert status == 201 and body["id"] == "s2" and body["value"]
    base = f"/v1/sessions/{body['session_id']}"
    status, graph = await call(client, "GET", f"{base}/graph", auth(body))
    assert status == 200 and {c["state"] for c in graph["calls"]} == {"done"}
    assert [r["what"] for r in graph["requests"]][:3] == ["add_variables", "submit_calls",
                                                         "get s2"]
    status, again = await call(client, "GET", f"{base}/variables/s2", auth(body))
    assert again["value"] == body["value"]
    client.server.app[MANAGER].check_integrity()


async def test_without_get_the_graph_is_added_and_nothing_waits(client):
    status, body = await post_open(client, {"idle_timeout": 30,
                                            "calls": [llm("c1", "a", "o")]})
    assert status == 201 and set(body) == {"session_id", "token", "idle_timeout"}
    assert body["idle_timeout"] == 30
    status, graph = await call(client, "GET", f"/v1/sessions/{body['session_id']}/graph",
                               auth(body))
    assert [c["id"] for c in graph["calls"]] == ["c1"] and graph["calls"][0]["state"] == "pending"


@pytest.mark.parametrize("body, param, needle", [
    ({"calls": [llm("c1", {"var": "nope"}, "o")]}, None, "unknown variable 'nope'"),
    ({"calls": [{"template": "Hi {{input:x}", "inputs": {"x": "a"}}]}, "calls[0].template",
     "unclosed placeholder"),
    ({"variables": [{"id": "x", "value": 3}]}, "variables[0].value", "must be a string"),
    ({"variables": [{"id": "x"}], "calls": [llm("c", {"var": "x"}, "x")]}, None, "x"),
])
async def test_a_refused_batch_closes_the_new_session(client, body, param, needle):
    manager = client.server.app[MANAGER]
    status, reply = await post_open(client, {**body, "get": {"var": "o"}})
    assert 400 <= status < 500 and needle in reply["error"]["message"], reply
    assert param is None or reply["error"]["param"] == param
    assert "session_id" not in reply and manager.sessions == {}
    manager.check_integrity()


@pytest.mark.parametrize("get, param", [
    ("s2", "get"), ({"criteria": "latency"}, "get.var"), ({"var": "o", "criteria": "soon"},
                                                          "get.criteria"),
    ({"var": "o", "timeout": 0}, "get.timeout"), ({"var": "o", "timeout": "x"}, "get.timeout"),
    ({"var": "o", "timeout": True}, "get.timeout"), ({"var": "o", "timeout": 7200},
                                                     "get.timeout"),
])
async def test_a_bad_get_is_400_before_anything_opens(client, get, param):
    status, reply = await post_open(client, {"calls": [llm("c", "a", "o")], "get": get})
    assert status == 400 and reply["error"]["param"] == param, reply
    assert client.server.app[MANAGER].sessions == {}


async def test_a_failed_get_answers_its_error_and_keeps_the_session(client):
    manager = client.server.app[MANAGER]
    status, body = await post_open(client, {"variables": [{"id": "q"}],
                                            "get": {"var": "q", "timeout": 0.05}})
    assert status == 408 and "not produced within 0.05 s" in body["error"]["message"]
    assert body["error"]["type"] == "invalid_request_error"
    base = f"/v1/sessions/{body['session_id']}"
    status, _ = await call(client, "PUT", f"{base}/variables/q", auth(body), {"value": "now"})
    assert status == 200
    status, got = await call(client, "GET", f"{base}/variables/q", auth(body))
    assert got["value"] == "now"
    status, missing = await post_open(client, {"get": {"var": "nope"}})
    assert status == 404 and missing["session_id"] in manager.sessions
    assert len(manager.sessions) == 2


async def test_old_shapes_still_work(client):
    resp = await client.post("/v1/sessions")
    assert resp.status == 201
    assert set(await resp.json()) == {"session_id", "token", "idle_timeout"}
    status, body = await post_open(client, {"idle_timeout": -1, "calls": [llm("c", "a", "o")]})
    assert status == 400 and body["error"]["param"] == "idle_timeout"
    assert len(client.server.app[MANAGER].sessions) == 1
