"""An asyncio event loop on a virtual clock: waiting costs no real time.

`loop.time()` is a simulated clock. Whenever nothing is ready to run, the loop jumps the clock
to its next timer instead of sleeping, so `asyncio.sleep(0.8)` returns at once with the clock
0.8 s later, and a simulation (`sim_engine.py`) runs in real seconds whatever it simulates,
with the same result every time. Sockets and pipes still work (polled without waiting);
when nothing at all is scheduled (only another thread could wake the loop) it waits for
real, briefly, so threads still work. Everything in-process; nothing here is for serving.
"""
from __future__ import annotations

import asyncio
import selectors
from typing import Any, Awaitable, TypeVar

T = TypeVar("T")
_IDLE_POLL_S = 0.01  # real seconds a loop with no timers waits for other threads


class _JumpingSelector(selectors.DefaultSelector):
    """select(timeout) polls without blocking and advances the virtual clock by timeout."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:
            return super().select(_IDLE_POLL_S)
        events = super().select(0)
        if not events and timeout > 0:
            self.now += timeout
        return events


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._jumping = _JumpingSelector()
        super().__init__(self._jumping)

    def time(self) -> float:
        return self._jumping.now


def run_virtual(main: Awaitable[T]) -> T:
    """`asyncio.run` on a fresh `VirtualLoop`."""
    loop = VirtualLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main)
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        asyncio.set_event_loop(None)
        loop.close()
