"""The baseline modes: the same LLM calls as plain OpenAI `/v1/completions` requests.

This is how a request-level framework (LangChain, with `abatch` for independent calls)
drives a server: each call is rendered on the client and sent the moment all of its inputs
have come back; independent calls go out concurrently. Every request streams, so the time
of its first token is known. Usage (prompt, cached, completion tokens) is summed per run,
which is the only prefill measure a non-Parrot server offers.

A template with role blocks is rendered here exactly as the Parrot server renders it: the same
lowering (parrot/protocol/chat_render.py) with the chat template of the same model, whose
tokenizer the runner loads locally (`local_chat_template`), so every mode sends the same text.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from parrot.bench.runtime import Clock, Sample, single_output
from parrot.program import SemanticFunction
from parrot.protocol.chat_render import Lowered, RenderChat, chat_renderer, lower_roles
from parrot.protocol.criteria import Criteria
from parrot.protocol.template import Text


@dataclass
class Usage:
    num_requests: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    completion_tokens: int = 0

    def add(self, usage: dict) -> None:
        self.num_requests += 1
        self.prompt_tokens += usage.get("prompt_tokens", 0)
        self.completion_tokens += usage.get("completion_tokens", 0)
        details = usage.get("prompt_tokens_details") or {}
        self.cached_tokens += details.get("cached_tokens") or 0


@dataclass
class Result:
    text: str
    first: float | None
    end: float


@dataclass
class Handle:
    """A call (or join) in flight on the client: its task and when it was issued."""

    task: asyncio.Task
    issued: float


class BaselineApp:
    def __init__(self, runtime: BaselineRuntime) -> None:
        self.runtime = runtime
        self.clock = runtime.clock
        self.samples = runtime.samples
        self._tasks: list[asyncio.Task] = []

    def call(self, fn: SemanticFunction, *args: Any, **kwargs: Any) -> Handle:
        output = single_output(fn)
        bindings = fn.bind(*args, **kwargs)
        task = asyncio.ensure_future(self._run_call(fn, output, bindings))
        self._tasks.append(task)
        return Handle(task, self.clock.now())

    def join(self, items: list[Any], sep: str = "\n") -> Handle:
        async def run() -> Result:
            values = [await _value(item) for item in items]
            return Result(sep.join(values), None, self.clock.now())

        task = asyncio.ensure_future(run())
        self._tasks.append(task)
        return Handle(task, self.clock.now())

    async def get(self, handle: Handle, criteria: Criteria = Criteria.LATENCY) -> str:
        return (await handle.task).text  # an OpenAI request carries no objective

    async def timed(self, handle: Handle, kind: str, tokens: int,
                    criteria: Criteria = Criteria.LATENCY) -> str:
        result = await handle.task
        self.samples.append(Sample(kind, handle.issued, result.first, result.end, tokens))
        return result.text

    async def aclose(self) -> None:
        """Wait for every call issued (a workload may leave some unread)."""
        if self._tasks:
            await asyncio.gather(*self._tasks)

    async def _run_call(self, fn: SemanticFunction, output: str,
                        bindings: dict[str, Any]) -> Result:
        values = {name: await _value(v) for name, v in bindings.items()}
        return await self.runtime.complete(*self.runtime.request(fn, output, values))


class BaselineRuntime:
    """OpenAI-compatible client for one server (`mode` labels it: baseline or baseline+cache)."""

    def __init__(self, url: str, mode: str, clock: Clock, http: Any, model: str | None,
                 render_chat: RenderChat | None = None) -> None:
        self.url = url.rstrip("/")
        self.mode = mode
        self.clock = clock
        self.http = http  # an aiohttp.ClientSession
        self.model = model
        self.render_chat = render_chat  # the served model's chat template, for role blocks
        self.samples: list[Sample] = []
        self.usage = Usage()
        self._lowered: dict[str, Lowered] = {}  # template source -> its lowering

    def request(self, fn: SemanticFunction, output: str,
                values: dict[str, str]) -> tuple[str, dict]:
        """The prompt and sampling of one call, as the Parrot server would fill and run it."""
        template, stops = self.lowered(fn)
        prompt = "".join(p.text if isinstance(p, Text) else values[p.name]
                         for p in template.stages()[0].pieces)
        return prompt, _sampling(fn, output, stops.get(output))

    def lowered(self, fn: SemanticFunction) -> Lowered:
        """`fn`'s template as the Parrot server runs it: role blocks rendered as chat markup."""
        template = fn.template
        if not template.has_roles:
            return Lowered(template, {})
        if template.source not in self._lowered:
            self._lowered[template.source] = lower_roles(template, self.render_chat)
        return self._lowered[template.source]

    @contextlib.asynccontextmanager
    async def app(self) -> AsyncIterator[BaselineApp]:
        app = BaselineApp(self)
        try:
            yield app
        finally:
            await app.aclose()

    async def complete(self, prompt: str, sampling: dict) -> Result:
        body = {"prompt": prompt, "stream": True, "stream_options": {"include_usage": True},
                **sampling}
        if self.model:
            body["model"] = self.model
        first, pieces = None, []
        async with self.http.post(self.url + "/v1/completions", json=body) as resp:
            if resp.status != 200:
                raise RuntimeError(f"{self.url}: HTTP {resp.status}: {await resp.text()}")
            async for data in _sse_data(resp):
                for choice in data.get("choices") or []:
                    if first is None:
                        first = self.clock.now()
                    pieces.append(choice.get("text") or "")
                if data.get("usage"):
                    self.usage.add(data["usage"])
        return Result("".join(pieces), first, self.clock.now())


def local_chat_template(model: str | None) -> RenderChat | None:
    """The chat template of `model` (a `--model` value; None: the embedded SmolLM2), from its
    tokenizer loaded locally; None if it has none."""
    from parrot.engine.loader import load_tokenizer
    from parrot.engine.model_files import resolve_model_dir

    model_dir, _ = resolve_model_dir(model)
    return chat_renderer(load_tokenizer(model_dir))


def _sampling(fn: SemanticFunction, output: str, block_stop: str | None) -> dict:
    """The output's sampling as JSON, with the stop its assistant block implies (as the manager
    adds it: after the output's own stops, never for a constrained output)."""
    sampling = fn.sampling[output].to_json()
    if block_stop is not None and not fn.sampling[output].constraint_json():
        stop = sampling.get("stop") or []
        sampling["stop"] = [*([stop] if isinstance(stop, str) else stop), block_stop]
    return sampling


async def _value(item: Any) -> str:
    return (await item.task).text if isinstance(item, Handle) else str(item)


async def _sse_data(resp: Any) -> AsyncIterator[dict]:
    async for raw in resp.content:
        line = raw.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        payload = line[5:].strip()
        if payload == "[DONE]":
            return
        data = json.loads(payload)
        if "error" in data:
            raise RuntimeError(f"stream error: {data['error']}")
        yield data
