"""The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` (no API key: it
holds no data), generated from the pydantic models the handlers validate requests with
(server/openai_models.py, manager/native_bodies.py) and the models of their answers
(server/answer_models.py), so it cannot drift from them. The fuzz test
(tests/reliability/test_openapi_fuzz.py) sends requests built from it. The dashboard's
routes are described in docs/dashboard.md instead.
"""
from __future__ import annotations

from typing import Any, NamedTuple

from aiohttp import web
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from parrot.manager import native_bodies as native
from parrot.server import answer_models as answers
from parrot.server import openai_models as openai

Schema = dict[str, Any]
REF = "#/components/schemas/{model}"
ERROR_TEXT = {
    400: "malformed JSON, bad field (named in error.param), template error, context overflow",
    401: "missing or wrong API key; missing session token",
    404: "unknown model, session (or wrong token), variable, call or route",
    408: "get timed out", 409: "cycle, second producer, second set, duplicate id",
    413: "body over the size limit", 422: "the producing call failed",
    429: "a limit is reached (Retry-After when it clears with time)",
    503: "the engine running the producing call was lost"}
SID = {"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}
VID = {"name": "vid", "in": "path", "required": True, "schema": {"type": "string"}}
CRITERIA = {"name": "criteria", "in": "query", "schema": {"enum": ["latency", "throughput"]}}
TIMEOUT = {"name": "timeout", "in": "query", "schema": {
    "type": "number", "exclusiveMinimum": 0, "maximum": native.MAX_GET_TIMEOUT_S}}


class Op(NamedTuple):
    path: str
    method: str
    summary: str
    errors: tuple[int, ...]
    body: type[BaseModel] | None = None
    answer: type[BaseModel] | None = None
    ok: int = 200
    ok_type: str = "application/json"
    params: tuple[Schema, ...] = ()
    access: str = "key"  # "key": the API key; "session": and the session's token; "public"


GEN, SESS = (400, 404, 413, 429), (400, 404, 413)
OPERATIONS = [
    Op("/v1/completions", "post", "OpenAI completion (SSE of the same shape when stream)", GEN,
       openai.CompletionBody, answers.Completion),
    Op("/v1/chat/completions", "post", "OpenAI chat completion (SSE of "
       "ChatCompletionChunk when stream)", GEN, openai.ChatBody, answers.ChatCompletion),
    Op("/v1/models", "get", "the served model", (), answer=answers.ModelList),
    Op("/v1/parrot/render_chat", "post", "a chat's prompt text", (400, 413),
       openai.RenderChatBody, answers.RenderedChat),
    Op("/v1/sessions", "post", "open a session; with variables, calls and a get (or a "
       "stream, answered as SSE after a `session` event): a whole program in one request", (400, 404, 408, 409, 413, 422, 429, 503),
       native.OpenSessionBody, answers.SessionOpened, ok=201),
    Op("/v1/sessions/{sid}", "delete", "close a session (cancels its calls)", (404,),
       answer=answers.SessionClosed, params=(SID,), access="session"),
    Op("/v1/sessions/{sid}/variables", "post", "add variables", SESS + (409, 429),
       native.VariablesBody, answers.VariablesAdded, params=(SID,), access="session"),
    Op("/v1/sessions/{sid}/variables/{vid}", "put", "set a variable once", SESS + (409,),
       native.SetVariableBody, answers.VariableSet, params=(SID, VID), access="session"),
    Op("/v1/sessions/{sid}/variables/{vid}", "get", "wait for a value",
       (400, 404, 408, 422, 503), answer=answers.VariableValue,
       params=(SID, VID, CRITERIA, TIMEOUT), access="session"),
    Op("/v1/sessions/{sid}/variables/{vid}/stream", "get", "stream a value (SSE events "
       "delta, done, error)", (400, 404), ok_type="text/event-stream",
       params=(SID, VID, CRITERIA), access="session"),
    Op("/v1/sessions/{sid}/variables/{vid}/stream", "post", "add queued variables and calls, "
       "then stream a value (submit and stream in one round trip)", SESS + (409, 429),
       native.StreamBody, ok_type="text/event-stream", params=(SID, VID, CRITERIA),
       access="session"),
    Op("/v1/sessions/{sid}/calls", "post", "submit calls (atomic)", SESS + (409, 429),
       native.CallsBody, answers.CallsAdded, params=(SID,), access="session"),
    Op("/v1/sessions/{sid}/graph", "get", "the session's graph", (404,),
       answer=answers.SessionGraph, params=(SID,), access="session"),
    Op("/v1/parrot/engine_stats", "get", "engine counters", ()),
    Op("/v1/parrot/app_prefixes", "get", "applications' constant prompts kept for their "
       "sessions", ()),
    Op("/metrics", "get", "Prometheus metrics", (), ok_type="text/plain"),
    Op("/health", "get", "liveness", (), answer=answers.Health, access="public"),
    Op("/openapi.json", "get", "this document", (), access="public"),
]
STREAM_ANSWERS = (answers.ChatCompletionChunk,)  # named in summaries, listed in components


def _schemas() -> tuple[dict[tuple[type, str], Schema], Schema]:
    models = {op.body for op in OPERATIONS if op.body} | {answers.Error}
    outputs = {op.answer for op in OPERATIONS if op.answer} | set(STREAM_ANSWERS)
    pairs = [(m, "validation") for m in sorted(models, key=lambda m: m.__name__)]
    pairs += [(m, "serialization") for m in sorted(outputs, key=lambda m: m.__name__)]
    refs, top = models_json_schema(pairs, ref_template=REF)
    return refs, top.get("$defs", {})


def _operation(op: Op, refs: dict[tuple[type, str], Schema]) -> Schema:
    ok_schema = refs[(op.answer, "serialization")] if op.answer else {}
    responses: Schema = {str(op.ok): {"description": "success",
                                      "content": {op.ok_type: {"schema": ok_schema}}}}
    error_ref = refs[(answers.Error, "validation")]
    for status in op.errors + (() if op.access == "public" else (401,)):
        responses[str(status)] = {"description": ERROR_TEXT[status],
                                  "content": {"application/json": {"schema": error_ref}}}
    out: Schema = {"summary": op.summary, "responses": responses}
    if op.body is not None:
        out["requestBody"] = {"required": op.path != "/v1/sessions", "content": {
            "application/json": {"schema": refs[(op.body, "validation")]}}}
    if op.params:
        out["parameters"] = list(op.params)
    if op.access == "public":
        out["security"] = []
    elif op.access == "session":
        out["security"] = [{"apiKey": [], "sessionToken": []}, {"sessionToken": []}]
    return out


def document() -> Schema:
    refs, components = _schemas()
    paths: Schema = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, refs)
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parrot", "version": "0.1.0", "description": (
            "OpenAI-compatible and Semantic-Variable APIs. Errors are "
            "{\"error\": {\"message\", \"type\", \"param\", \"code\"}}. With `--api-key`, "
            "every route but /health, /openapi.json and the dashboard page needs "
            "`Authorization: Bearer <key>`; session routes also need "
            "`X-Parrot-Session-Token`.")},
        "paths": paths,
        "components": {"schemas": components, "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer"},
            "sessionToken": {"type": "apiKey", "in": "header",
                             "name": "X-Parrot-Session-Token"}}},
        "security": [{"apiKey": []}, {}],
    }


_DOCUMENT = document()


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_DOCUMENT)
