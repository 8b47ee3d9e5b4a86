"""The one reader of a session's token from a request.

Session routes (native API, dashboard views) need the session's token in
`X-Parrot-Session-Token`, or, when the server has no API key (so `Authorization` is free),
`Authorization: Bearer <token>`. An unknown session and a wrong token both answer 404 (the
manager decides), so a session's existence never leaks.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from parrot.server.keys import CONFIG, MANAGER

if TYPE_CHECKING:
    from parrot.manager import Session

TOKEN_HEADER = "X-Parrot-Session-Token"


def session_token(request: web.Request) -> str | None:
    token = request.headers.get(TOKEN_HEADER)
    if token is None and not request.app[CONFIG].api_key:
        scheme, _, given = request.headers.get("Authorization", "").partition(" ")
        token = given.strip() if scheme.lower() == "bearer" else None
    return token


def request_session(request: web.Request, sid: str | None = None) -> Session:
    """The session `sid` (default: the route's `{sid}`) if the request holds its token."""
    sid = request.match_info["sid"] if sid is None else sid
    return request.app[MANAGER].session(sid, session_token(request))
