"""UNIT tests of the native HTTP API (real aiohttp app and manager, FakeEngine underneath)."""
import asyncio
import json

import pytest

from parrot.server.keys import MANAGER
from tests.native.fake_app import make_fake_app

T = "Summarize: {{input:x}}\nSummary: {{output:y}}"


@pytest.fixture
async def client(aiohttp_client):
    return await aiohttp_client(make_fake_app())


async def open_session(client, **body):
    resp = await client.post("/v1/sessions", json=body or None)
    assert resp.status == 201
    data = await resp.json()
    return data["session_id"], {"X-Parrot-Session-Token": data["token"]}


async def call(client, method, path, headers, body=None):
    data = None if body is None else (body if isinstance(body, str) else json.dumps(body))
    resp = await client.request(method, path, data=data, headers=headers)
    return resp.status, await resp.json()


def llm(cid, x, out, template=T):
    return {"id": cid, "template": template, "inputs": {"x": x},
            "outputs": {"y": {"var": out, "sampling": {"max_tokens": 6}}}}


async def test_round_trip(client):
    sid, auth = await open_session(client)
    base = f"/v1/sessions/{sid}"
    status, body = await call(client, "POST", f"{base}/variables", auth,
                              {"variables": [{"id": "doc", "value": "parrots talk"}]})
    assert status == 200 and body["variables"] == [{"id": "doc", "name": None, "ready": True}]
    status, body = await call(client, "POST", f"{base}/calls", auth,
                              {"calls": [llm("c1", {"var": "doc"}, "s1"),
                                         llm("c2", {"var": "s1"}, "s2")]})
    assert status == 200 and body["calls"][1] == {"id": "c2", "outputs": {"y": "s2"}}
    status, body = await call(client, "GET", f"{base}/variables/s2?criteria=latency", auth)
    assert status == 200 and isinstance(body["value"], str) and body["value"]
    status, graph = await call(client, "GET", f"{base}/graph", auth)
    states = {c["id"]: c["state"] for c in graph["calls"]}
    assert states == {"c1": "done", "c2": "done"}
    assert graph["calls"][1]["times"]["started"] >= graph["calls"][0]["times"]["finished"] - 0.01
    assert [r["what"] for r in graph["requests"]][:3] == ["add_variables", "submit_calls", "get s2"]
    status, _ = await call(client, "DELETE", base, auth)
    assert status == 200
    status, body = await call(client, "GET", f"{base}/graph", auth)
    assert status == 404


async def test_set_then_get_and_stream(client):
    sid, auth = await open_session(client)
    base = f"/v1/sessions/{sid}"
    await call(client, "POST", f"{base}/variables", auth, {"id": "q"})
    await call(client, "POST", f"{base}/calls", auth, {"calls": [llm("c", {"var": "q"}, "a")]})
    stream = asyncio.ensure_future(client.get(f"{base}/variables/a/stream", headers=auth))
    await asyncio.sleep(0.02)
    status, _ = await call(client, "PUT", f"{base}/variables/q", auth, {"value": "why?"})
    assert status == 200
    resp = await stream
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    text = await resp.text()
    events = [block.split("\n") for block in text.strip().split("\n\n")]
    kinds = [lines[0].removeprefix("event: ") for lines in events]
    assert kinds[-1] == "done" and set(kinds[:-1]) == {"delta"}
    deltas = "".join(json.loads(lines[1][6:])["text"] for lines in events[:-1])
    assert deltas == json.loads(events[-1][1][6:])["value"]


@pytest.mark.parametrize("body, status, needle", [
    ("{not json", 400, "not valid JSON"),
    ({"calls": []}, 400, "'calls' must not be empty"),
    ({"calls": [{"template": "Hi {{input:x}", "inputs": {"x": "a"}}]}, 400,
     "calls[0].template: unclosed placeholder: '{{' without a matching '}}' (at 1:4)"),
    ({"calls": [{"template": T, "inputs": {}}]}, 400, "input 'x' (at 1:12) is not bound"),
    ({"calls": [{"template": T, "inputs": {"x": "a", "z": "b"}}]}, 400,
     "'z' is not an input of the template"),
    ({"calls": [llm("c", {"var": "nope"}, "o")]}, 404, "unknown variable 'nope'"),
    ({"calls": [{"template": T, "inputs": {"x": "a"},
                 "outputs": {"y": {"sampling": {"max_tokens": -3}}}}]}, 400, "max_tokens"),
    ({"calls": [{"template": T, "inputs": {"x": "a"},
                 "outputs": {"y": {"sampling": {"nucleus": 1}}}}]}, 400, "unknown field 'nucleus'"),
    ({"calls": [{"kind": "magic"}]}, 400, "kind is 'llm' (the default), 'join' or 'project'"),
    ({"calls": [llm("bad id!", "a", "o")]}, 400, "'calls[0].id' must match"),
])
async def test_bad_calls_are_4xx_and_server_keeps_serving(client, body, status, needle):
    sid, auth = await open_session(client)
    got, reply = await call(client, "POST", f"/v1/sessions/{sid}/calls", auth, body)
    assert got == status and needle in reply["error"]["message"], reply
    await call(client, "POST", f"/v1/sessions/{sid}/calls", auth, {"calls": [llm("ok", "a", "o")]})
    got, reply = await call(client, "GET", f"/v1/sessions/{sid}/variables/o", auth)
    assert got == 200, reply


