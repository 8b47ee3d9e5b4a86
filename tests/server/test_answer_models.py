"""Real answers of the in-process app (SmolLM2) validate against the closed models that
/openapi.json publishes (server/answer_models.py): a field the handlers add, drop or
rename without the models fails here. Also: the engine's usage reaches the client as is."""
from __future__ import annotations

import json

from parrot.server import answer_models as answers
from parrot.server.openapi import OPERATIONS, document
from tests.server.test_app import make_client  # noqa: F401 (fixture)

USER = [{"role": "user", "content": "Say hi"}]


async def _json(client, method, path, body=None, headers=None):
    resp = await client.request(method, path, json=body, headers=headers)
    return resp.status, await resp.json()


async def test_openai_answers_match_their_models(make_client):
    client, engine = await make_client()
    status, body = await _json(client, "POST", "/v1/completions", {
        "prompt": ["Hello", "Bye"], "max_tokens": 3, "n": 2, "logprobs": 2, "temperature": 0})
    assert status == 200, body
    done = answers.Completion.model_validate(body)
    assert len(done.choices) == 4
    status, body = await _json(client, "POST", "/v1/chat/completions", {
        "messages": USER, "max_tokens": 3, "logprobs": True, "top_logprobs": 1})
    assert status == 200, body
    answers.ChatCompletion.model_validate(body)
    status, body = await _json(client, "GET", "/v1/models")
    assert answers.ModelList.model_validate(body).data[0].max_model_len == engine.max_model_len
    status, body = await _json(client, "POST", "/v1/completions", {"prompt": 5})
    assert status == 400 and answers.Error.model_validate(body).error.param == "prompt"


async def test_stream_chunks_match_their_models(make_client):
    client, _ = await make_client()
    resp = await client.post("/v1/chat/completions", json={
        "messages": USER, "max_tokens": 4, "stream": True,
        "stream_options": {"include_usage": True}})
    events = [line[6:] for line in (await resp.text()).split("\n\n") if line]
    assert events[-1] == "[DONE]"
    chunks = [answers.ChatCompletionChunk.model_validate(json.loads(e)) for e in events[:-1]]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1
    resp = await client.post("/v1/completions", json={"prompt": "Hi", "max_tokens": 3,
                                                      "stream": True})
    events = [line[6:] for line in (await resp.text()).split("\n\n") if line]
    for event in events[:-1]:
        answers.Completion.model_validate(json.loads(event))


async def test_native_answers_match_their_models(make_client):
    client, _ = await make_client()
    status, body = await _json(client, "POST", "/v1/sessions", {
        "variables": [{"id": "q", "value": "2+2?"}],
        "calls": [{"template": "Q: {{input:x}} A: {{output:y}}", "inputs": {"x": {"var": "q"}},
                   "outputs": {"y": {"var": "a", "sampling": {"max_tokens": 3}}}}],
        "get": {"var": "a"}})
    assert status == 201, body
    opened = answers.SessionOpened.model_validate(body)
    sid, auth = opened.session_id, {"X-Parrot-Session-Token": opened.token}
    base = f"/v1/sessions/{sid}"
    checks = [("POST", f"{base}/variables", {"variables": [{"id": "v"}]}, answers.VariablesAdded),
              ("PUT", f"{base}/variables/v", {"value": "x"}, answers.VariableSet),
              ("GET", f"{base}/variables/v", None, answers.VariableValue),
              ("POST", f"{base}/calls", {"calls": [{"kind": "join", "parts": [{"var": "v"}]}]},
               answers.CallsAdded),
              ("GET", f"{base}/graph", None, answers.SessionGraph),
              ("DELETE", base, None, answers.SessionClosed)]
    for method, path, body, model in checks:
        status, answer = await _json(client, method, path, body, auth)
        assert status == 200, (path, answer)
        model.model_validate(answer)


async def test_n_choices_report_the_prompt_once_with_the_engine_counts(make_client):
    client, _ = await make_client()
    prompt = " ".join(f"word{i}" for i in range(40))  # several KV blocks
    body = {"prompt": prompt, "max_tokens": 2, "temperature": 0}
    _, one = await _json(client, "POST", "/v1/completions", body)
    _, three = await _json(client, "POST", "/v1/completions", {**body, "n": 3})
    assert three["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]
    assert three["usage"]["completion_tokens"] == 3 * 2
    cached = three["usage"]["prompt_tokens_details"]["cached_tokens"]
    assert 0 < cached <= three["usage"]["prompt_tokens"]  # the fill's hits: the first's blocks
    assert one["usage"]["prompt_tokens_details"]["cached_tokens"] == 0


def test_every_documented_operation_names_its_models():
    doc = document()
    for op in OPERATIONS:
        entry = doc["paths"][op.path][op.method]
        if op.body is not None:
            ref = entry["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            assert ref.endswith("/" + op.body.__name__)
        if op.answer is not None:
            ok = entry["responses"][str(op.ok)]["content"][op.ok_type]["schema"]
            assert ok["$ref"].endswith("/" + op.answer.__name__)
