"""The manager: sessions of Semantic Variable graphs served on one or more engines.

No HTTP here: the native API calls these methods and maps `ManagerError`s to 4xx answers.
Every change that can make a call runnable (calls added, a variable set, a get, an output
produced) schedules one *dispatch pass* on the event loop; the pass runs the ready calls of
every session (see `scheduler.py`), so dependent calls start the moment their inputs exist.
"""
from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from functools import partial
from typing import Any, AsyncIterator

from parrot.engine.client import EngineLost
from parrot.manager import limits
from parrot.manager.app_prefixes import AppPrefixes
from parrot.manager.call import Call, CallKind
from parrot.manager.call_spec import SpecContext, parse_calls, parse_variables
from parrot.manager.errors import (
    BadRequest,
    EngineUnavailable,
    NotFound,
    ProducerFailed,
    Unauthorized,
    WaitTimeout,
)
from parrot.manager.executor import Executor, tokenize
from parrot.manager.limits import Limits
from parrot.manager.objective import on_calls_added, request
from parrot.manager.prefix_pool import PrefixPool
from parrot.manager.readiness import collect_ready
from parrot.manager.scheduler import Scheduler
from parrot.manager.session import Session
from parrot.manager.variable import Variable
from parrot.protocol.chat_render import chat_renderer
from parrot.protocol.criteria import Criteria

log = logging.getLogger(__name__)


