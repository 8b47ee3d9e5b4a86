"""HTTP to a Parrot server's OpenAI-compatible API: streamed completions and JSON requests.

Sync calls use the standard library (`urllib`), async calls use aiohttp (already a Parrot
dependency), so the integration adds no HTTP client of its own. Both retry a request that
could not start (connection refused, 429, 5xx) `max_retries` times with exponential
backoff; once a stream has started nothing is retried. A refusal becomes `ParrotAPIError`
carrying the server's status and message.
"""
from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
BACKOFF_S = 0.5


class ParrotAPIError(Exception):
    """The server refused a request (4xx/5xx) or reported an error mid-stream."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"Parrot server error {status}: {message}")
        self.status = status
        self.message = message


class Delta(NamedTuple):
    """One streamed event of choice `index`: a piece of text (with its tokens' logprobs when
    asked for), whole tool calls, and on the last events finish reason and usage."""

    index: int
    text: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    model: str | None
    tool_calls: list[dict[str, Any]] | None = None  # OpenAI `delta.tool_calls`
    logprobs: dict[str, Any] | None = None  # the choice's `logprobs` for this chunk


@dataclass(frozen=True)
class Endpoint:
    base_url: str
    api_key: str | None = None
    timeout: float | None = None
    max_retries: int = 2
    extra_headers: dict[str, str] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return self.base_url.rstrip("/") + path

    def headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", **self.extra_headers}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers


# -- sync (urllib) ---------------------------------------------------------------------------
def post_json(endpoint: Endpoint, path: str, body: dict[str, Any]) -> dict[str, Any]:
    with _open(endpoint, path, body) as resp:
        return json.loads(resp.read())


def stream_deltas(endpoint: Endpoint, path: str, body: dict[str, Any]) -> Iterator[Delta]:
    """POST `body` with stream=True and yield its events until `data: [DONE]`."""
    with _open(endpoint, path, body) as resp:
        for raw in resp:
            deltas = _parse_line(raw.decode("utf-8"))
            if deltas is None:
                return
            yield from deltas


def _open(endpoint: Endpoint, path: str, body: dict[str, Any]):
    data = json.dumps(body).encode()
    for attempt in range(endpoint.max_retries + 1):
        request = urllib.request.Request(endpoint.url(path), data=data,
                                         headers=endpoint.headers(), method="POST")
        try:
            return urllib.request.urlopen(request, timeout=endpoint.timeout)
        except urllib.error.HTTPError as e:
            error = ParrotAPIError(e.code, _error_message(e.read().decode("utf-8", "replace")))
            if e.code not in RETRY_STATUSES or attempt == endpoint.max_retries:
                raise error from None
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            if attempt == endpoint.max_retries:
                raise
        time.sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


# -- async (aiohttp) -------------------------------------------------------------------------
async def apost_json(endpoint: Endpoint, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with _aopen(endpoint, path, body) as resp:
        return json.loads(await resp.read())


async def astream_deltas(endpoint: Endpoint, path: str,
                         body: dict[str, Any]) -> AsyncIterator[Delta]:
    async with _aopen(endpoint, path, body) as resp:
        async for raw in resp.content:
            deltas = _parse_line(raw.decode("utf-8"))
            if deltas is None:
                return
            for delta in deltas:
                yield delta


@asynccontextmanager
async def _aopen(endpoint: Endpoint, path: str, body: dict[str, Any]):
    import aiohttp

    timeout = aiohttp.ClientTimeout(total=None, sock_connect=endpoint.timeout,
                                    sock_read=endpoint.timeout)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        resp = await _apost(session, endpoint, path, body)
        async with resp:
            yield resp


async def _apost(session: Any, endpoint: Endpoint, path: str, body: dict[str, Any]) -> Any:
    """The first successful response, after up to `max_retries` retries."""
    import aiohttp

    for attempt in range(endpoint.max_retries + 1):
        is_last = attempt == endpoint.max_retries
        try:
            resp = await session.post(endpoint.url(path), json=body, headers=endpoint.headers())
        except (aiohttp.ClientConnectionError, TimeoutError):
            if is_last:
                raise
        else:
            if resp.status < 400:
                return resp
            error = ParrotAPIError(resp.status, _error_message(await resp.text()))
            resp.release()
            if resp.status not in RETRY_STATUSES or is_last:
                raise error
        await asyncio.sleep(BACKOFF_S * 2 ** attempt)
    raise AssertionError("unreachable")


# -- server-sent events ----------------------------------------------------------------------
def _parse_line(line: str) -> list[Delta] | None:
    """The deltas of one SSE line ([] for blank/comment lines); None at `data: [DONE]`."""
    line = line.strip()
    if not line.startswith("data:"):
        return []
    payload = line[5:].strip()
    if payload == "[DONE]":
        return None
    data = json.loads(payload)
    if "error" in data:
        error = data["error"] or {}
        raise ParrotAPIError(int(data.get("status", 500)), error.get("message", str(error)))
    model, usage = data.get("model"), data.get("usage")
    deltas = [Delta(c.get("index", 0), _choice_text(c), c.get("finish_reason"), None, model,
                    (c.get("delta") or {}).get("tool_calls"), c.get("logprobs"))
              for c in data.get("choices") or ()]
    if usage:
        deltas.append(Delta(0, "", None, usage, model))
    return deltas


def _choice_text(choice: dict[str, Any]) -> str:
    if "delta" in choice:  # chat chunk
        return (choice["delta"] or {}).get("content") or ""
    return choice.get("text") or ""


def _error_message(text: str) -> str:
    try:
        return json.loads(text)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return text


class StreamSummary:
    """What a stream says besides its text: finish reasons, model name, usage."""

    def __init__(self) -> None:
        self.finish_reasons: dict[int, str] = {}
        self.model: str | None = None
        self.usage: dict[str, Any] | None = None

    def add(self, delta: Delta) -> None:
        self.model = delta.model or self.model
        if delta.finish_reason is not None:
            self.finish_reasons[delta.index] = delta.finish_reason
        if delta.usage is not None:
            self.usage = _add_usage(self.usage or {}, delta.usage)

    def metadata(self, index: int = 0) -> dict[str, Any]:
        """`model_name` and `finish_reason` of choice `index`, for response metadata."""
        return {"model_name": self.model or "", "finish_reason": self.finish_reasons.get(index)}


def _add_usage(total: dict[str, Any], usage: dict[str, Any]) -> dict[str, Any]:
    """Usage of several requests summed (ParrotLLM splits large batches)."""
    summed = {k: total.get(k, 0) + usage.get(k, 0)
              for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    cached = [(u.get("prompt_tokens_details") or {}).get("cached_tokens") for u in (total, usage)]
    if any(c is not None for c in cached):
        summed["prompt_tokens_details"] = {"cached_tokens": sum(c or 0 for c in cached)}
    return summed
