"""The parrot mode: a workload as a Semantic-Variable program over the native API.

Every `app.call` is queued into the app's `P.Session` at once (no waiting), so the server
sees the whole DAG; only the values the workload asks for cross the network.
"""
from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import parrot as P
from parrot.bench.runtime import Clock, Sample, single_output
from parrot.program import SemanticFunction, SemanticVariable
from parrot.protocol.criteria import Criteria


class ParrotApp:
    def __init__(self, session: P.Session, clock: Clock, samples: list[Sample]) -> None:
        self.session = session
        self.clock = clock
        self.samples = samples
        self._issued: dict[str, float] = {}  # variable id -> when its call was made

    def call(self, fn: SemanticFunction, *args: Any, **kwargs: Any) -> SemanticVariable:
        single_output(fn)
        (sv,) = self.session.submit_call(fn, fn.bind(*args, **kwargs))
        self._issued[sv.id] = self.clock.now()
        return sv

    def join(self, items: list[Any], sep: str = "\n") -> SemanticVariable:
        return self.session.join(items, sep)

    async def get(self, handle: SemanticVariable,
                  criteria: Criteria = Criteria.LATENCY) -> str:
        return await handle.aget(criteria)

    async def timed(self, handle: SemanticVariable, kind: str, tokens: int,
                    criteria: Criteria = Criteria.LATENCY) -> str:
        start = self._issued.get(handle.id, self.clock.now())
        first, pieces = None, []
        async for piece in handle.astream(criteria):
            if first is None:
                first = self.clock.now()
            pieces.append(piece)
        self.samples.append(Sample(kind, start, first, self.clock.now(), tokens))
        return "".join(pieces)

    async def aclose(self) -> None:
        await self.session.aclose()


class ParrotRuntime:
    mode = "parrot"

    def __init__(self, url: str, clock: Clock) -> None:
        self.url = url
        self.clock = clock
        self.samples: list[Sample] = []

    @contextlib.asynccontextmanager
    async def app(self) -> AsyncIterator[ParrotApp]:
        async with P.Session(self.url) as session:
            yield ParrotApp(session, self.clock, self.samples)
