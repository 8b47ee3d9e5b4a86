"""Settings of the HTTP layer (the engine has its own EngineConfig)."""
from __future__ import annotations

from dataclasses import dataclass, field

from parrot.manager.limits import Limits


@dataclass(frozen=True)
class ServerConfig:
    served_model_name: str | None = None  # default: the engine's model name
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <key>`
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get 413
    max_n: int = 64  # most choices one request may ask for
    shutdown_timeout: float = 10.0  # on shutdown, in-flight requests get this long, then cancel
    limits: Limits = field(default_factory=Limits)  # sessions, per-session caps, queue (429s)
    enable_test_hooks: bool = False  # fault injection routes for tests; never in production
