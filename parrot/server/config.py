"""Settings of the HTTP layer (the engine has its own EngineConfig)."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerConfig:
    served_model_name: str | None = None  # default: the engine's model name
    api_key: str | None = None  # when set, requests need `Authorization: Bearer <key>`
    max_body_bytes: int = 8 * 1024 * 1024  # larger bodies get 413
    max_n: int = 64  # most choices one request may ask for
    shutdown_timeout: float = 10.0  # on shutdown, in-flight requests get this long, then cancel