async def test_cycle_and_conflicts(client):
    sid, auth = await open_session(client)
    base = f"/v1/sessions/{sid}"
    await call(client, "POST", f"{base}/variables", auth, {"variables": [{"id": "x"}]})
    await call(client, "POST", f"{base}/calls", auth, {"calls": [llm("c1", {"var": "x"}, "y")]})
    status, body = await call(client, "POST", f"{base}/calls", auth,
                              {"calls": [llm("c2", {"var": "y"}, "x")]})
    assert status == 409 and "cycle: x -> c1 -> y -> c2 -> x" in body["error"]["message"]
    status, body = await call(client, "PUT", f"{base}/variables/y", auth, {"value": "v"})
    assert status == 409 and "produced by call 'c1'" in body["error"]["message"]
    status, body = await call(client, "POST", f"{base}/variables", auth, {"id": "x"})
    assert status == 409
    status, body = await call(client, "GET", f"{base}/variables/x?timeout=0.05", auth)
    assert status == 408
    status, body = await call(client, "GET", f"{base}/variables/x?criteria=soon", auth)
    assert status == 400 and body["error"]["param"] == "criteria"
    client.server.app[MANAGER].check_integrity()


async def test_tokens_and_isolation(client):
    sid_a, auth_a = await open_session(client)
    sid_b, auth_b = await open_session(client)
    await call(client, "POST", f"/v1/sessions/{sid_a}/variables", auth_a,
               {"id": "secret", "value": "A's data"})
    unknown = await call(client, "GET", "/v1/sessions/s_nope/graph", auth_a)
    wrong = await call(client, "GET", f"/v1/sessions/{sid_a}/graph", auth_b)
    assert unknown[0] == wrong[0] == 404
    assert wrong[1]["error"]["message"] == f"session '{sid_a}' not found"
    status, _ = await call(client, "GET", f"/v1/sessions/{sid_a}/graph", {})
    assert status == 401
    status, _ = await call(client, "GET", f"/v1/sessions/{sid_b}/variables/secret", auth_b)
    assert status == 404
    status, body = await call(client, "POST", f"/v1/sessions/{sid_b}/calls", auth_b,
                              {"calls": [llm("c", {"var": "secret"}, "o")]})
    assert status == 404
    bearer = {"Authorization": f"Bearer {auth_a['X-Parrot-Session-Token']}"}
    status, _ = await call(client, "GET", f"/v1/sessions/{sid_a}/variables/secret", bearer)
    assert status == 200


async def test_idle_timeout_is_validated(client):
    resp = await client.post("/v1/sessions", json={"idle_timeout": -1})
    assert resp.status == 400 and (await resp.json())["error"]["param"] == "idle_timeout"


async def test_a_stream_post_adds_its_graph_then_streams(client):
    sid, auth = await open_session(client)
    base = f"/v1/sessions/{sid}"
    body = {"variables": [{"id": "q", "value": "why?"}], "calls": [llm("c", {"var": "q"}, "a")]}
    resp = await client.post(f"{base}/variables/a/stream", json=body, headers=auth)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    text = await resp.text()
    assert text.strip().split("\n\n")[-1].startswith("event: done")
    status, graph = await call(client, "GET", f"{base}/graph", auth)
    assert {c["id"]: c["state"] for c in graph["calls"]} == {"c": "done"}


@pytest.mark.parametrize("body, status, needle", [
    ({"calls": []}, 400, "'calls' must not be empty"),
    ({"calls": [llm("c", {"var": "nowhere"}, "a")]}, 404, "nowhere"),  # as POST /calls
    ({"variables": "nope"}, 400, "variables"),
])
async def test_a_bad_stream_post_is_refused_before_the_stream(client, body, status, needle):
    sid, auth = await open_session(client)
    base = f"/v1/sessions/{sid}"
    resp = await client.post(f"{base}/variables/a/stream", json=body, headers=auth)
    assert resp.status == status and needle in (await resp.json())["error"]["message"]
    resp = await client.post(f"{base}/variables/missing/stream", headers=auth)
    assert resp.status == 404 and "missing" in (await resp.json())["error"]["message"]
    status, graph = await call(client, "GET", f"{base}/graph", auth)  # nothing was added
    assert status == 200 and graph["calls"] == []
    client.server.app[MANAGER].check_integrity()


async def test_an_opening_stream_names_the_session_first(client):
    body = {"variables": [{"id": "q", "value": "why?"}], "calls": [llm("c", {"var": "q"}, "a")],
            "stream": {"var": "a", "criteria": "latency"}}
    resp = await client.post("/v1/sessions", json=body)
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
    blocks = (await resp.text()).strip().split("\n\n")
    assert blocks[0].startswith("event: session") and blocks[-1].startswith("event: done")
    opened = json.loads(blocks[0].split("\n")[1][6:])
    auth = {"X-Parrot-Session-Token": opened["token"]}
    status, graph = await call(client, "GET", f"/v1/sessions/{opened['session_id']}/graph", auth)
    assert status == 200 and graph["calls"][0]["state"] == "done"


async def test_bad_opening_streams_are_refused(client):
    manager = client.server.app[MANAGER]
    resp = await client.post("/v1/sessions", json={"stream": {"var": "x"}, "get": {"var": "x"}})
    assert resp.status == 400 and "not both" in (await resp.json())["error"]["message"]
    assert manager.sessions == {}
    resp = await client.post("/v1/sessions", json={"stream": {"var": "nowhere"}})
    body = await resp.json()  # an unknown variable: 404, and the session it opened stays
    assert resp.status == 404 and "nowhere" in body["error"]["message"]
    assert list(manager.sessions) == [body["session_id"]]
    manager.check_integrity()
