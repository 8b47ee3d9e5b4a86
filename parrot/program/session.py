"""`P.Session(url)`: one server session; semantic-function calls made inside it bind to it.

    with P.Session("http://127.0.0.1:8000") as s:          # plain scripts
        print(summarize(text).get())

    async with P.Session("http://127.0.0.1:8000") as s:    # asyncio programs
        print(await summarize(text).aget())

Building the graph never blocks: calls and variables are queued and sent in order, batched,
by the background loop; `get`/`set`/leaving the block send whatever is still queued first.
The active session is a contextvar, so concurrent asyncio tasks may use different sessions.

The session opens lazily, with the first operation that needs the server, and that request
carries the queued graph. When that operation is a `get` of a variable that every queued call
feeds, open, graph and `get` travel in ONE request (`queued.py`): a one-call program costs
one round trip. A stream carries whatever is queued, and the opening if the session is not
open yet, so a call submitted and streamed is one round trip too. A session that never
needed the server sends nothing.
"""
from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterable

from parrot.program.client import shared_client
from parrot.protocol.criteria import Criteria
from parrot.program.errors import NoSessionError, ServerError
from parrot.program.loop_thread import background
from parrot.program.queued import Op, batches, has_eager, only_feeds, opening_body
from parrot.program.variable import SemanticVariable

if TYPE_CHECKING:
    from parrot.program.function import SemanticFunction

_current: ContextVar["Session | None"] = ContextVar("parrot_session", default=None)
_BATCH_PATHS = {"variables": "/variables", "calls": "/calls"}  # the kinds of an Op
# A burst of calls waits this long before the background flush sends it: a `get` or
# `stream` that follows its call at once (the usual case) carries the call itself, one
# round trip instead of two.
FLUSH_DELAY_S = 0.001


def current_session() -> "Session":
    session = _current.get()
    if session is None:
        raise NoSessionError("no active Parrot session: call semantic functions inside "
                             "`with P.Session(url):` or `async with P.Session(url):`")
    if session.is_closed:
        raise NoSessionError(f"Parrot session {session._id} is closed")
    return session


