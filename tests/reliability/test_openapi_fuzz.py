"""Fuzz every operation of /openapi.json against a live server with requests built from its
schemas (valid ones, mutants, raw bytes): never a 5xx, every status is one the document
lists, every 4xx is a JSON error with a message, and the server serves normally after.

Bounded: a fixed number of derandomized examples per operation, about 20 s in all here;
`PARROT_FUZZ_RANDOM=1` draws new examples on each run instead.
"""
from __future__ import annotations

import os
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parrot.server.openapi import document
from tests.reliability.client import Answer, assert_serves, call, open_session, wait_idle
from tests.reliability.schema_strategies import bodies, from_schema

pytestmark = pytest.mark.e2e
DOC = document()
COMPONENTS = DOC["components"]["schemas"]
OPERATIONS = [(path, method) for path, ops in DOC["paths"].items() for method in ops]
GENERATING = {"/v1/completions", "/v1/chat/completions"}
DERANDOMIZE = not os.environ.get("PARROT_FUZZ_RANDOM")  # CI: the same examples every run
IDS = st.sampled_from(["ready", "nope"]) | st.text(max_size=12)  # "ready" has a value


def test_the_served_document_is_the_schema_module(server):
    answer = call(server, "GET", "/openapi.json")
    assert answer.status == 200 and answer.body == DOC


@pytest.mark.parametrize(("path", "method"), OPERATIONS, ids=[f"{m} {p}" for p, m in OPERATIONS])
def test_fuzz(server: str, path: str, method: str) -> None:
    op = DOC["paths"][path][method]
    base, auth = open_session(server) if "{sid}" in path else ("", {})
    if base:
        assert call(server, "POST", f"{base}/variables", {"id": "ready", "value": "v"},
                    headers=auth).status == 200

    @settings(max_examples=40 if path in GENERATING else 60, deadline=None, database=None,
              derandomize=DERANDOMIZE, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def run(data: st.DataObject) -> None:
        target, headers = _target(data, server, path, op, base, auth)
        body, raw = _body(data, op, path)
        answer = call(server, method.upper(), target, body, raw=raw, headers=headers)
        _check(answer, op, f"{method.upper()} {target} {body!r:.200}")

    run()
    if base:
        call(server, "DELETE", base, headers=auth)


def _target(data: st.DataObject, server: str, path: str, op: dict, base: str,
            auth: dict) -> tuple[str, dict]:
    sid = base.rsplit("/", 1)[-1]
    if path == "/v1/sessions/{sid}":  # closing: a fresh session each time, or a bad id
        fresh, auth = open_session(server)
        sid = fresh.rsplit("/", 1)[-1]
    sid = data.draw(mostly(sid, st.text(max_size=20)), "sid") if sid else sid
    headers = data.draw(mostly(auth, st.sampled_from([{}, {"X-Parrot-Session-Token": "x"}]))
                        if auth else st.just({}), "headers")
    target = path.replace("{sid}", quote(sid, safe="")).replace(
        "{vid}", quote(data.draw(mostly("ready", IDS), "vid"), safe=""))
    query = {}
    for param in op.get("parameters", []):
        if param["in"] == "query" and data.draw(st.booleans(), param["name"]):
            value = from_schema(param["schema"], COMPONENTS, param["name"]) | st.text(max_size=8)
            query[param["name"]] = data.draw(value, param["name"] + " value")
    return target + ("?" + urlencode(query) if query else ""), headers


def _body(data: st.DataObject, op: dict, path: str) -> tuple[object, bytes | None]:
    if "requestBody" not in op:
        return None, None
    if data.draw(st.integers(0, 9), "raw?") == 0:
        return None, data.draw(st.binary(max_size=64), "raw bytes")
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    body = data.draw(bodies(schema, COMPONENTS), "body")
    if path == "/v1/sessions" and isinstance(body, dict) and isinstance(body.get("get"), dict):
        body["get"].setdefault("timeout", 0.2)  # bounded wait: its variable may never come
    if path in GENERATING and isinstance(body, dict):
        if not any(k in body for k in ("max_tokens", "max_completion_tokens")):
            body["max_tokens"] = data.draw(st.integers(1, 4), "max_tokens")  # bounded work
        if data.draw(st.booleans(), "plausible?"):  # let the sampling fields reach the engine
            for field in ("model", "best_of", "stop_token_ids"):
                body.pop(field, None)
            if not isinstance(body.get("prompt", ""), str):
                body["prompt"] = "Hello"
    return body, None


def mostly(value: object, other: st.SearchStrategy) -> st.SearchStrategy:
    """`value` about three times in four, else something from `other`."""
    return st.tuples(st.booleans(), st.booleans()).flatmap(
        lambda coins: st.just(value) if any(coins) else other)


def _check(answer: Answer, op: dict, what: str) -> None:
    assert answer.status < 500, f"{what}: {answer}"
    assert str(answer.status) in op["responses"], f"{what}: undocumented {answer.status}"
    if answer.status >= 400:
        answer.error()
    elif "application/json" in answer.headers.get("Content-Type", ""):
        assert isinstance(answer.body, dict), f"{what}: {answer}"


def test_the_server_serves_normally_after_the_fuzz(server):
    assert call(server, "GET", "/health").status == 200
    assert_serves(server)
    wait_idle(server)
