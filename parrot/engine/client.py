"""The engine contract: what the manager and the server may ask of an engine, and nothing else.

An `EngineClient` is an engine seen through a handle that works the same whether the engine
runs in this process (`LocalEngine`) or in another process or machine (`RayEngine`).
Contexts are plain ids the client hands out; only the client maps them to the engine's
contexts, so nothing a caller holds points into the engine.

Invariants every client keeps:
- context operations (`new_context`, `fork`, `append`, `pin`, `free`, `fill`, `generate`) take
  effect in the order the caller made them, whatever the transport;
- `new_context`, `fork`, `append`, `pin` and `free` never wait; an error they cannot see yet (a
  remote engine) is raised by the next `fill` or `generate` on that context;
- `stats()` and `status()` never wait: a remote client answers from its last poll;
- once an engine is lost, every pending and later operation raises `EngineLost` naming it,
  `is_alive` is False and `free` is a no-op (its KV went with it).
"""
from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from parrot.engine.config import EngineConfig
from parrot.engine.sampling_params import GenerationChunk, Priority, SamplingParams
from parrot.engine.stats import EngineStats
from parrot.engine.status import EngineStatus

ContextId = int


class EngineLost(RuntimeError):
    """The engine's process or machine is gone: its contexts and requests with it."""

    MARK = "engine lost"  # every message starts with it (the manager's 503 looks for it)

    def __init__(self, engine_name: str, cause: str) -> None:
        super().__init__(f"{self.MARK}: {engine_name} ({cause})")
        self.engine_name = engine_name


@runtime_checkable
class EngineClient(Protocol):
    name: str  # for errors, logs, /health: "engine 0", "engine 1 (ray node 3f2a…)"
    tokenizer: Any  # a Hugging Face tokenizer, in this process
    model_name: str
    max_model_len: int
    vocab_size: int  # the model's: token ids in [0, vocab_size) (may differ from len(tokenizer))
    config: EngineConfig

    @property
    def is_alive(self) -> bool: ...

    @property
    def error(self) -> str | None: ...  # why it is not alive

    # -- contexts (ordered; see the module docstring) ------------------------------------
    def new_context(self) -> ContextId: ...

    def fork(self, parent: ContextId) -> ContextId: ...

    def append(self, ctx: ContextId, token_ids: list[int]) -> None: ...

    def pin(self, ctx: ContextId) -> None:
        """Keep the context's KV resident while it lives (not released to make room)."""
        ...

    def free(self, ctx: ContextId) -> None: ...

    async def fill(self, ctx: ContextId, token_ids: list[int],
                   priority: Priority = Priority.NORMAL) -> int: ...

    def generate(self, ctx: ContextId, sampling: SamplingParams,
                 priority: Priority = Priority.NORMAL,
                 group: str | None = None) -> AsyncIterator[GenerationChunk]:
        """Stream generated chunks; closing the iterator early cancels the request. Requests
        of one `group` (a task group) are admitted together."""
        ...

    # -- checks and views ----------------------------------------------------------------
    def compile(self, sampling: SamplingParams) -> object:
        """Check `sampling`'s constraint here (EngineInputError naming what is wrong)."""
        ...

    def stats(self) -> EngineStats: ...

    def status(self) -> EngineStatus: ...

    def check_integrity(self) -> None: ...

    async def inject_failure(self, marker: str, message: str) -> int:
        """Test hook: fail the requests on contexts whose text contains `marker`."""
        ...
