"""The Parrot manager: sessions, Semantic Variable graphs, objective deduction, prefix sharing
and app-centric scheduling over one or more engines. No HTTP inside (see parrot.server)."""
from parrot.manager.errors import (
    BadRequest,
    Conflict,
    ManagerError,
    NotFound,
    Overloaded,
    ProducerFailed,
    Unauthorized,
    WaitTimeout,
)
from parrot.manager.manager import Manager
from parrot.manager.session import Session

__all__ = [
    "BadRequest", "Conflict", "ManagerError", "NotFound", "Overloaded", "ProducerFailed",
    "Unauthorized", "WaitTimeout", "Manager", "Session",
]
