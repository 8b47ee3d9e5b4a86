"""The OpenAPI 3.1 document of the HTTP API, served at `GET /openapi.json` (no API key: it
holds no data). Hand-written and small: it lists every route of the OpenAI-compatible,
native (Semantic Variable) and status APIs with the request fields the server reads and the
statuses it answers; response bodies are described loosely. The fuzz test
(tests/reliability/test_openapi_fuzz.py) sends requests built from it. The dashboard's
routes are described in docs/dashboard.md instead.
"""
from __future__ import annotations

from typing import Any

from aiohttp import web

from parrot.manager.call_spec import MAX_CALLS_PER_REQUEST
from parrot.server.openai_protocol import CHAT_ROLES, MAX_PROMPTS, MAX_STOP_STRINGS

Schema = dict[str, Any]

ID = {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}
TOKENS = {"type": "array", "items": {"type": "integer", "minimum": 0}, "minItems": 1}
STOP = {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"},
                                        "maxItems": MAX_STOP_STRINGS}]}
SAMPLING: Schema = {  # fields shared by both OpenAI endpoints (and native `sampling`)
    "temperature": {"type": "number", "minimum": 0, "maximum": 2},
    "top_p": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
    "top_k": {"type": "integer", "minimum": -1},
    "seed": {"type": "integer", "minimum": -(2 ** 63), "maximum": 2 ** 64 - 1},
    "stop": STOP,
    "stop_token_ids": {"type": "array", "items": {"type": "integer", "minimum": 0}},
    "ignore_eos": {"type": "boolean"},
    "min_tokens": {"type": "integer", "minimum": 0},
    "presence_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "frequency_penalty": {"type": "number", "minimum": -2, "maximum": 2},
    "repetition_penalty": {"type": "number", "exclusiveMinimum": 0, "maximum": 2},
}
OPENAI_COMMON: Schema = {
    "model": {"type": "string"},
    "n": {"type": "integer", "minimum": 1, "maximum": 64},
    "stream": {"type": "boolean"},
    "stream_options": {"type": "object", "properties": {"include_usage": {"type": "boolean"}}},
    "max_tokens": {"type": "integer", "minimum": 1},
    **SAMPLING,
}
MESSAGE = {"type": "object", "required": ["role"], "properties": {
    "role": {"enum": list(CHAT_ROLES)},
    "content": {"oneOf": [{"type": "string"}, {"type": "null"}, {"type": "array", "items": {
        "type": "object", "required": ["type", "text"],
        "properties": {"type": {"const": "text"}, "text": {"type": "string"}}}}]},
    "name": {"type": "string"}}}
INPUT = {"oneOf": [{"type": "string"},
                   {"type": "object", "required": ["var"], "properties": {"var": ID}},
                   {"type": "object", "required": ["value"],
                    "properties": {"value": {"type": "string"}}}]}
NATIVE_SAMPLING = {"type": "object", "properties": {
    "max_tokens": {"type": "integer", "minimum": 1},
    **{k: v for k, v in SAMPLING.items() if k != "top_k"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 100},
    "top_k": {"type": "integer", "minimum": 0}}}
CALL = {"type": "object", "properties": {
    "id": ID, "name": {"type": "string"}, "kind": {"enum": ["llm", "join"]},
    "template": {"type": "string", "description": "{{input:x}} / {{output:y}} placeholders",
                 "examples": ["Q: {{input:x}} A: {{output:y}}"]},
    "inputs": {"type": "object", "additionalProperties": INPUT, "examples": [{"x": "2+2?"}]},
    "outputs": {"type": "object", "additionalProperties": {"oneOf": [ID, {
        "type": "object", "properties": {"var": ID, "sampling": NATIVE_SAMPLING}}]}},
    "sampling": NATIVE_SAMPLING, "eager": {"type": "boolean"},
    "parts": {"type": "array", "items": INPUT, "description": "kind join only"},
    "sep": {"type": "string"}, "output": {"oneOf": [ID, {"type": "object",
                                                        "properties": {"var": ID}}]}}}
VARIABLE = {"type": "object", "properties": {"id": ID, "name": {"type": "string"},
                                             "value": {"type": "string"}}}