class Manager:
    def __init__(self, engines: list[Any], *, session_idle_timeout: float = 600.0,
                 max_idle_timeout: float = 86400.0, limits: Limits | None = None,
                 min_shared_tokens: int = 16, app_prefix_min_tokens: int = 64,
                 sweep_interval: float = 0.5, placement: str = "prefix-affine") -> None:
        if not engines:
            raise ValueError("Manager needs at least one engine")
        self.engines = list(engines)
        self.session_idle_timeout = session_idle_timeout
        self.max_idle_timeout = max_idle_timeout
        self.limits = limits or Limits()
        self.sweep_interval = sweep_interval
        self.sessions: dict[str, Session] = {}
        # one model on every engine: its grammar compiler and chat template serve them all
        self.spec_context = SpecContext(_new_id, self.engines[0].compile,
                                        chat_renderer(self.engines[0].tokenizer))
        self.executor = Executor(self.engines, self._kick)
        # applications' constant prompts, shared by their sessions
        self.apps = AppPrefixes(PrefixPool(self.engines, scope="app"), app_prefix_min_tokens)
        self.scheduler = Scheduler(self.executor.loads, partial(tokenize, self.engines[0]),
                                   self.apps, min_shared_tokens,
                                   is_alive=lambda index: self.engines[index].is_alive,
                                   placement=placement)
        self._pass_scheduled = False
        self._sweeper: asyncio.Task | None = None

    # -- lifetime ------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the idle-session sweeper (also started lazily by the first session)."""
        self._ensure_sweeper()

    async def close(self) -> None:
        """Close every session (cancelling its calls, freeing its KV) and stop the sweeper."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        for session in list(self.sessions.values()):
            await self.close_session(session)
        await self.apps.close()

    # -- sessions ------------------------------------------------------------------------
    def open_session(self, idle_timeout: float | None = None) -> Session:
        self._ensure_sweeper()
        limits.check_sessions(self.limits, len(self.sessions))
        timeout = self.session_idle_timeout if idle_timeout is None else idle_timeout
        if (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                or not 0 < timeout <= self.max_idle_timeout or math.isnan(timeout)):
            raise BadRequest(f"idle_timeout must be a number in (0, {self.max_idle_timeout}]",
                             param="idle_timeout")
        session = Session.new(self.engines, float(timeout))
        self.sessions[session.id] = session
        return session

    def session(self, session_id: str, token: str | None) -> Session:
        """The open session `session_id` if `token` is its token; 404 otherwise (either way)."""
        if not token:
            raise Unauthorized("missing session token: send the X-Parrot-Session-Token header")
        session = self.sessions.get(session_id)
        # An unknown id still pays for a token comparison: both 404s cost the same.
        is_valid = (session or _NO_SESSION).has_token(token)
        if session is None or session.is_closed or not is_valid:
            raise NotFound(f"session '{session_id}' not found")
        return session

    async def close_session(self, session: Session, reason: str = "session closed") -> None:
        self.sessions.pop(session.id, None)
        self.apps.release_session(session.id)  # its calls fall back to their own contexts
        await session.close(reason)
        self._kick()

    # -- the graph -----------------------------------------------------------------------
    def add_variables(self, session: Session, body: dict) -> list[dict]:
        session.touch("add_variables")
        specs = parse_variables(body, _new_id)
        limits.check_variables(self.limits, session, len(specs))
        added = []
        try:
            for var_id, name, value in specs:
                added.append(session.graph.add_variable(var_id, name, value))
        except Exception:
            for var in added:
                del session.graph.variables[var.id]
            raise
        self._kick()
        return [{"id": v.id, "name": v.name, "ready": v.is_ready} for v in added]

    def submit_calls(self, session: Session, body: dict) -> list[dict]:
        session.touch("submit_calls")
        calls = [Call(spec) for spec in parse_calls(body, self.spec_context)]
        new_vars = {v for c in calls for v in c.output_vars} - session.graph.variables.keys()
        limits.check_calls(self.limits, session, len(calls), len(new_vars))
        self.check_queue(len(calls), param="calls")
        session.graph.add_calls(calls)
        if on_calls_added(session.graph, calls):
            self._kick()
        return [{"id": c.id, "outputs": dict(c.outputs)} for c in calls]

    def set_variable(self, session: Session, var_id: str, value: Any) -> None:
        session.touch(f"set {var_id}")
        if not isinstance(value, str):
            raise BadRequest("'value' must be a string", param="value")
        session.graph.set_value(var_id, value)
        self._kick()

    async def get_variable(self, session: Session, var_id: str, criteria: Criteria | None,
                           timeout: float | None = None) -> str:
        """Wait for `var_id`'s value, running whatever produces it with `criteria`."""
        session.touch(f"get {var_id}")
        var = session.graph.variable(var_id)
        if request(session.graph, var_id, criteria):
            self._kick()
        session.num_waiting += 1
        try:
            await asyncio.wait_for(var.wait(), timeout)
        except asyncio.TimeoutError:
            raise WaitTimeout(f"variable '{var_id}' not produced within {timeout} s") from None
        finally:
            session.num_waiting -= 1
            session.last_active = time.monotonic()
        return self._value(session, var_id)

    def stream_variable(self, session: Session, var_id: str,
                        criteria: Criteria | None) -> AsyncIterator[tuple[str, str]]:
        """("delta", text)... then ("done", value) or ("error", message). An unknown
        variable raises NotFound here, before any event."""
        session.touch(f"stream {var_id}")
        return self._events(session, session.graph.variable(var_id), criteria)

    async def _events(self, session: Session, var: Variable,
                      criteria: Criteria | None) -> AsyncIterator[tuple[str, str]]:
        if request(session.graph, var.id, criteria):
            self._kick()
        queue = var.subscribe()
        session.num_waiting += 1
        try:
            while True:
                event = await queue.get()
                yield event
                if event[0] != "delta":
                    return
        finally:
            var.unsubscribe(queue)
            session.num_waiting -= 1
            session.last_active = time.monotonic()

    def check_queue(self, num_new: int, param: str | None = None) -> None:
        """429 (with retry_after) if `num_new` more requests would overfill the server."""
        limits.check_queue(self.limits, self.engines, self.sessions.values(), num_new, param)

    def graph_json(self, session: Session) -> dict:
        session.touch("graph")
        return session.to_json()

    def _value(self, session: Session, var_id: str) -> str:
        if session.is_closed:
            raise NotFound(f"session '{session.id}' not found")
        var = session.graph.variables[var_id]
        if var.error is not None:
            lost = EngineLost.MARK in var.error  # its call's engine went away: a 5xx
            raise (EngineUnavailable if lost else ProducerFailed)(
                f"variable '{var_id}' was not produced: {var.error}", param=var_id)
        return var.value

    # -- checks -------------------------------------------------------------------------
    def check_integrity(self) -> None:
        for session in self.sessions.values():
            session.check_integrity()
        self.apps.check_integrity(self.sessions)
        assert all(n >= 0 for n in self.executor.loads), "negative engine load"
        for engine in self.engines:
            engine.check_integrity()

    # -- dispatch ------------------------------------------------------------------------
    def _kick(self) -> None:
        if not self._pass_scheduled:
            self._pass_scheduled = True
            asyncio.get_running_loop().call_soon(self._dispatch)

    def _dispatch(self) -> None:
        self._pass_scheduled = False
        for session in list(self.sessions.values()):
            if session.is_closed:
                continue
            try:
                self._dispatch_session(session)
            except Exception:
                log.exception("dispatch failed for session %s", session.id)

    def _dispatch_session(self, session: Session) -> None:
        graph = session.graph
        ready, failed = collect_ready(graph)
        for call in failed:
            session.pool.release_holder(call.id)
        if not ready:
            return
        ready_ids = {c.id for c in ready}
        waiting = [c for c in graph.pending_calls()
                   if c.kind == CallKind.LLM and c.id not in ready_ids]
        for plan in self.scheduler.plan(session.id, graph, session.pool, ready, waiting):
            self.executor.start(session, plan.call, plan.engine_index, plan.parent)

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.ensure_future(self._sweep())

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            now = time.monotonic()
            for session in [s for s in self.sessions.values() if s.is_expired(now)]:
                log.info("session %s idle for %.0f s: closing", session.id, session.idle_timeout)
                await self.close_session(session, "session expired (idle timeout)")


_NO_SESSION = Session.new([], 1.0)  # compared against when a session id is unknown


def _new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(6)}"

