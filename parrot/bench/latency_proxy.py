"""A TCP proxy on loopback that delays every byte by half a round trip each way.

`parrot bench apps --rtt-ms N` puts one in front of each server, so every client (the
Semantic Variable client, the OpenAI-request client, any peer) pays what a remote client
pays: a request reaches the server N/2 ms after it is sent, and each response chunk reaches
the client N/2 ms after the server wrote it. Chunks are delayed, not serialized: a stream
keeps its rate and arrives N/2 ms late, as over a real link with enough bandwidth.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from urllib.parse import urlsplit


class LatencyProxy:
    def __init__(self, target_url: str, rtt_s: float) -> None:
        parts = urlsplit(target_url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 80
        self.one_way_s = rtt_s / 2
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def start(self) -> "LatencyProxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def __aenter__(self) -> "LatencyProxy":
        return await self.start()

    async def __aexit__(self, *exc) -> None:
        await self.stop()

    async def _accept(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            server_r, server_w = await asyncio.open_connection(self.host, self.port)
            await asyncio.gather(self._pipe(client_r, server_w), self._pipe(server_r, client_w))
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:  # stop(): the connection ends here, not as an error
            pass
        finally:
            self._tasks.discard(task)
            client_w.close()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy reader -> writer, each chunk written one_way_s after it was read."""
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def send() -> None:
            while True:
                due, data = await queue.get()
                if not data:
                    break
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
            await asyncio.sleep(max(0.0, due - time.perf_counter()))
            with contextlib.suppress(OSError):
                writer.write_eof()

        sender = asyncio.create_task(send())
        try:
            while data := await reader.read(65536):
                queue.put_nowait((time.perf_counter() + self.one_way_s, data))
        finally:
            queue.put_nowait((time.perf_counter() + self.one_way_s, b""))
            await sender