class Session:
    def __init__(self, url: str = "http://127.0.0.1:8000", *, api_key: str | None = None,
                 idle_timeout: float | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.idle_timeout = idle_timeout
        self.timeout = timeout
        self.background = background()
        self.is_closed = False
        self._id: str | None = None  # the server's, once opened
        self._token: str | None = None
        self._ops: list[Op] = []
        self._ops_lock = threading.Lock()
        self._is_flush_scheduled = False
        self._ids = itertools.count(1)
        self._flush_lock = asyncio.Lock()  # used on the background loop only
        self._error: ServerError | None = None
        self._bindings: list[Token] = []

    # -- lifetime -------------------------------------------------------------------------
    @property
    def id(self) -> str | None:
        """The server's session id. Asking opens the session if it is not open yet (a
        blocking request; async code that needs it early awaits `aopen()` first)."""
        if self._id is None and not self.is_closed and not self.background.is_current():
            self.open()
        return self._id

    def __enter__(self) -> "Session":  # opens lazily: see the module docstring
        self._bindings.append(_current.set(self))
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        _current.reset(self._bindings.pop())
        try:
            self.close()
        except ServerError:
            if exc_type is None:
                raise

    async def __aenter__(self) -> "Session":
        self._bindings.append(_current.set(self))
        return self

    async def __aexit__(self, exc_type: Any, *exc: Any) -> None:
        _current.reset(self._bindings.pop())
        try:
            await self.aclose()
        except ServerError:
            if exc_type is None:
                raise

    def open(self) -> None:
        """Open the session on the server now (with what is queued), if it is not open."""
        self.background.run(self._flush())

    async def aopen(self) -> None:
        await self.background.arun(self._flush())

    def close(self) -> None:
        self.background.run(self._close())

    async def aclose(self) -> None:
        await self.background.arun(self._close())

    # -- building the graph (any thread; never blocks) -------------------------------------
    def submit_call(self, fn: "SemanticFunction",
                    bindings: dict[str, Any]) -> list[SemanticVariable]:
        outputs = [self._new_variable(name) for name in fn.template.outputs]
        for value in bindings.values():
            self._check_owned(value)
        spec = fn.to_spec(f"c{next(self._ids)}", bindings, [v.id for v in outputs])
        self._enqueue("calls", spec)
        return outputs

    def variable(self, value: str | None = None, name: str | None = None) -> SemanticVariable:
        """A client-owned variable, optionally with its value (else `set` it later)."""
        sv = self._new_variable(name)
        spec = {"id": sv.id, "name": name}
        if value is not None:
            spec["value"] = str(value)
        self._enqueue("variables", spec)
        return sv

    def join(self, items: Iterable[Any], sep: str = "\n",
             name: str | None = None) -> SemanticVariable:
        """A variable whose value is `sep.join(items)`, computed by the server when ready."""
        parts = list(items)
        for item in parts:
            self._check_owned(item)
        sv = self._new_variable(name)
        spec = {"id": f"c{next(self._ids)}", "kind": "join", "sep": str(sep),
                "parts": [_binding(p) for p in parts], "output": {"var": sv.id}}
        self._enqueue("calls", spec)
        return sv

    def project(self, source: SemanticVariable, key: str | int) -> SemanticVariable:
        """A variable holding field `key` of `source`'s JSON value, taken by the server."""
        self._check_owned(source)
        label = f"{source.name or source.id}[{key!r}]"
        sv = self._new_variable(label)
        spec = {"id": f"c{next(self._ids)}", "kind": "project", "source": {"var": source.id},
                "path": [key], "output": {"var": sv.id}}
        self._enqueue("calls", spec)
        return sv

    def flush(self) -> None:
        """Send everything queued now (normally `get`/`set`/closing do it)."""
        self.background.run(self._flush())

    async def aflush(self) -> None:
        await self.background.arun(self._flush())

    def graph(self) -> dict:
        """The server's view of this session's calls and variables (debugging)."""
        return self.background.run(self._graph())

    async def agraph(self) -> dict:
        return await self.background.arun(self._graph())

    def _new_variable(self, name: str | None) -> SemanticVariable:
        return SemanticVariable(self, f"v{next(self._ids)}", name)

    def _check_owned(self, value: Any) -> None:
        if isinstance(value, SemanticVariable) and value.session is not self:
            raise ValueError(f"variable {value.id} belongs to another Parrot session")

    def _enqueue(self, kind: str, spec: dict) -> None:
        if self.is_closed:
            raise NoSessionError(f"Parrot session {self._id} is closed")
        with self._ops_lock:
            self._ops.append((kind, spec))
            schedule, self._is_flush_scheduled = not self._is_flush_scheduled, True
        if schedule:  # one background flush per burst of calls, a moment later
            self.background.call_later(FLUSH_DELAY_S, self._flush_soon)

    # -- background-loop coroutines ---------------------------------------------------------
    async def fetch(self, sv: SemanticVariable, criteria: Criteria | str,
                    timeout: float | None) -> str:
        if sv.value is not None:
            return sv.value
        wait = self.timeout if timeout is None else timeout
        get = {"criteria": Criteria.parse(criteria).value, "timeout": wait}
        body = await self._open_with_get(sv, get)
        if body is None:  # open already (or opening otherwise): the usual GET
            await self._flush()
            params = {**get, "timeout": str(wait)}
            body = await self._request("GET", f"/variables/{sv.id}", params=params,
                                       timeout=wait + 30)
        sv._resolve(body["value"])
        return body["value"]

    async def assign(self, sv: SemanticVariable, value: str) -> None:
        await self._flush()
        await self._request("PUT", f"/variables/{sv.id}", json_body={"value": str(value)})
        sv._resolve(str(value))

    async def deltas(self, sv: SemanticVariable, criteria: Criteria | str) -> AsyncIterator[str]:
        if sv.value is not None:
            yield sv.value
            return
        params = {"criteria": Criteria.parse(criteria).value}
        async with contextlib.AsyncExitStack() as stack:
            async for event, data in await self._open_stream(stack, sv, params):
                if event == "delta":
                    yield data["text"]
                elif event == "done":
                    sv._resolve(data["value"])
                    return
                elif event == "error":
                    raise ServerError.from_body(int(data.get("status", 422)), data)

    async def _open_stream(self, stack: contextlib.AsyncExitStack, sv: SemanticVariable,
                           params: dict) -> AsyncIterator[tuple[str, Any]]:
        """`sv`'s event stream, carrying the queued ops (and the session's opening, if it is
        not open yet): a call submitted and streamed costs one round trip. The flush lock is
        held until the server has them (the headers; an opening's first event), which keeps
        every later op behind them."""
        async with self._flush_lock:
            with self._ops_lock:
                ops, self._ops = self._ops, []
            if self._error is not None:
                raise self._error
            if self._id is None:
                return await self._open_streaming(stack, ops, {"var": sv.id, **params})
            url = f"{self.url}/v1/sessions/{self._id}/variables/{sv.id}/stream"
            if ops:
                try:
                    return await stack.enter_async_context(shared_client().stream(
                        "POST", url, params=params, headers=self._headers(),
                        json_body=opening_body(ops)))
                except ServerError as e:  # as a refused flush: the session keeps the refusal
                    self._error = e
                    raise
        return await stack.enter_async_context(
            shared_client().stream("GET", url, params=params, headers=self._headers()))

    async def _open_streaming(self, stack: contextlib.AsyncExitStack, ops: list[Op],
                              stream: dict) -> AsyncIterator[tuple[str, Any]]:
        """POST /v1/sessions with the queued `ops` and a `stream`: the session, its graph and
        the stream in one request. Its first event names the session (read here, under the
        caller's flush lock, so later ops find the session open)."""
        try:
            events = await stack.enter_async_context(shared_client().stream(
                "POST", f"{self.url}/v1/sessions", json_body=self._opening(ops, stream=stream),
                headers=self._headers()))
        except ServerError as e:
            self._adopt(e.body)  # an unknown variable still opened the session
            if self._id is None:  # refused before it opened: nothing of it remains
                self._error = e
            raise
        event, data = await anext(events)
        if event != "session":
            raise ServerError(502, f"expected the session event first, got {event!r}")
        self._adopt(data)
        return events

    async def _flush(self) -> None:
        """Send every queued call and variable, in order (opening the session with them if it
        is not open yet); raise the first refusal."""
        async with self._flush_lock:
            with self._ops_lock:
                ops, self._ops = self._ops, []
            if self._error is None:
                try:
                    if self._id is None:
                        await self._open(ops)
                    else:
                        await self._send(ops)
                except ServerError as e:
                    self._error = e
            if self._error is not None:
                raise self._error

    async def _send(self, ops: list[Op]) -> None:
        for kind, batch in batches(ops):
            await self._request("POST", _BATCH_PATHS[kind], json_body={kind: batch})

    def _flush_soon(self) -> None:
        with self._ops_lock:
            self._is_flush_scheduled = False
            if self._id is None and not self._flush_lock.locked() and not has_eager(self._ops):
                return  # not open: the first operation that needs the server opens it
        task = asyncio.ensure_future(self._flush())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # kept in _error

    async def _open(self, ops: list[Op], get: dict | None = None) -> dict:
        """POST /v1/sessions with the queued `ops` (and a `get`): the session's first request."""
        timeout = None if get is None else get["timeout"] + 30
        try:
            reply = await shared_client().request("POST", f"{self.url}/v1/sessions",
                                                  json_body=self._opening(ops, get=get),
                                                  headers=self._headers(), timeout=timeout)
        except ServerError as e:
            self._adopt(e.body)  # a failed `get` still opened the session
            raise
        self._adopt(reply)
        return reply

    def _opening(self, ops: list[Op], **extra: dict | None) -> dict[str, Any]:
        """The body of `POST /v1/sessions`: the queued ops, the idle timeout, a get or stream."""
        body: dict[str, Any] = opening_body(ops)
        if self.idle_timeout is not None:
            body["idle_timeout"] = self.idle_timeout
        body.update({k: v for k, v in extra.items() if v is not None})
        return body

    async def _open_with_get(self, sv: SemanticVariable, get: dict) -> dict | None:
        """Open, the queued graph and `get` of `sv` in one request, if this is the session's
        first server operation and every queued call feeds `sv`; else None (nothing sent)."""
        if self._id is not None or self._error is not None or self._flush_lock.locked():
            return None
        async with self._flush_lock:
            with self._ops_lock:
                if self._id is not None or not only_feeds(self._ops, sv.id):
                    return None
                ops, self._ops = self._ops, []
            try:
                return await self._open(ops, {"var": sv.id, **get})
            except ServerError as e:
                if self._id is None:  # refused before it opened: nothing of it remains
                    self._error = e
                raise

    def _adopt(self, body: Any) -> None:
        if isinstance(body, dict) and isinstance(body.get("session_id"), str):
            self._id, self._token = body["session_id"], body.get("token")

    async def _graph(self) -> dict:
        if self._id is None:
            await self._flush()
        return await self._request("GET", "/graph")

    async def _close(self) -> None:
        if self.is_closed:
            return
        try:
            if self._id is not None or self._ops or self._error is not None:
                await self._flush()  # queued work is still sent: a refusal shows here
        finally:
            self.is_closed = True
            if self._id is not None:
                await self._delete()

    async def _delete(self) -> None:
        try:
            await self._request("DELETE", "")
        except ServerError as e:
            if e.status != 404:  # 404: the server already closed it (idle timeout)
                raise

    async def _request(self, method: str, path: str, **kwargs: Any) -> dict:
        assert self._id is not None, "the session is opened before any request under it"
        url = f"{self.url}/v1/sessions/{self._id}{path}"
        return await shared_client().request(method, url, headers=self._headers(), **kwargs)

    def _headers(self) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        if self._token:
            headers["X-Parrot-Session-Token"] = self._token
        return headers


def _binding(value: Any) -> Any:
    return {"var": value.id} if isinstance(value, SemanticVariable) else str(value)