ERROR = {"type": "object", "required": ["error"], "properties": {"error": {
    "type": "object", "required": ["message", "type"], "properties": {
        "message": {"type": "string"}, "type": {"type": "string"},
        "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}}
ERROR_TEXT = {
    400: "malformed JSON, bad field (named in error.param), template error, context overflow",
    401: "missing or wrong API key; missing session token",
    404: "unknown model, session (or wrong token), variable, call or route",
    408: "get timed out", 409: "cycle, second producer, second set, duplicate id",
    413: "body over the size limit", 422: "the producing call failed",
    429: "a limit is reached (Retry-After when it clears with time)"}
BATCHES = {"variables": {"type": "array", "minItems": 1, "items": VARIABLE},
           "calls": {"type": "array", "minItems": 1, "maxItems": MAX_CALLS_PER_REQUEST,
                     "items": CALL}}
OPENING_GET = {"type": "object", "required": ["var"], "description": (
    "wait for this variable and answer its value with the session (the GET variable "
    "route's criteria and timeout, default 300 s); a failed get answers that route's error, "
    "plus session_id and token: the session stays open"), "properties": {
        "var": ID, "criteria": {"enum": ["latency", "throughput"]},
        "timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600}}}
SESSION_PARAMS = [{"name": "sid", "in": "path", "required": True, "schema": {"type": "string"}}]
VAR_PARAMS = [*SESSION_PARAMS, {"name": "vid", "in": "path", "required": True,
                                "schema": {"type": "string"}}]
GET_PARAMS = [*VAR_PARAMS,
              {"name": "criteria", "in": "query", "schema": {"enum": ["latency", "throughput"]}},
              {"name": "timeout", "in": "query",
               "schema": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600}}]


def _body(properties: Schema, required: list[str] | None = None) -> Schema:
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = required
    return {"required": True, "content": {"application/json": {"schema": schema}}}


def _op(summary: str, errors: tuple[int, ...], *, body: Schema | None = None,
        params: list | None = None, ok: int = 200, ok_type: str = "application/json",
        session: bool = False, public: bool = False) -> Schema:
    responses: Schema = {str(ok): {"description": "success",
                                   "content": {ok_type: {"schema": {}}}}}
    for status in errors + (() if public else (401,)):
        responses[str(status)] = {"description": ERROR_TEXT[status], "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    op: Schema = {"summary": summary, "responses": responses}
    if body is not None:
        op["requestBody"] = body
    if params:
        op["parameters"] = params
    if public:
        op["security"] = []
    elif session:
        op["security"] = [{"apiKey": [], "sessionToken": []}, {"sessionToken": []}]
    return op


def _openai_paths() -> Schema:
    gen = (400, 404, 413, 429)
    return {
        "/v1/completions": {"post": _op("OpenAI completion (SSE when stream)", gen, body=_body(
            {**OPENAI_COMMON, "prompt": {"oneOf": [
                {"type": "string"}, TOKENS, {"type": "array", "minItems": 1,
                                             "maxItems": MAX_PROMPTS,
                                             "items": {"oneOf": [{"type": "string"}, TOKENS]}}]},
             "best_of": {"type": "integer", "minimum": 1}}, ["prompt"]))},
        "/v1/chat/completions": {"post": _op("OpenAI chat completion", gen, body=_body(
            {**OPENAI_COMMON, "max_completion_tokens": {"type": "integer", "minimum": 1},
             "messages": {"type": "array", "minItems": 1, "items": MESSAGE}}, ["messages"]))},
        "/v1/models": {"get": _op("the served model", ())},
        "/v1/parrot/render_chat": {"post": _op("a chat's prompt text", (400, 413), body=_body(
            {"messages": {"type": "array", "minItems": 1, "items": MESSAGE}}))},
    }


def _native_paths() -> Schema:
    sess = (400, 404, 413)
    return {
        "/v1/sessions": {"post": _op(
            "open a session; with variables, calls and a get: a whole program in one request",
            (400, 404, 408, 409, 413, 422, 429), ok=201, body=_body(
                {"idle_timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 86400},
                 **BATCHES, "get": OPENING_GET}))},
        "/v1/sessions/{sid}": {"delete": _op("close a session (cancels its calls)", (404,),
                                             params=SESSION_PARAMS, session=True)},
        "/v1/sessions/{sid}/variables": {"post": _op(
            "add variables", sess + (409, 429), params=SESSION_PARAMS, session=True,
            body=_body({"variables": BATCHES["variables"]}))},
        "/v1/sessions/{sid}/variables/{vid}": {
            "put": _op("set a variable once", sess + (409,), params=VAR_PARAMS, session=True,
                       body=_body({"value": {"type": "string"}}, ["value"])),
            "get": _op("wait for a value", (400, 404, 408, 422), params=GET_PARAMS,
                       session=True)},
        "/v1/sessions/{sid}/variables/{vid}/stream": {"get": _op(
            "stream a value (SSE)", (400, 404), params=GET_PARAMS[:3], session=True,
            ok_type="text/event-stream")},
        "/v1/sessions/{sid}/calls": {"post": _op(
            "submit calls (atomic)", sess + (409, 429), params=SESSION_PARAMS, session=True,
            body=_body({"calls": BATCHES["calls"]}, ["calls"]))},
        "/v1/sessions/{sid}/graph": {"get": _op("the session's graph", (404,),
                                                params=SESSION_PARAMS, session=True)},
    }


def _status_paths() -> Schema:
    return {
        "/v1/parrot/engine_stats": {"get": _op("engine counters", ())},
        "/metrics": {"get": _op("Prometheus metrics", (), ok_type="text/plain")},
        "/health": {"get": _op("liveness", (), public=True)},
        "/openapi.json": {"get": _op("this document", (), public=True)},
    }


def document() -> Schema:
    return {
        "openapi": "3.1.0",
        "info": {"title": "Parrot", "version": "0.1.0", "description": (
            "OpenAI-compatible and Semantic-Variable APIs. Errors are "
            "{\"error\": {\"message\", \"type\", \"param\", \"code\"}}. With `--api-key`, "
            "every route but /health, /openapi.json and the dashboard page needs "
            "`Authorization: Bearer <key>`; session routes also need "
            "`X-Parrot-Session-Token`.")},
        "paths": {**_openai_paths(), **_native_paths(), **_status_paths()},
        "components": {"schemas": {"Error": ERROR}, "securitySchemes": {
            "apiKey": {"type": "http", "scheme": "bearer"},
            "sessionToken": {"type": "apiKey", "in": "header",
                             "name": "X-Parrot-Session-Token"}}},
        "security": [{"apiKey": []}, {}],
    }


_DOCUMENT = document()


async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(_DOCUMENT)
