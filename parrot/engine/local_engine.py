"""The engine contract over an engine in this process: contexts as ids, nothing to wait for.

Every call goes straight to the `Engine` on this event loop, so an error is raised to the
caller at once. The queue-time observer of the server's metrics attaches to the engine's
`step_observers` (only an in-process engine has them; see docs/ray.md).
"""
from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from typing import Any

from parrot.engine.context_table import ContextTable
from parrot.engine.engine import Engine
from parrot.engine.failure_injector import FailureInjector
from parrot.engine.sampling_params import GenerationChunk, Priority, SamplingParams
from parrot.engine.stats import EngineStats
from parrot.engine.status import EngineStatus


class LocalEngine:
    def __init__(self, engine: Engine, name: str = "engine") -> None:
        self.engine = engine
        self.name = name
        self._table = ContextTable(engine)
        self._ids = itertools.count(1)
        self._injector: FailureInjector | None = None

    # -- what the model is (read from the started engine) --------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.engine.tokenizer

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.engine.model_config.vocab_size

    @property
    def config(self):
        return self.engine.config

    @property
    def step_observers(self) -> list:
        return self.engine.step_observers

    @property
    def is_alive(self) -> bool:
        return True

    @property
    def error(self) -> str | None:
        return None

    # -- contexts ------------------------------------------------------------------------
    def new_context(self) -> int:
        cid = next(self._ids)
        self._table.new(cid)
        return cid

    def fork(self, parent: int) -> int:
        cid = next(self._ids)
        self._table.fork(parent, cid)
        return cid

    def append(self, ctx: int, token_ids: list[int]) -> None:
        self._table.append(ctx, token_ids)

    def pin(self, ctx: int) -> None:
        self._table.pin(ctx)

    def free(self, ctx: int) -> None:
        self._table.free(ctx)

    async def fill(self, ctx: int, token_ids: list[int],
                   priority: Priority = Priority.NORMAL) -> int:
        return await self.engine.fill(self._table.get(ctx), token_ids, priority)

    def generate(self, ctx: int, sampling: SamplingParams, priority: Priority = Priority.NORMAL,
                 group: str | None = None) -> AsyncIterator[GenerationChunk]:
        return self.engine.generate(self._table.get(ctx), sampling, priority, group)

    # -- checks and views ----------------------------------------------------------------
    def compile(self, sampling: SamplingParams) -> object:
        return self.engine.compile(sampling)

    def stats(self) -> EngineStats:
        return self.engine.stats()

    def status(self) -> EngineStatus:
        return self._table.status()

    def check_integrity(self) -> None:
        self.engine.check_integrity()
        self._table.check_integrity()

    async def inject_failure(self, marker: str, message: str) -> int:
        if self._injector is None:  # observes the steps from now on (a no-op when unmarked)
            self._injector = FailureInjector(self.engine)
            self._injector.attach()
        return self._injector.mark_matching(marker, message)


def as_client(engine: Any, index: int = 0) -> Any:
    """An `Engine` wrapped as a `LocalEngine`; an engine client (or a test double) as is."""
    return LocalEngine(engine, f"engine {index}") if isinstance(engine, Engine) else engine
