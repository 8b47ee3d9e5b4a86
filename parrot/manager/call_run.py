"""What one running model call holds on its engine: the engine slot, the context, the prefix
hold. The executor makes one per started call and releases it once, when the call's task
ends (whatever ended it); the dashboard reads it to find the call's context."""
from __future__ import annotations

from dataclasses import dataclass

from parrot.manager.call import Call


@dataclass(eq=False)
class CallRun:
    call: Call
    engine_index: int  # the engine whose load counts it (moved if that engine is lost)
    ctx: int | None = None  # the call's context on that engine, once opened
    has_output: bool = False  # a token came back: it can no longer move to another engine
    cached_parent: int = 0  # tokens of a shared prefix its prompt reads from the prefix cache
    is_released: bool = False
