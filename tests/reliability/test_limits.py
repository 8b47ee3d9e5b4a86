"""Limits (in-process, over FakeEngine): per-session caps on unfinished calls and variables,
the global queue (engine waiting + unfinished calls) and open sessions answer 429 - with
Retry-After when the limit clears with time - and serving resumes once work goes away."""
from __future__ import annotations

from parrot.manager.limits import Limits

T = "Q: {{input:x}} A: {{output:y}}"


def lazy_calls(n: int, prefix: str = "c") -> dict:
    """`n` calls nobody asked for: they stay pending (unfinished) until their session ends."""
    return {"calls": [{"id": f"{prefix}{i}", "template": T, "inputs": {"x": "a"},
                       "outputs": {"y": f"{prefix}{i}_y"}} for i in range(n)]}


async def open_session(client) -> tuple[str, dict]:
    resp = await client.post("/v1/sessions", json={})
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    return f"/v1/sessions/{body['session_id']}", {"X-Parrot-Session-Token": body["token"]}


async def expect_429(resp, param: str | None, retry: bool) -> str:
    assert resp.status == 429, await resp.text()
    error = (await resp.json())["error"]
    assert error["type"] == "rate_limit_error" and error["param"] == param, error
    assert ("Retry-After" in resp.headers) == retry, resp.headers
    if retry:
        assert int(resp.headers["Retry-After"]) >= 1
    return error["message"]


async def test_session_caps_on_calls_and_variables(fake_client):
    limits = Limits(max_session_calls=4, max_session_variables=6)
    client, _ = await fake_client(limits=limits)
    base, auth = await open_session(client)
    assert (await client.post(f"{base}/calls", json=lazy_calls(3), headers=auth)).status == 200
    resp = await client.post(f"{base}/calls", json=lazy_calls(2, "d"), headers=auth)
    assert "limit of 4" in await expect_429(resp, "calls", retry=True)
    resp = await client.post(f"{base}/variables", json={"variables": [{}, {}, {}, {}]},
                             headers=auth)
    assert "limit of 6" in await expect_429(resp, "variables", retry=False)
    ok = await client.post(f"{base}/variables", json={"variables": [{}, {}, {}]}, headers=auth)
    assert ok.status == 200  # 3 outputs + 3 = 6: at the cap, not past it
    graph = await (await client.get(f"{base}/graph", headers=auth)).json()
    assert len(graph["calls"]) == 3 and len(graph["variables"]) == 6  # refusals left nothing


async def test_finished_calls_free_the_session_cap(fake_client):
    client, _ = await fake_client(limits=Limits(max_session_calls=2))
    base, auth = await open_session(client)
    for round_ in range(3):  # 6 calls in all, never more than 2 unfinished
        prefix = f"r{round_}_"
        assert (await client.post(f"{base}/calls", json=lazy_calls(2, prefix),
                                  headers=auth)).status == 200
        for i in range(2):
            resp = await client.get(f"{base}/variables/{prefix}{i}_y", headers=auth)
            assert resp.status == 200, await resp.text()


async def test_global_queue_refuses_native_and_openai_then_recovers(fake_client):
    client, _ = await fake_client(limits=Limits(max_queue=8, retry_after_s=3))
    sessions = [await open_session(client) for _ in range(2)]
    for base, auth in sessions:
        assert (await client.post(f"{base}/calls", json=lazy_calls(4),
                                  headers=auth)).status == 200
    base, auth = sessions[0]
    resp = await client.post(f"{base}/calls", json=lazy_calls(1, "x"), headers=auth)
    assert "server busy" in await expect_429(resp, None, retry=True)
    assert resp.headers["Retry-After"] == "3"
    resp = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    await expect_429(resp, None, retry=True)
    huge = await client.post(f"{sessions[1][0]}/calls", json=lazy_calls(9, "h"),
                             headers=sessions[1][1])
    assert huge.status == 400 and (await huge.json())["error"]["param"] == "calls"
    for base, auth in sessions:  # closing them empties the queue
        assert (await client.delete(base, headers=auth)).status == 200
    resp = await client.post("/v1/completions", json={"prompt": "hi", "max_tokens": 2})
    assert resp.status == 200, await resp.text()


async def test_open_sessions_cap(fake_client):
    client, _ = await fake_client(limits=Limits(max_sessions=2))
    first = [await open_session(client) for _ in range(2)]
    resp = await client.post("/v1/sessions", json={})
    await expect_429(resp, "session", retry=True)
    await client.delete(first[0][0], headers=first[0][1])
    await open_session(client)
