"""OpenAI-style error bodies, and the exception handlers raise to produce them."""
from __future__ import annotations

import math

from aiohttp import web

from parrot.manager.errors import ManagerError

_TYPES = {401: "authentication_error", 404: "not_found_error", 413: "invalid_request_error",
          429: "rate_limit_error"}


class ApiError(Exception):
    """A request the server refuses; becomes `{"error": {...}}` with a 4xx status."""

    def __init__(self, message: str, *, param: str | None = None, status: int = 400,
                 code: str | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.code = code
        self.retry_after = retry_after  # seconds; sent as Retry-After

    @classmethod
    def from_manager(cls, e: ManagerError) -> ApiError:
        return cls(e.message, param=e.param, status=e.status, retry_after=e.retry_after)

    def to_json(self) -> dict:
        return error_body(self.message, status=self.status, param=self.param, code=self.code)

    def to_response(self) -> web.Response:
        headers = None if self.retry_after is None else \
            {"Retry-After": str(max(1, math.ceil(self.retry_after)))}
        return web.json_response(self.to_json(), status=self.status, headers=headers)


def error_body(message: str, *, status: int = 400, param: str | None = None,
               code: str | None = None) -> dict:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
