"""UNIT test over HTTP (FakeEngine): an app's kept prompt is listed by
GET /v1/parrot/app_prefixes and counted in /metrics while its sessions are open."""
from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from parrot.server.app import create_app
from parrot.server.config import ServerConfig
from tests.manager.fake_engine import FakeEngine

SYSTEM = "You are ShipIt. You tell release engineers what to bundle with every release.\n"
TEMPLATE = SYSTEM + "Question: {{input:q}}\nAnswer: {{output:a}}"


async def ask(client, question: str) -> dict:
    """One program in one request: open, submit a call, get its output."""
    body = {"calls": [{"id": "c", "template": TEMPLATE, "inputs": {"q": question},
                       "outputs": {"a": {"var": "a", "sampling": {"max_tokens": 4}}}}],
            "get": {"var": "a"}}
    resp = await client.post("/v1/sessions", json=body)
    assert resp.status == 201, await resp.text()
    return await resp.json()


def gauge(text: str, name: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return sample.value
    raise AssertionError(f"{name} not exported")


async def test_kept_prompts_are_listed_and_counted(aiohttp_client):
    client = await aiohttp_client(create_app([FakeEngine(step_s=0.001)],
                                             ServerConfig(served_model_name="fake")))
    opened = [await ask(client, f"what goes with release {i}?") for i in range(3)]
    listed = await (await client.get("/v1/parrot/app_prefixes")).json()
    [kept] = listed["app_prefixes"]
    assert kept["tokens"] >= len(SYSTEM) and kept["filled"] and kept["error"] is None
    assert set(kept["holders"]) == {o["session_id"] for o in opened[1:]}
    assert kept["app"] == SYSTEM.strip()[:60]
    assert listed["num_tokens"] == kept["tokens"]
    metrics = await (await client.get("/metrics")).text()
    assert gauge(metrics, "parrot:num_app_prefixes") == 1
    assert gauge(metrics, "parrot:app_prefix_tokens") == kept["tokens"]
    for o in opened:
        resp = await client.delete(f"/v1/sessions/{o['session_id']}",
                                   headers={"X-Parrot-Session-Token": o["token"]})
        assert resp.status == 200
    assert (await (await client.get("/v1/parrot/app_prefixes")).json())["app_prefixes"] == []
    metrics = await (await client.get("/metrics")).text()
    assert gauge(metrics, "parrot:num_app_prefixes") == 0
