"""`SemanticVariable`: the client's future for one text slot of a session's graph."""
from __future__ import annotations

from typing import TYPE_CHECKING, AsyncIterator, Iterator

from parrot.protocol.criteria import Criteria

if TYPE_CHECKING:
    from parrot.program.session import Session


class SemanticVariable:
    """A value that a call will produce (or the program will `set`), addressed by `id`.

    Passing it to a semantic function wires a graph edge; nothing waits. `get`/`aget` ask the
    server for the value with a performance objective (`P.LATENCY` or `P.THROUGHPUT`); the
    server runs exactly the calls needed to produce it.

    `sv["field"]` (or `sv[0]` for an array item, chained as `sv["a"]["b"]`) is a new variable:
    that field of this variable's JSON value, taken by the server once the value exists, so
    it can feed later calls with no client round trip (a string field is its text, anything
    else its JSON). The projection fails, and so do the calls that read it, if the value is
    not JSON or has no such field.
    """

    def __init__(self, session: "Session", var_id: str, name: str | None = None) -> None:
        self.session = session
        self.id = var_id
        self.name = name
        self._value: str | None = None
        self._fields: dict[str | int, SemanticVariable] = {}

    def __repr__(self) -> str:
        state = "ready" if self._value is not None else "pending"
        label = f" {self.name}" if self.name else ""
        return f"<SemanticVariable {self.id}{label} {state}>"

    def __getitem__(self, key: str | int) -> "SemanticVariable":
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            raise TypeError(f"a Semantic Variable field is a str key or an int index, "
                            f"got {type(key).__name__}")
        if key not in self._fields:
            self._fields[key] = self.session.project(self, key)
        return self._fields[key]

    @property
    def is_ready(self) -> bool:
        """True once this client has seen the value (it never changes afterwards)."""
        return self._value is not None

    @property
    def value(self) -> str | None:
        """The value if this client has already fetched it, else None (no request)."""
        return self._value

    def get(self, criteria: Criteria | str = Criteria.LATENCY,
            timeout: float | None = None) -> str:
        """Block until the value is produced; runs the calls it depends on."""
        return self.session.background.run(self.session.fetch(self, criteria, timeout))

    async def aget(self, criteria: Criteria | str = Criteria.LATENCY,
                   timeout: float | None = None) -> str:
        return await self.session.background.arun(self.session.fetch(self, criteria, timeout))

    def set(self, value: str) -> None:
        """Give a client-owned variable its value (once)."""
        self.session.background.run(self.session.assign(self, value))

    async def aset(self, value: str) -> None:
        await self.session.background.arun(self.session.assign(self, value))

    def stream(self, criteria: Criteria | str = Criteria.LATENCY) -> Iterator[str]:
        """Yield the value's text as it is generated (deltas)."""
        return self.session.background.iter(lambda: self.session.deltas(self, criteria))

    def astream(self, criteria: Criteria | str = Criteria.LATENCY) -> AsyncIterator[str]:
        return self.session.background.aiter(lambda: self.session.deltas(self, criteria))

    def _resolve(self, value: str) -> None:
        self._value = value
