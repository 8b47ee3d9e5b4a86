"""The HTTP side of the client: one pooled aiohttp session, JSON requests, SSE reading.

Runs only on the background loop (`loop_thread.background()`); aiohttp is imported lazily
so `import parrot` stays light.
"""
from __future__ import annotations

import contextlib
import json
from typing import Any, AsyncIterator

from parrot.program.errors import ServerError

_shared: "HttpClient | None" = None


class HttpClient:
    def __init__(self) -> None:
        self._session = None

    def _client(self):
        import aiohttp

        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=64, keepalive_timeout=30)
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=30)
            self._session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self._session

    async def request(self, method: str, url: str, *, json_body: Any = None,
                      params: dict | None = None, headers: dict | None = None,
                      timeout: float | None = None) -> dict:
        """Send one request; return its JSON body, or raise ServerError for a 4xx/5xx."""
        import aiohttp

        kwargs = {"timeout": aiohttp.ClientTimeout(total=timeout)} if timeout else {}
        async with self._client().request(method, url, json=json_body, params=params,
                                          headers=headers, **kwargs) as resp:
            text = await resp.text()
            body = _decode(text)
            if resp.status >= 400:
                raise ServerError.from_body(resp.status, body)
            return body

    @contextlib.asynccontextmanager
    async def stream(self, method: str, url: str, *, json_body: Any = None,
                     params: dict | None = None,
                     headers: dict | None = None) -> AsyncIterator[AsyncIterator[tuple[str, Any]]]:
        """Open a server-sent event stream: entered once the headers are in (a 4xx/5xx
        raises ServerError here), it gives the (event name, decoded JSON data) pairs."""
        async with self._client().request(method, url, json=json_body, params=params,
                                          headers=headers) as resp:
            if resp.status >= 400:
                raise ServerError.from_body(resp.status, _decode(await resp.text()))
            yield _events(resp)

    async def close(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()


def shared_client() -> HttpClient:
    """The one pooled client (call on the background loop)."""
    global _shared
    if _shared is None:
        _shared = HttpClient()
    return _shared


async def close_shared_client() -> None:
    if _shared is not None:
        await _shared.close()


async def _events(resp) -> AsyncIterator[tuple[str, Any]]:
    event, data = "message", []
    async for raw in resp.content:
        line = raw.decode("utf-8").rstrip("\r\n")
        if line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif not line and data:
            yield event, _decode("\n".join(data))
            event, data = "message", []


def _decode(text: str) -> Any:
    try:
        return json.loads(text) if text else {}
    except ValueError:
        return text
