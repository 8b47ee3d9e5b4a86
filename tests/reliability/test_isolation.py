"""Isolation and auth: the API key guards every route but the public ones, one session can
never reach another's variables nor tell a foreign session or variable from a missing one,
and the shared prefix cache gives a request cached KV only for tokens it sent itself."""
from __future__ import annotations

import json
import re
import uuid

import pytest

from parrot.server.middlewares import PUBLIC_PATHS
from tests.reliability.client import call, open_session

KEY = "k3y-" + uuid.uuid4().hex
AUTH = {"Authorization": f"Bearer {KEY}"}
FILL = {"sid": "s_0123456789abcdef", "vid": "v1", "name": "dashboard.js"}
T = "Q: {{input:x}} A: {{output:y}}"


def every_route(app) -> list[tuple[str, str]]:
    routes = set()
    for route in app.router.routes():
        if route.method in ("HEAD", "*"):
            continue
        path = re.sub(r"\{(\w+)(:[^}]*)?\}", lambda m: FILL[m.group(1)], route.resource.canonical)
        routes.add((route.method, path))
    return sorted(routes)


async def test_api_key_guards_every_route_but_the_public_ones(fake_client):
    client, _ = await fake_client(api_key=KEY, enable_test_hooks=True)
    routes = every_route(client.server.app)
    assert ("POST", "/v1/parrot/test/inject_failure") in routes
    for method, path in routes:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": KEY},
                        {"Authorization": "Bearer " + KEY[:-1]}):
            resp = await client.request(method, path, headers=headers)
            if path in PUBLIC_PATHS:
                assert resp.status == 200, (method, path)
                continue
            assert resp.status == 401, (method, path, headers)
            assert (await resp.json())["error"]["type"] == "authentication_error"
    assert (await client.get("/metrics", headers=AUTH)).status == 200
    assert (await client.get("/metrics")).status == 401  # counters describe every tenant
    assert {"/health", "/openapi.json"} <= PUBLIC_PATHS and "/metrics" not in PUBLIC_PATHS


async def test_test_hooks_are_off_by_default(fake_client):
    client, _ = await fake_client()
    resp = await client.post("/v1/parrot/test/inject_failure", json={"marker": "x"})
    assert resp.status == 404


@pytest.mark.parametrize("body", [{}, {"marker": ""}, {"marker": 7}, {"marker": None}])
async def test_test_hook_refuses_a_bad_marker_naming_it(fake_client, body):
    client, _ = await fake_client(enable_test_hooks=True)
    resp = await client.post("/v1/parrot/test/inject_failure", json=body)
    assert resp.status == 400
    error = (await resp.json())["error"]
    assert error["param"] == "marker" and "'marker'" in error["message"], error


@pytest.mark.e2e
def test_undecodable_auth_header_bytes_are_a_plain_401_or_404(server):
    """Header bytes that are not UTF-8 reach the constant-time comparisons: never a 500."""
    base, auth = open_session(server)
    bad = call(server, "GET", f"{base}/graph", headers={"X-Parrot-Session-Token": b"\xff\xfe"})
    assert bad.status == 404 and bad.error(), bad
    also = call(server, "GET", f"{base}/graph", headers={"Authorization": b"Bearer \xff"})
    assert also.status == 404 and also.error(), also
    assert call(server, "DELETE", base, headers=auth).status == 200


async def test_raw_key_bytes_are_a_401(fake_client):
    client, _ = await fake_client(api_key=KEY)
    resp = await client.get("/v1/models", headers={"Authorization": "Bearer \xff\xfe"})
    assert resp.status == 401


async def session(client) -> tuple[str, dict]:
    body = await (await client.post("/v1/sessions", json={})).json()
    return body["session_id"], {"X-Parrot-Session-Token": body["token"]}


SESSION_ROUTES = [("GET", "/graph"), ("GET", "/variables/{v}"), ("GET", "/variables/{v}/stream"),
                  ("PUT", "/variables/{v}"), ("POST", "/variables"), ("POST", "/calls"),
                  ("GET", "/dashboard"), ("GET", "/dashboard/variables/{v}"), ("DELETE", "")]
BODIES = {"PUT": {"value": "x"}, "POST": {"id": "q"}}


async def answer(client, method: str, path: str, headers: dict) -> tuple[int, str]:
    body = {"calls": [{"id": "c", "template": T, "inputs": {"x": {"var": "secret"}}}]} \
        if path.endswith("/calls") else BODIES.get(method)
    resp = await client.request(method, path, headers=headers, json=body)
    return resp.status, await resp.text()


async def test_a_foreign_session_looks_exactly_like_a_missing_one(fake_client):
    client, _ = await fake_client()
    a, a_auth = await session(client)
    b, b_auth = await session(client)
    await client.post(f"/v1/sessions/{a}/variables", json={"id": "secret", "value": "42"},
                      headers=a_auth)
    missing = "s_" + "0" * 16
    for method, route in SESSION_ROUTES:
        path = route.replace("{v}", "secret")
        foreign = await answer(client, method, f"/v1/sessions/{a}{path}", b_auth)
        unknown = await answer(client, method, f"/v1/sessions/{missing}{path}", b_auth)
        assert foreign[0] == unknown[0] == 404, (route, foreign, unknown)
        assert foreign[1].replace(a, missing) == unknown[1], (route, foreign, unknown)
    resp = await client.get(f"/v1/sessions/{a}/variables/secret", headers=a_auth)
    assert (await resp.json())["value"] == "42"  # still there, untouched


async def test_another_sessions_variable_looks_exactly_like_a_missing_one(fake_client):
    """Through its own session, b can neither read, set, wait on, stream nor wire a's
    variable, and cannot tell it from an id that never existed."""
    client, _ = await fake_client()
    a, a_auth = await session(client)
    b, b_auth = await session(client)
    await client.post(f"/v1/sessions/{a}/variables", json={"id": "secret", "value": "42"},
                      headers=a_auth)
    seen = []
    for vid in ("secret", "never-existed"):
        base = f"/v1/sessions/{b}"
        got = [await answer(client, "GET", f"{base}/variables/{vid}", b_auth),
               await answer(client, "GET", f"{base}/variables/{vid}/stream", b_auth),
               await answer(client, "PUT", f"{base}/variables/{vid}", b_auth)]
        resp = await client.post(f"{base}/calls", headers=b_auth, json={"calls": [
            {"id": "c", "template": T, "inputs": {"x": {"var": vid}}}]})
        got.append((resp.status, await resp.text()))
        assert all(status == 404 for status, _ in got), got
        seen.append([(status, text.replace(vid, "<id>")) for status, text in got])
    assert seen[0] == seen[1]
    graph = await (await client.get(f"/v1/sessions/{b}/graph", headers=b_auth)).json()
    assert graph["variables"] == graph["calls"] == graph["shared_prefixes"] == []
    assert a not in json.dumps(graph)
