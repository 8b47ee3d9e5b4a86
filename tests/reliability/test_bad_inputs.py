"""Table-driven bad inputs against a live `parrot serve`: each gets its 4xx with a JSON error
naming the field, never a 500, and a normal generation still works right after it.

`{s}` in a path is a session opened for this module (its token is sent unless the case says
otherwise); it holds variable `x` (empty, read by lazy call `c1` writing `y`), variable
`done` (set), and a lazy call `c_long` whose prompt is longer than the model's context.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import pytest

from tests.reliability.client import assert_serves, call, engine_stats, open_session, wait_idle
from tests.reliability.conftest import MAX_BODY_BYTES, MAX_MODEL_LEN

pytestmark = pytest.mark.e2e

ANY = object()  # do not check error.param
C, CHAT = "/v1/completions", "/v1/chat/completions"
T = "Q: {{input:x}} A: {{output:y}}"
USER = [{"role": "user", "content": "hi"}]


class Case(NamedTuple):
    name: str
    method: str
    path: str
    body: Any = None
    status: int = 400
    param: Any = ANY
    contains: str = ""
    raw: bytes | None = None
    token: str | None = "session"  # "session": the module session's; None: no token; else it


def llm(**overrides: Any) -> dict:
    return {"calls": [{"template": T, "inputs": {"x": "a"}, **overrides}]}


def sampled(**sampling: Any) -> dict:
    return llm(sampling=sampling)


CASES = [
    # -- the body itself -----------------------------------------------------------------
    Case("malformed JSON", "POST", C, raw=b"{bad", contains="not valid JSON"),
    Case("empty body", "POST", C, raw=b"", contains="not valid JSON"),
    Case("JSON array body", "POST", C, raw=b"[1, 2]", contains="JSON object"),
    Case("non-UTF-8 bytes", "POST", C, raw=b'{"prompt": "a\xff\xfeb"}', contains="UTF-8"),
    Case("UTF-16 body", "POST", C, raw='{"prompt": "a"}'.encode("utf-16"), contains="UTF-8"),
    Case("unpaired surrogate in prompt", "POST", C, param="prompt", contains="Unicode",
         raw=b'{"prompt": "a\\ud800b", "max_tokens": 1}'),
    Case("nested 30k deep", "POST", C, raw=b"[" * 30_000 + b"]" * 30_000,
         contains="nested"),
    Case("nested 80 deep in a field", "POST", C, param="prompt", contains="nested",
         raw=b'{"prompt": ' + b"[" * 80 + b"]" * 80 + b"}"),
    Case("5000-digit integer", "POST", C, raw=b'{"prompt": "a", "max_tokens": ' + b"9" * 5000
         + b"}", contains="not valid JSON"),
    Case("body over the limit", "POST", C, {"prompt": "x" * MAX_BODY_BYTES}, status=413),
    # -- OpenAI completions ----------------------------------------------------------------
    Case("missing prompt", "POST", C, {}, param="prompt"),
    Case("prompt of wrong type", "POST", C, {"prompt": 5}, param="prompt"),
    Case("empty prompt", "POST", C, {"prompt": ""}, param="prompt"),
    Case("token id outside vocab", "POST", C, {"prompt": [10 ** 9]}, param="prompt"),
    Case("max_tokens string", "POST", C, {"prompt": "a", "max_tokens": "ten"}, param="max_tokens"),
    Case("max_tokens negative", "POST", C, {"prompt": "a", "max_tokens": -1}, param="max_tokens"),
    Case("max_tokens zero", "POST", C, {"prompt": "a", "max_tokens": 0}, param="max_tokens"),
    Case("max_tokens fraction", "POST", C, {"prompt": "a", "max_tokens": 1.5},
         param="max_tokens"),
    Case("temperature negative", "POST", C, {"prompt": "a", "temperature": -1},
         param="temperature"),
    Case("temperature NaN", "POST", C, param="temperature",
         raw=b'{"prompt": "a", "temperature": NaN}'),
    Case("top_p zero", "POST", C, {"prompt": "a", "top_p": 0}, param="top_p"),
    Case("top_p above one", "POST", C, {"prompt": "a", "top_p": 1.5}, param="top_p"),
    Case("top_k below -1", "POST", C, {"prompt": "a", "top_k": -2}, param="top_k"),
    Case("n zero", "POST", C, {"prompt": "a", "n": 0}, param="n"),
    Case("n too large", "POST", C, {"prompt": "a", "n": 1000}, param="n"),
    Case("seed beyond 64 bits", "POST", C, {"prompt": "a", "seed": 2 ** 70}, param="seed"),
    Case("seed string", "POST", C, {"prompt": "a", "seed": "x"}, param="seed"),
    Case("stop of numbers", "POST", C, {"prompt": "a", "stop": [1]}, param="stop"),
    Case("stop too many", "POST", C, {"prompt": "a", "stop": ["x"] * 17}, param="stop"),
    Case("stop string too long", "POST", C, {"prompt": "a", "stop": ["x" * 600]}, param="stop"),
    Case("stop_token_ids outside vocab", "POST", C,
         {"prompt": "a", "stop_token_ids": [10 ** 9], "min_tokens": 1}, param="stop_token_ids"),
    Case("stop_token_ids strings", "POST", C, {"prompt": "a", "stop_token_ids": ["a"]},
         param="stop_token_ids"),
    Case("min_tokens above max_tokens", "POST", C, {"prompt": "a", "max_tokens": 2,
                                                    "min_tokens": 5}, param="min_tokens"),
    Case("logprobs beyond 20", "POST", C, {"prompt": "a", "logprobs": 50}, param="logprobs"),
    Case("invalid regex", "POST", C, {"prompt": "a", "guided_regex": "(("},
         param="guided_regex", contains="invalid regex"),
    Case("invalid grammar", "POST", C, {"prompt": "a", "structured_outputs": {
        "grammar": "start: nowhere"}}, param="structured_outputs.grammar"),
    Case("two constraints", "POST", C, {"prompt": "a", "guided_regex": "a",
                                        "guided_choice": ["b"]}, param="guided_choice"),
    Case("stream not boolean", "POST", C, {"prompt": "a", "stream": "yes"}, param="stream"),
    Case("unknown model", "POST", C, {"prompt": "a", "model": "gpt-4"}, 404, "model"),
    Case("prompt longer than the context", "POST", C, {"prompt": "word " * (2 * MAX_MODEL_LEN)},
         param="prompt", contains="context length"),
    Case("prompt + max_tokens beyond context", "POST", C, {"prompt": "a", "max_tokens": 1000},
         param="max_tokens", contains="context length"),
    # -- OpenAI chat -----------------------------------------------------------------------
    Case("chat without messages", "POST", CHAT, {}, param="messages"),
    Case("chat empty messages", "POST", CHAT, {"messages": []}, param="messages"),
    Case("chat bad role", "POST", CHAT, {"messages": [{"role": "wizard", "content": "x"}]},
         param="messages[0].role"),
    Case("chat content number", "POST", CHAT, {"messages": [{"role": "user", "content": 5}]},
         param="messages[0].content"),
    Case("chat content surrogate", "POST", CHAT, param="messages[0].content",
         raw=b'{"messages": [{"role": "user", "content": "\\udc80"}]}'),
    Case("chat max_completion_tokens", "POST", CHAT,
         {"messages": USER, "max_completion_tokens": -1}, param="max_completion_tokens"),
    Case("chat tool without function", "POST", CHAT,
         {"messages": USER, "tools": [{"type": "function"}]}, param="tools[0].function"),
    Case("chat tool parameters not an object", "POST", CHAT, {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}]},
         param="tools[0].function.parameters"),
    Case("chat tool parameters invalid schema", "POST", CHAT, {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "f", "parameters": {
            "type": "object", "properties": {"x": {"type": "bogus"}}}}}]},
         param="tools[0].function.parameters", contains="bogus"),
    Case("chat tool_choice unknown function", "POST", CHAT, {"messages": USER, "tools": [
        {"type": "function", "function": {"name": "f"}}],
        "tool_choice": {"type": "function", "function": {"name": "g"}}}, param="tool_choice"),
    Case("chat tool_choice required without tools", "POST", CHAT,
         {"messages": USER, "tool_choice": "required"}, param="tool_choice"),
    Case("chat response_format schema invalid", "POST", CHAT, {"messages": USER,
         "response_format": {"type": "json_schema", "json_schema": {
             "name": "x", "schema": {"type": "bogus"}}}}, param="response_format"),
    Case("chat response_format unknown type", "POST", CHAT,
         {"messages": USER, "response_format": {"type": "yaml"}}, param="response_format.type"),
    Case("chat top_logprobs without logprobs", "POST", CHAT,
         {"messages": USER, "top_logprobs": 2}, param="top_logprobs"),
    Case("chat tool call arguments not JSON", "POST", CHAT, {"messages": [
        *USER, {"role": "assistant", "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{"}}]}]},
         param="messages[1].tool_calls[0].function.arguments"),
    Case("chat long prompt", "POST", CHAT,
         {"messages": [{"role": "user", "content": "word " * (2 * MAX_MODEL_LEN)}]},
         param="messages", contains="context length"),
    # -- routes --------------------------------------------------------------------------
    Case("unknown route", "GET", "/v1/nope", status=404),
    Case("wrong method", "GET", C, status=405),
    # -- native: sessions ----------------------------------------------------------------
    Case("session body array", "POST", "/v1/sessions", [1], token=None),
    Case("idle_timeout negative", "POST", "/v1/sessions", {"idle_timeout": -1},
         param="idle_timeout", token=None),
    Case("idle_timeout string", "POST", "/v1/sessions", {"idle_timeout": "x"},
         param="idle_timeout", token=None),
    Case("unknown session", "GET", "/v1/sessions/s_0123456789abcdef/graph", status=404),
    Case("missing session token", "GET", "{s}/graph", status=401, token=None),
    Case("wrong session token", "GET", "{s}/graph", status=404, token="guess"),
    # -- native: calls -------------------------------------------------------------------
    Case("calls not a list", "POST", "{s}/calls", {"calls": 5}, param="calls"),
    Case("call not an object", "POST", "{s}/calls", {"calls": [5]}, param="calls[0]"),
    Case("template unclosed", "POST", "{s}/calls", llm(template="Q: {{input:x A: {{output:y}}"),
         param="calls[0].template", contains="(at 1:4)"),
    Case("template without output", "POST", "{s}/calls", llm(template="{{input:x}}"),
         param="calls[0].template"),
    Case("template not text", "POST", "{s}/calls", llm(template=5), param="calls[0].template"),
    Case("input unbound", "POST", "{s}/calls", llm(inputs={}), param="calls[0].inputs.x"),
    Case("input undeclared", "POST", "{s}/calls", llm(inputs={"x": "a", "z": "b"}),
         param="calls[0].inputs.z"),
    Case("input unknown variable", "POST", "{s}/calls", llm(inputs={"x": {"var": "nope"}}),
         status=404, contains="nope"),
    Case("cycle", "POST", "{s}/calls", {"calls": [{"id": "c2", "template": T,
                                                   "inputs": {"x": {"var": "y"}},
                                                   "outputs": {"y": "x"}}]},
         status=409, contains="cycle"),
    Case("second producer", "POST", "{s}/calls", llm(outputs={"y": "y"}), status=409),
    Case("duplicate call id", "POST", "{s}/calls", llm(id="c1"), status=409),
    Case("sampling max_tokens -1", "POST", "{s}/calls", sampled(max_tokens=-1),
         param="calls[0].sampling.max_tokens", contains="max_tokens"),
    Case("sampling temperature text", "POST", "{s}/calls", sampled(temperature="hot"),
         param="calls[0].sampling.temperature", contains="temperature"),
    Case("sampling unknown field", "POST", "{s}/calls", sampled(logit_bias={}),
         param="calls[0].sampling", contains="logit_bias"),
    Case("sampling seed beyond 64 bits", "POST", "{s}/calls", sampled(seed=2 ** 70),
         param="calls[0].sampling.seed", contains="seed"),
    Case("output sampling min_tokens > max_tokens", "POST", "{s}/calls", llm(
        outputs={"y": {"sampling": {"max_tokens": 2, "min_tokens": 5}}}),
         param="calls[0].outputs.y.sampling", contains="min_tokens"),
    Case("eager not boolean", "POST", "{s}/calls", llm(eager="yes"), param="calls[0].eager"),
    Case("bad call id", "POST", "{s}/calls", llm(id="no spaces!"), param="calls[0].id"),
    Case("join parts not a list", "POST", "{s}/calls", {"calls": [{"kind": "join",
                                                                   "parts": 5}]},
         param="calls[0].parts"),
    Case("kind python", "POST", "{s}/calls", {"calls": [{"kind": "python",
                                                         "code": "import os"}]},
         param="calls[0]"),
    Case("native body over the limit", "POST", "{s}/calls", llm(inputs={"x": "x" * MAX_BODY_BYTES}),
         status=413),
    # -- native: variables ---------------------------------------------------------------
    Case("variable value number", "POST", "{s}/variables", {"variables": [{"value": 5}]},
         param="variables[0].value"),
    Case("set value number", "PUT", "{s}/variables/x", {"value": 5}, param="value"),
    Case("set without value", "PUT", "{s}/variables/x", {}, param="value"),
    Case("set surrogate", "PUT", "{s}/variables/x", raw=b'{"value": "\\ud83d"}', param="value"),
    Case("set unknown variable", "PUT", "{s}/variables/nope", {"value": "a"}, status=404),
    Case("set twice", "PUT", "{s}/variables/done", {"value": "again"}, status=409),
    Case("set a produced variable", "PUT", "{s}/variables/y", {"value": "a"}, status=409),
    Case("get unknown variable", "GET", "{s}/variables/nope", status=404),
    Case("get bad criteria", "GET", "{s}/variables/x?criteria=fast", param="criteria"),
    Case("get bad timeout", "GET", "{s}/variables/x?timeout=-1", param="timeout"),
    Case("get times out", "GET", "{s}/variables/x?timeout=0.2", status=408),
    Case("get prompt beyond context", "GET", "{s}/variables/long", status=422,
         contains="context length"),
    Case("stream unknown variable", "GET", "{s}/variables/nope/stream", status=404),
]


@pytest.fixture(scope="module")
def native(server: str) -> tuple[str, dict]:
    base, auth = open_session(server)
    assert call(server, "POST", f"{base}/variables", {"variables": [
        {"id": "x"}, {"id": "done", "value": "v"}]}, headers=auth).status == 200
    long_input = "word " * (2 * MAX_MODEL_LEN)
    answer = call(server, "POST", f"{base}/calls", {"calls": [
        {"id": "c1", "template": T, "inputs": {"x": {"var": "x"}}, "outputs": {"y": "y"}},
        {"id": "c_long", "template": T, "inputs": {"x": long_input},
         "outputs": {"y": "long"}}]}, headers=auth)
    assert answer.status == 200, answer
    yield base, auth
    call(server, "DELETE", base, headers=auth)


@pytest.fixture(scope="module")
def failures_before(server: str) -> int:
    return engine_stats(server)["num_requests_failed"]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(server: str, native: tuple[str, dict], failures_before: int,
                   case: Case) -> None:
    base, auth = native
    headers = {} if case.token is None else \
        auth if case.token == "session" else {"X-Parrot-Session-Token": case.token}
    answer = call(server, case.method, case.path.replace("{s}", base), case.body,
                  raw=case.raw, headers=headers)
    assert answer.status == case.status, answer
    error = answer.error()
    if case.param is not ANY:
        assert error["param"] == case.param, error
    assert case.contains in error["message"], error
    assert_serves(server)


def test_nothing_else_was_disturbed(server: str, native: tuple[str, dict],
                                    failures_before: int) -> None:
    """After the whole table: the module's session still works end to end, no engine request
    failed (bad input is refused before it reaches the engine), and no KV block is held."""
    base, auth = native
    assert call(server, "PUT", f"{base}/variables/x", {"value": "2+2?"}, headers=auth).status \
        == 200
    answer = call(server, "GET", f"{base}/variables/y", headers=auth)
    assert answer.status == 200 and isinstance(answer.body["value"], str), answer
    stats = wait_idle(server)
    assert stats["num_requests_failed"] == failures_before, stats
