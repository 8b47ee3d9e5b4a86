"""Failure injection for tests: fail chosen requests through the engine's own failure path.

A `FailureInjector` observes an engine's steps from outside its core: `mark(ctx, error)`
picks the requests queued or running on a context, and once a step that computed one of
them has been applied, that request fails with `error` (`Engine.fail`) - alone; every
other request, in the same step or not, goes on untouched. A marked request that finishes
in that step stays finished. The server's `--enable-test-hooks` routes drive this.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parrot.engine.context import Context
    from parrot.engine.engine import Engine
    from parrot.engine.request import Request
    from parrot.engine.scheduler import StepPlan


class InjectedFailure(RuntimeError):
    """What an injected failure raises inside the engine."""


class FailureInjector:
    def __init__(self, engine: Engine):
        self.engine = engine
        self._marked: dict[Request, Exception] = {}

    def attach(self) -> None:
        self.engine.step_observers.append(self.after_step)

    def detach(self) -> None:
        self.engine.step_observers.remove(self.after_step)
        self._marked.clear()

    def mark(self, ctx: Context, error: Exception) -> int:
        """Fail every request now queued or running on `ctx` after its next step; returns
        how many were marked (a request that comes later on `ctx` is not)."""
        requests = self.engine.scheduler.requests_on(ctx)
        for req in requests:
            self._marked[req] = error
        return len(requests)

    def mark_matching(self, marker: str, message: str) -> int:
        """Mark the requests on every live context whose text contains `marker`."""
        engine, failed = self.engine, 0
        for ctx in list(engine.tree.live.values()):
            if marker in engine.tokenizer.decode(ctx.token_ids):
                failed += self.mark(ctx, InjectedFailure(message))
        return failed

    def after_step(self, plan: StepPlan) -> None:
        for s in plan.seqs:
            error = self._marked.pop(s.request, None)
            if error is not None:
                self.engine.fail(s.request, error)
        self._marked = {r: e for r, e in self._marked.items() if not r.is_done}  # aborted ones
