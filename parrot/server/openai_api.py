"""Handlers of the OpenAI-compatible API: parse, run on an engine, shape the answer."""
from __future__ import annotations

import json
import time
import zlib
from contextlib import aclosing
from typing import TYPE_CHECKING, Any

from aiohttp import web

from parrot.engine import EngineInputError, SamplingParams
from parrot.engine.sampling_params import Constraint
from parrot.server.errors import ApiError
from parrot.server.generation import generate_choices
from parrot.server.keys import CONFIG, ENGINES, MANAGER, METRICS
from parrot.server.openai_protocol import (GenerationOptions, parse_chat_request,
                                           parse_completion_request)
from parrot.server.logprobs import LogprobsRenderer
from parrot.server.openai_responses import ChatShape, CompletionShape, Tally
from parrot.server.prompts import (
    chat_token_ids,
    check_token_ids,
    completion_token_ids,
    fit_max_tokens,
)
from parrot.server.sse import stream_sse
from parrot.server.tools import ToolSet
from parrot.server.validation import read_json_object

if TYPE_CHECKING:
    from parrot.engine import Engine

COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # OpenAI's default; chat defaults to the room left
AFFINITY_TOKENS = 64  # prompts sharing this many leading tokens go to the same engine


async def completions(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    req = parse_completion_request(await read_json_object(request),
                                   max_n=request.app[CONFIG].max_n)
    model = served_model(request.app, req.options.model)
    engine = request.app[ENGINES][0]  # every engine serves the same model
    tokenizer = engine.tokenizer
    prompts = [completion_token_ids(tokenizer, engine.vocab_size, p) for p in req.prompts]
    shape = CompletionShape(model, _renderer(tokenizer, req.options))
    return await _serve(request, prompts, req.options, shape, started,
                        default_max_tokens=COMPLETIONS_DEFAULT_MAX_TOKENS, prompt_param="prompt")


async def chat_completions(request: web.Request) -> web.StreamResponse:
    started = time.monotonic()
    req = parse_chat_request(await read_json_object(request), max_n=request.app[CONFIG].max_n)
    model = served_model(request.app, req.options.model)
    engine = request.app[ENGINES][0]
    _check_tool_schemas(engine, req.tools)
    prompts = [chat_token_ids(engine.tokenizer, req.messages, req.tools)]
    shape = ChatShape(model, _renderer(engine.tokenizer, req.options), req.tools)
    return await _serve(request, prompts, req.options, shape, started,
                        default_max_tokens=None, prompt_param="messages")


def _renderer(tokenizer: Any, options: GenerationOptions) -> LogprobsRenderer | None:
    return None if options.logprobs is None else LogprobsRenderer(tokenizer)


def _check_tool_schemas(engine: Engine, tools: ToolSet) -> None:
    """400 naming the tool whose parameters are no valid JSON schema (compiled and cached,
    so a required call's grammar reuses the work)."""
    for i, tool in enumerate(tools.tools if tools.active else ()):
        schema = Constraint("json_schema", json.dumps(tool.parameters))
        _compile(engine, SamplingParams(constraint=schema), f"tools[{i}].function.parameters")


def _compile(engine: Engine, sampling: SamplingParams, param: str | None) -> None:
    try:
        engine.compile(sampling)
    except EngineInputError as e:
        raise ApiError(f"'{param}': {e}" if param else str(e), param=param) from None


async def list_models(request: web.Request) -> web.Response:
    engine = request.app[ENGINES][0]
    name = served_model(request.app, None)
    return web.json_response({"object": "list", "data": [{
        "id": name, "object": "model", "created": 0, "owned_by": "parrot",
        "root": engine.model_name, "max_model_len": engine.max_model_len}]})


def served_model(app: web.Application, requested: str | None) -> str:
    """The name the server answers to; 404 for any other requested model."""
    name = app[CONFIG].served_model_name or app[ENGINES][0].model_name
    if requested is not None and requested != name:
        raise ApiError(f"The model '{requested}' does not exist (this server serves '{name}')",
                       param="model", status=404, code="model_not_found")
    return name


def _admit(request: web.Request, num_generations: int) -> None:
    """429 with Retry-After when the server's queue is full (see manager/limits.py; the
    error middleware maps the refusal)."""
    request.app[MANAGER].check_queue(num_generations, param="n")


def pick_engine(engines: list[Engine], prompt: list[int]) -> Engine:
    """Prefix affinity: prompts with the same leading tokens share an engine's cache; a lost
    engine's share goes to the live ones (all lost: its EngineLost is the 503)."""
    engines = [e for e in engines if e.is_alive] or engines
    if len(engines) == 1:
        return engines[0]
    key = zlib.crc32(repr(prompt[:AFFINITY_TOKENS]).encode())
    return engines[key % len(engines)]


async def _serve(request: web.Request, prompts: list[list[int]], options: GenerationOptions,
                 shape: Any, started: float, *, default_max_tokens: int | None,
                 prompt_param: str) -> web.StreamResponse:
    """Validate what needs the engine (room in the context, token ids, the constraint),
    building each choice's SamplingParams once, then run every choice."""
    engine = pick_engine(request.app[ENGINES], prompts[0])
    sampling = [[options.sampling_for(fit_max_tokens(
        options.max_tokens, len(p), engine.max_model_len, default=default_max_tokens,
        prompt_param=prompt_param, tokens_param=options.max_tokens_field), choice)
        for choice in range(i * options.n, (i + 1) * options.n)] for i, p in enumerate(prompts)]
    check_token_ids(engine.vocab_size, sampling[0][0].stop_token_ids, "stop_token_ids")
    _compile(engine, sampling[0][0], options.constraint_param)
    _admit(request, len(prompts) * options.n)

    def sampling_for(prompt_index: int, choice: int) -> SamplingParams:
        return sampling[prompt_index][choice - prompt_index * options.n]

    stream = request.app[METRICS].timed(
        generate_choices(engine, prompts, options.n, sampling_for), started,
        [len(p) for p in prompts], options.n)
    tally = Tally(len(prompts) * options.n, options.n)
    if options.stream:
        return await stream_sse(request, stream, shape, tally, options.include_usage)
    async with aclosing(stream):
        async for item in stream:
            tally.add(*item)
    return web.json_response(shape.response(tally))
