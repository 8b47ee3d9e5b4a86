"""The dashboard's JSON and SSE endpoints in-process, over FakeEngine (fast unit tests):
counts during and after a map-reduce run, auth, and session isolation."""
from __future__ import annotations

import asyncio
import json
import time

import pytest

from parrot.server.app import create_app, drain_in_flight
from parrot.server.config import ServerConfig
from parrot.server.keys import MANAGER
from tests.dashboard.programs import CHUNKS, FINAL, map_reduce_calls
from tests.manager.fake_engine import FakeEngine

NUM_CALLS = len(CHUNKS) + 2
API_KEY = "dash-key"


@pytest.fixture
async def make_client(aiohttp_client):
    async def make(api_key: str | None = None, step_s: float = 0.01):
        app = create_app([FakeEngine(step_s=step_s)], ServerConfig(api_key=api_key))
        return await aiohttp_client(app)
    return make


async def open_session(client, auth: dict | None = None) -> dict:
    resp = await client.post("/v1/sessions", headers=auth or {})
    assert resp.status == 201
    body = await resp.json()
    return {"sid": body["session_id"], "headers": {**(auth or {}),
                                                   "X-Parrot-Session-Token": body["token"]}}


async def submit(client, s: dict, calls: list[dict]) -> None:
    resp = await client.post(f"/v1/sessions/{s['sid']}/calls", json={"calls": calls},
                             headers=s["headers"])
    assert resp.status == 200, await resp.text()


async def view(client, s: dict, headers: dict | None = None) -> dict:
    resp = await client.get(f"/v1/sessions/{s['sid']}/dashboard",
                            headers=s["headers"] if headers is None else headers)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_page_and_assets_are_served(make_client):
    client = await make_client(api_key=API_KEY)  # the page holds no data: public
    for path, kind in [("/dashboard", "text/html"), ("/dashboard/dashboard.js", "javascript"),
                       ("/dashboard/dashboard.css", "text/css")]:
        resp = await client.get(path)
        assert resp.status == 200 and kind in resp.headers["Content-Type"], path
    assert "dashboard/dashboard.js" in await (await client.get("/dashboard")).text()
    auth = {"Authorization": f"Bearer {API_KEY}"}
    assert (await client.get("/dashboard/dashboard.py", headers=auth)).status == 404
    assert (await client.get("/dashboard/dashboard.py")).status == 401


async def test_every_data_endpoint_needs_the_api_key(make_client):
    client = await make_client(api_key=API_KEY)
    auth = {"Authorization": f"Bearer {API_KEY}"}
    s = await open_session(client, auth)
    for path in ["/v1/parrot/dashboard/engine", "/v1/parrot/dashboard/sessions",
                 "/v1/parrot/dashboard/events", f"/v1/sessions/{s['sid']}/dashboard"]:
        headers = {"X-Parrot-Session-Token": s["headers"]["X-Parrot-Session-Token"]}
        assert (await client.get(path, headers=headers)).status == 401, path
    assert (await client.get("/v1/parrot/dashboard/engine", headers=auth)).status == 200
    assert (await view(client, s))["calls"] == []


async def test_map_reduce_counts_during_and_after_the_run(make_client):
    client = await make_client(step_s=0.02)
    s = await open_session(client)
    await submit(client, s, map_reduce_calls())
    lazy = await view(client, s)
    assert len(lazy["calls"]) == NUM_CALLS and lazy["counts"] == {"waiting": NUM_CALLS}
    assert not any(c["active"] for c in lazy["calls"])
    assert {v["id"] for v in lazy["variables"]} >= {FINAL, "v_parts", "v_sum0"}

    get = asyncio.ensure_future(client.get(f"/v1/sessions/{s['sid']}/variables/{FINAL}",
                                           headers=s["headers"]))
    seen: dict[str, set[str]] = {}
    during = None
    while not get.done():
        during = await view(client, s)
        for call in during["calls"]:
            seen.setdefault(call["id"], set()).add(call["phase"])
        await asyncio.sleep(0.01)
    final = await (await get).json()

    assert {"queued", "decoding"} & seen["map0"], seen
    assert "waiting" in seen["reduce"] and "decoding" in seen["reduce"], seen
    groups = during["groups"]
    assert [sorted(g["members"]) for g in groups] == [[f"map{i}" for i in range(len(CHUNKS))]]
    maps = [c for c in during["calls"] if c["name"] == "summarize"]
    assert all(c["criteria"] == "latency" and c["group"] == groups[0]["id"] for c in maps)

    after = await view(client, s)
    assert after["counts"] == {"done": NUM_CALLS}
    assert all(v["state"] == "ready" for v in after["variables"])
    tree = after["context_tree"]
    # The maps share their instruction; its start ("You are an expert ...") is shared with
    # the reduce too, so that shorter prefix is the parent (the reduce forks it later).
    prefixes = {p["id"]: p for p in tree["prefixes"]}
    # The maps' prefix is their template's app prefix: their common text cut to whole
    # 16-token blocks.
    (maps_prefix,) = [p for p in prefixes.values() if len(p["forked_by"]) == len(CHUNKS)]
    maps_tokens = SUMMARY_PREFIX_CHARS // 16 * 16
    assert maps_prefix["tokens"] == maps_tokens and not maps_prefix["live"]
    parent = prefixes[maps_prefix["parent"]]
    assert parent["forked_by"] == ["reduce"] and parent["tokens"] < maps_prefix["tokens"]
    assert len(tree["calls"]) == len(CHUNKS) + 1  # model calls only: not the join
    assert tree["num_shared_tokens"] == sum(c["shared_tokens"] for c in tree["calls"]) \
        == len(CHUNKS) * maps_tokens + parent["tokens"]

    value = await client.get(f"/v1/sessions/{s['sid']}/dashboard/variables/{FINAL}",
                             headers=s["headers"])
    assert (await value.json())["value"] == final["value"]
    sessions = await (await client.get("/v1/parrot/dashboard/sessions")).json()
    assert sessions["sessions"][0]["calls"] == {"done": NUM_CALLS}


