"""Errors the client raises. Template and binding errors live with their modules."""
from __future__ import annotations


class ParrotError(Exception):
    """Base of the client's runtime errors."""


class NoSessionError(ParrotError):
    """A semantic function was called outside `with P.Session(url):`."""


class ServerError(ParrotError):
    """The server refused a request (4xx) or failed (5xx); `status`/`message` say why."""

    def __init__(self, status: int, message: str, kind: str | None = None,
                 param: str | None = None, body: dict | None = None) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.body = body or {}  # the whole JSON answer (an opening `get` adds the session)

    @classmethod
    def from_body(cls, status: int, body: object) -> "ServerError":
        error = body.get("error") if isinstance(body, dict) else None
        if isinstance(error, dict):
            return cls(status, str(error.get("message")), error.get("type"), error.get("param"),
                       body)
        return cls(status, str(body)[:500])
