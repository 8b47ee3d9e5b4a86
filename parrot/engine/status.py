"""The public view of an engine's contexts and queue (the dashboard's, the snapshot's).

Plain data that travels between processes: per context id, its size, the blocks it holds
and whether the engine is computing it in its running batch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


class ContextStatus(NamedTuple):
    num_tokens: int
    num_computed: int  # tokens whose KV is in the cache
    num_blocks: int  # KV blocks it holds
    is_computing: bool  # a request on it is in the engine's running batch


@dataclass(frozen=True)
class EngineStatus:
    block_size: int
    contexts: dict[int, ContextStatus] = field(default_factory=dict)  # by client context id
    num_running: int = 0
    num_waiting: int = 0