SUMMARY_PREFIX_CHARS = len(map_reduce_calls()[0]["template"].split("{{")[0])


async def test_viewing_changes_nothing(make_client):
    client = await make_client()
    s = await open_session(client)
    await submit(client, s, map_reduce_calls())
    app_session = client.app[MANAGER].sessions[s["sid"]]
    requests = list(app_session.requests)
    resp = await client.get(f"/v1/sessions/{s['sid']}/dashboard/variables/{FINAL}",
                            headers=s["headers"])
    assert (await resp.json()) == {"id": FINAL, "name": "final", "state": "empty", "value": "",
                                   "is_final": False, "error": None}
    await view(client, s)
    await asyncio.sleep(0.05)
    assert not any(c["active"] for c in (await view(client, s))["calls"])  # nothing activated
    assert app_session.requests == requests  # nor logged as a client request


async def test_no_access_across_sessions(make_client):
    client = await make_client()
    a, b = await open_session(client), await open_session(client)
    await submit(client, a, map_reduce_calls())
    b_token = b["headers"]
    for path in [f"/v1/sessions/{a['sid']}/dashboard",
                 f"/v1/sessions/{a['sid']}/dashboard/variables/v_sum0",
                 f"/v1/parrot/dashboard/events?session={a['sid']}"]:
        resp = await client.get(path, headers=b_token)
        assert resp.status == 404, path
        assert a["sid"] in (await resp.json())["error"]["message"]
        assert (await client.get(path)).status == 401, path  # no token at all
    assert (await client.get(f"/v1/sessions/{a['sid']}/dashboard/variables/nope",
                             headers=a["headers"])).status == 404
    listing = await (await client.get("/v1/parrot/dashboard/sessions")).text()
    assert a["sid"] in listing and b["sid"] in listing  # ids and counts only
    assert CHUNKS[0][:20] not in listing and "summarize" not in listing
    assert a["headers"]["X-Parrot-Session-Token"] not in listing


async def test_events_stream_pushes_views_and_closing(make_client):
    client = await make_client()
    s = await open_session(client)
    await submit(client, s, map_reduce_calls())
    resp = await client.get(f"/v1/parrot/dashboard/events?session={s['sid']}&interval=0.1",
                            headers=s["headers"])
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    events = aiter(read_events(resp))
    got = {}
    while "session" not in got:
        name, data = await anext(events)
        got[name] = data
    assert got["engine"]["engines"][0]["model"] == "fake"
    assert len(got["session"]["calls"]) == NUM_CALLS
    assert got["sessions"]["num_sessions"] == 1
    await client.delete(f"/v1/sessions/{s['sid']}", headers=s["headers"])
    while (event := await anext(events))[0] != "session_closed":
        pass
    assert event[1] == {"session_id": s["sid"]}
    resp.close()
    bad = await client.get("/v1/parrot/dashboard/events?interval=0")
    assert bad.status == 400 and (await bad.json())["error"]["param"] == "interval"


async def read_events(resp):
    name = None
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("event: "):
            name = line[7:]
        elif line.startswith("data: "):
            yield name, json.loads(line[6:])


async def test_an_open_stream_does_not_hold_up_shutdown(make_client):
    client = await make_client()
    resp = await client.get("/v1/parrot/dashboard/events?interval=0.1")
    assert (await anext(aiter(read_events(resp))))[0] == "engine"
    start = time.monotonic()
    await drain_in_flight(client.app)  # would wait ServerConfig.shutdown_timeout (10 s)
    assert time.monotonic() - start < 1
    resp.close()


def lost_fake_engine(index: int) -> FakeEngine:
    """A FakeEngine as a lost Ray engine looks through the contract."""
    engine = FakeEngine()
    engine.name, engine.is_alive = f"engine {index}", False
    engine.error = f"engine lost: engine {index} (the actor died)"
    return engine


async def test_a_lost_engine_is_in_the_engine_view_and_drawn_by_the_page(aiohttp_client):
    client = await aiohttp_client(create_app([FakeEngine(), lost_fake_engine(1)], ServerConfig()))
    engines = (await (await client.get("/v1/parrot/dashboard/engine")).json())["engines"]
    assert [(e["index"], e["alive"], e["error"]) for e in engines] == \
        [(0, True, None), (1, False, "engine lost: engine 1 (the actor died)")]
    page = await (await client.get("/dashboard")).text()
    script = await (await client.get("/dashboard/dashboard.js")).text()
    assert 'id="engines"' in page and "e.alive" in script and "e.error" in script
