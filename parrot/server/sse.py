"""Server-sent events: the one writer every stream uses (OpenAI chunks, native variable
streams, dashboard views), and the OpenAI stream, which ends with `data: [DONE]`."""
from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

from aiohttp import web

from parrot.server.errors import ApiError, error_body
from parrot.server.generation import ChoiceChunk
from parrot.server.openai_responses import Tally

log = logging.getLogger(__name__)

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
               "X-Accel-Buffering": "no"}


async def open_stream(request: web.Request) -> web.StreamResponse:
    """Send the headers of an event stream (from here on errors go in-band)."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    return response


def event_bytes(data: Any, event: str | None = None, *, compact: bool = False) -> bytes:
    """One event: `event: <name>` when named, then its JSON `data:` line."""
    text = json.dumps(data, separators=(",", ":") if compact else None)
    head = f"event: {event}\n" if event is not None else ""
    return f"{head}data: {text}\n\n".encode()


async def stream_sse(request: web.Request, stream: AsyncIterator[ChoiceChunk], shape: Any,
                     tally: Tally, include_usage: bool) -> web.StreamResponse:
    """Stream `stream` as SSE. Errors before the first chunk still get a 4xx status
    (the headers wait for it); later ones become an error event before [DONE]."""
    async with aclosing(stream):
        first = await anext(stream, None)  # ApiError here propagates as a normal 4xx
        response = await open_stream(request)
        send = _Sender(response, include_usage)
        try:
            for data in shape.opening_chunks(len(tally.texts)):
                await send(data)
            if first is not None:
                await _send_choice(send, shape, tally, first)
            async for item in stream:
                await _send_choice(send, shape, tally, item)
            if include_usage:
                await send(shape.usage_chunk(tally), usage=True)
        except ConnectionResetError:
            log.debug("client went away mid-stream")
            return response
        except ApiError as e:
            await send(e.to_json(), usage=True)
        except Exception:  # noqa: BLE001 - the status is already sent; report in-band
            log.exception("generation failed mid-stream")
            await send(error_body("internal server error", status=500), usage=True)
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


async def _send_choice(send: _Sender, shape: Any, tally: Tally, item: ChoiceChunk) -> None:
    tally.add(*item)
    data = shape.chunk(item.index, item.chunk)
    if data is not None:
        await send(data)


class _Sender:
    def __init__(self, response: web.StreamResponse, include_usage: bool) -> None:
        self.response, self.include_usage = response, include_usage

    async def __call__(self, data: dict[str, Any], usage: bool = False) -> None:
        if self.include_usage and not usage:
            data = {**data, "usage": None}
        await self.response.write(event_bytes(data))
