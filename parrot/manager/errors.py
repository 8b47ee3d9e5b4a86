"""Refusals the manager raises; each carries the HTTP status the native API answers with."""
from __future__ import annotations


class ManagerError(Exception):
    status = 400

    def __init__(self, message: str, *, param: str | None = None,
                 retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.retry_after = retry_after  # seconds a client should wait before retrying


class BadRequest(ManagerError):
    """Malformed or inconsistent input: a template error, a bad binding, bad sampling."""

    status = 400


class Unauthorized(ManagerError):
    """No session token was presented."""

    status = 401


class NotFound(ManagerError):
    """Unknown (or another session's) session, variable or call. Never says which."""

    status = 404


class Conflict(ManagerError):
    """The graph refuses the change: a cycle, a second producer, a duplicate id, a second set."""

    status = 409


class WaitTimeout(ManagerError):
    """A `get` waited `timeout` seconds and the value was not produced."""

    status = 408


class ProducerFailed(ManagerError):
    """The call producing the requested variable failed (its message says why)."""

    status = 422


class EngineUnavailable(ProducerFailed):
    """The engine running the producing call was lost (its message names the engine)."""

    status = 503


class Overloaded(ManagerError):
    """A limit is reached: open sessions, a session's calls or variables, the server queue."""

    status = 429
