"""The parrot mode in process: a workload's calls go straight into a `Manager`, no HTTP.

Same program as `parrot_runtime.py` (every call submitted at once, so the manager sees the
whole graph; values streamed with a LATENCY objective), for simulations over
`sim_engine.SimEngine`s where the server and the network are not what is measured. The
clock reads the event loop's time (`virtual_loop.py` makes it virtual).
"""
from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

from parrot.bench.runtime import Clock, Sample, single_output
from parrot.manager import Manager
from parrot.program import SemanticFunction, SemanticVariable
from parrot.protocol.criteria import Criteria


class ManagerApp:
    def __init__(self, manager: Manager, session: Any, clock: Clock,
                 samples: list[Sample]) -> None:
        self.manager, self.session = manager, session
        self.clock, self.samples = clock, samples
        self._ids = itertools.count(1)
        self._issued: dict[str, float] = {}

    def call(self, fn: SemanticFunction, *args: Any, **kwargs: Any) -> SemanticVariable:
        single_output(fn)
        out = SemanticVariable(None, f"v{next(self._ids)}")  # type: ignore[arg-type]
        spec = fn.to_spec(f"c{next(self._ids)}", fn.bind(*args, **kwargs), [out.id])
        self.manager.submit_calls(self.session, {"calls": [spec]})
        self._issued[out.id] = self.clock.now()
        return out

    def join(self, items: list[Any], sep: str = "\n") -> SemanticVariable:
        out = SemanticVariable(None, f"v{next(self._ids)}")  # type: ignore[arg-type]
        parts = [{"var": p.id} if isinstance(p, SemanticVariable) else str(p) for p in items]
        spec = {"id": f"c{next(self._ids)}", "kind": "join", "sep": sep, "parts": parts,
                "output": {"var": out.id}}
        self.manager.submit_calls(self.session, {"calls": [spec]})
        return out

    async def get(self, handle: SemanticVariable,
                  criteria: Criteria = Criteria.LATENCY) -> str:
        return await self.manager.get_variable(self.session, handle.id, criteria)

    async def timed(self, handle: SemanticVariable, kind: str, tokens: int,
                    criteria: Criteria = Criteria.LATENCY) -> str:
        start = self._issued.get(handle.id, self.clock.now())
        first, value = None, ""
        async for event, text in self.manager.stream_variable(self.session, handle.id,
                                                              criteria):
            if first is None:
                first = self.clock.now()
            if event == "error":
                raise RuntimeError(f"{handle.id}: {text}")
            value = text if event == "done" else value
        self.samples.append(Sample(kind, start, first, self.clock.now(), tokens))
        return value

    async def aclose(self) -> None:
        await self.manager.close_session(self.session)


class ManagerRuntime:
    mode = "parrot-in-process"

    def __init__(self, manager: Manager, clock: Clock) -> None:
        self.manager = manager
        self.clock = clock
        self.samples: list[Sample] = []

    @contextlib.asynccontextmanager
    async def app(self) -> AsyncIterator[ManagerApp]:
        session = self.manager.open_session()
        try:
            yield ManagerApp(self.manager, session, self.clock, self.samples)
        finally:
            await self.manager.close_session(session)
