"""A background event loop thread: the sync facade runs the async client on it.

Every client coroutine runs on this one loop (so one pooled aiohttp session serves all
`P.Session`s). Sync callers block on `run`; async callers `await arun`, which hops to this
loop and back, so the client works the same from scripts, notebooks and asyncio programs.
"""
from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import queue
import threading
from typing import Any, AsyncIterator, Awaitable, Callable, Iterator, TypeVar

T = TypeVar("T")


class LoopThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._main, name="parrot-client", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def is_current(self) -> bool:
        """True on the loop's own thread (where a blocking call would deadlock)."""
        return threading.current_thread() is self._thread

    def submit(self, coro: Awaitable[T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def run(self, coro: Awaitable[T], timeout: float | None = None) -> T:
        """Run `coro` on the background loop and block until it finishes."""
        if self.is_current():
            coro.close()
            raise RuntimeError("blocking Parrot call made on the client's own loop thread")
        return self.submit(coro).result(timeout)

    async def arun(self, coro: Awaitable[T]) -> T:
        """Await `coro` on the background loop from any other event loop."""
        return await asyncio.wrap_future(self.submit(coro))

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(fn, *args)

    def call_later(self, delay: float, fn: Callable[..., Any], *args: Any) -> None:
        self.loop.call_soon_threadsafe(self.loop.call_later, delay, fn, *args)

    async def aiter(self, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        """Iterate, on the caller's loop, an async iterator that runs on the background loop."""
        caller = asyncio.get_running_loop()
        items: asyncio.Queue = asyncio.Queue()
        future = self.submit(_pump(make, lambda item: caller.call_soon_threadsafe(
            items.put_nowait, item)))
        try:
            while True:
                kind, value = await items.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            future.cancel()

    def iter(self, make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
        """The same, for synchronous callers."""
        items: queue.Queue = queue.Queue()
        future = self.submit(_pump(make, items.put))
        try:
            while True:
                kind, value = items.get()
                if kind == "end":
                    return
                if kind == "error":
                    raise value
                yield value
        finally:
            future.cancel()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self.loop.close()


async def _pump(make: Callable[[], AsyncIterator[Any]], put: Callable[[tuple], None]) -> None:
    try:
        async for item in make():
            put(("item", item))
        put(("end", None))
    except asyncio.CancelledError:
        put(("end", None))
        raise
    except Exception as e:  # handed to the consumer, re-raised there
        put(("error", e))


_instance: LoopThread | None = None
_lock = threading.Lock()


def background() -> LoopThread:
    """The process-wide client loop thread, started on first use."""
    global _instance
    with _lock:
        if _instance is None:
            _instance = LoopThread()
            atexit.register(_shutdown)
        return _instance


def _shutdown() -> None:
    from parrot.program.client import close_shared_client

    if _instance is not None:
        try:
            _instance.run(close_shared_client(), timeout=5)
        except Exception:
            pass
        _instance.stop()
