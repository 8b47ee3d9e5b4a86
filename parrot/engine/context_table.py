"""Client context ids -> an engine's contexts, and the context operations applied by id.

Both engine clients use it: `LocalEngine` applies each operation as it is made (errors are
raised to the caller at once); the Ray actor applies a batch of them in the order the
client made them (`apply_all`), and an operation that fails is remembered against its
context, so the next `fill` or `generate` on that context raises it (`get`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from parrot.engine.status import ContextStatus, EngineStatus

if TYPE_CHECKING:
    from parrot.engine.context import Context
    from parrot.engine.engine import Engine

Op = tuple  # ("new", cid) | ("fork", parent, cid) | ("append", cid, tokens) | ("pin", cid)
#            | ("free", cid)


class UnknownContext(KeyError):
    pass


class ContextTable:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.contexts: dict[int, Context] = {}
        self._errors: dict[int, Exception] = {}  # cid -> why an operation on it failed

    def new(self, cid: int) -> None:
        self.contexts[cid] = self.engine.new_context()

    def fork(self, parent: int, cid: int) -> None:
        self.contexts[cid] = self.engine.fork(self.get(parent))

    def append(self, cid: int, token_ids: list[int]) -> None:
        self.engine.append(self.get(cid), token_ids)

    def pin(self, cid: int) -> None:
        self.engine.pin(self.get(cid))

    def free(self, cid: int) -> None:
        self._errors.pop(cid, None)
        ctx = self.contexts.pop(cid, None)
        if ctx is not None:
            self.engine.free(ctx)

    def get(self, cid: int) -> Context:
        error = self._errors.get(cid)
        if error is not None:
            raise error
        try:
            return self.contexts[cid]
        except KeyError:
            raise UnknownContext(f"no context {cid} on this engine (freed or never made)") from None

    def apply(self, op: Op) -> None:
        kind, *args = op
        {"new": self.new, "fork": self.fork, "append": self.append, "pin": self.pin,
         "free": self.free}[kind](*args)

    def apply_all(self, ops: list[Op]) -> None:
        """Apply `ops` in order; one that fails marks its context (the last id it names)."""
        for op in ops:
            try:
                self.apply(op)
            except Exception as e:  # noqa: BLE001 - raised by the next call on that context
                if op[0] != "free":
                    self._errors[op[-1] if op[0] != "append" else op[1]] = e

    def status(self) -> EngineStatus:
        scheduler = self.engine.scheduler
        computing = {id(r.ctx) for r in scheduler.running}
        contexts = {cid: ContextStatus(c.num_tokens, c.num_computed, len(c.block_table),
                                       id(c) in computing)
                    for cid, c in self.contexts.items() if not c.is_freed}
        return EngineStatus(self.engine.config.block_size, contexts,
                            len(scheduler.running), len(scheduler.waiting))

    def check_integrity(self) -> None:
        for cid, ctx in self.contexts.items():
            assert not ctx.is_freed, f"context {cid} freed but still mapped"
            assert ctx.context_id in self.engine.tree.live, f"context {cid} not live in the engine"
