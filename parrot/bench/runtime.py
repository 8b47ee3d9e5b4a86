"""The interface a workload is written against, so one program runs in every mode.

A workload opens apps (`async with runtime.app() as app`), makes calls with its semantic
functions (`app.call(fn, ...)` returns a handle at once), joins handles (`app.join`), and
waits for values (`await app.get(h)`) or times them (`await app.timed(h, kind, tokens)`,
which records a `Sample`). The parrot runtime turns this into a Semantic-Variable program;
the baseline runtime into OpenAI requests sent as soon as their inputs are back.
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from contextlib import AbstractAsyncContextManager
from typing import Any, AsyncIterator, Callable, NamedTuple, Protocol

from parrot.program import SemanticFunction
from parrot.protocol.criteria import Criteria


class Sample(NamedTuple):
    """One timed request or job; times are seconds since the run started."""

    kind: str  # "request", "chat", "job", "app" ... (the workload names them)
    start: float
    first: float | None  # first token (None when not streamed)
    end: float
    tokens: int  # tokens generated for it (fixed lengths: known in advance)

    @property
    def latency(self) -> float:
        return self.end - self.start

    @property
    def ttft(self) -> float | None:
        return None if self.first is None else self.first - self.start

    @property
    def per_token(self) -> float:
        """Normalized latency: seconds per generated token, end to end."""
        return self.latency / max(self.tokens, 1)

    @property
    def tpot(self) -> float | None:
        """Time per output token after the first (None when not streamed)."""
        if self.first is None or self.tokens < 2:
            return None
        return (self.end - self.first) / (self.tokens - 1)


class Clock:
    """Seconds since the run started; shared by every app of one run. `source` is the time
    it reads (wall time; a simulation passes its event loop's virtual `loop.time`)."""

    def __init__(self, source: Callable[[], float] = time.perf_counter) -> None:
        self.source = source
        self.t0 = source()

    def now(self) -> float:
        return self.source() - self.t0

    async def sleep_until(self, offset: float) -> None:
        delay = offset - self.now()
        if delay > 0:
            await asyncio.sleep(delay)


class App(Protocol):
    clock: Clock
    samples: list[Sample]

    def call(self, fn: SemanticFunction, *args: Any, **kwargs: Any) -> Any:
        """Issue `fn(...)` (single-output functions); returns a handle at once."""

    def join(self, items: list[Any], sep: str = "\n") -> Any:
        """A handle whose value is `sep.join(values)`."""

    async def get(self, handle: Any, criteria: Criteria = Criteria.LATENCY) -> str: ...

    async def timed(self, handle: Any, kind: str, tokens: int,
                    criteria: Criteria = Criteria.LATENCY) -> str:
        """The value, streamed; records a Sample from the handle's issue time."""

    async def aclose(self) -> None:
        """End the application's server state now (a Parrot session); leaving its scope
        afterwards sends nothing."""


class Runtime(Protocol):
    mode: str
    clock: Clock

    def app(self) -> AbstractAsyncContextManager[App]:
        """One application's scope (a Parrot session; nothing for the baseline)."""


@contextlib.asynccontextmanager
async def open_apps(runtime: Runtime, n: int) -> AsyncIterator[list[App]]:
    """`n` independent applications of `runtime`, closed together at the end (as apps that
    finish independently are: not one after another, each waiting for the last's close)."""
    async with contextlib.AsyncExitStack() as stack:
        opened = [await stack.enter_async_context(runtime.app()) for _ in range(n)]
        try:
            yield opened
        finally:  # the scopes then exit (in reverse order) with nothing left to send
            await asyncio.gather(*(app.aclose() for app in opened), return_exceptions=True)


def numbered(app: App, items: list[Any]) -> Any:
    """ "1. first\\n2. second\\n..." as a handle, the same text in every mode."""
    parts: list[Any] = []
    for i, item in enumerate(items, 1):
        parts += [f"{i}. ", item, "\n"]
    return app.join(parts, sep="")


def single_output(fn: SemanticFunction) -> str:
    outputs = fn.template.outputs
    if len(outputs) != 1:
        raise ValueError(f"bench workloads use single-output functions; {fn.name} has "
                         f"{outputs}")
    return outputs[0]
