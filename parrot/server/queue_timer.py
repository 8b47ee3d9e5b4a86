"""Engine queue time, observed from outside the engine through its step observers.

An engine request waits from its arrival (`Request.arrival`, stamped by `generate` or
`fill`) until the scheduler first puts it in a step (`Request.first_scheduled`, stamped by
the scheduler). The observer records that wait once a step with the request has run; a
preempted request that comes back is not counted again. Requests admitted with nothing to
compute never enter a step and are not timed.
"""
from __future__ import annotations

import logging
import weakref
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from parrot.engine import Engine
    from parrot.engine.scheduler import StepPlan

log = logging.getLogger(__name__)


class QueueTimer:
    def __init__(self, engine: Engine, histogram: Any) -> None:
        self.engine, self.histogram = engine, histogram
        self._seen: weakref.WeakSet = weakref.WeakSet()  # requests already timed

    def attach(self) -> None:
        self.engine.step_observers.append(self.after_step)

    def detach(self) -> None:
        self.engine.step_observers.remove(self.after_step)

    def after_step(self, plan: StepPlan) -> None:
        """Never raises: an observer that raises would stop the engine's step loop."""
        try:
            self._observe([s.request for s in plan.seqs if s.request not in self._seen])
        except Exception:  # noqa: BLE001 - a lost sample, never a stopped engine
            log.exception("queue-time observer failed")

    def _observe(self, new: list[Any]) -> None:
        for req in new:
            self._seen.add(req)
            self.histogram.observe(max(0.0, req.first_scheduled - req.arrival))
