"""Performance objectives an application attaches to a `get`."""
from __future__ import annotations

from enum import Enum


class Criteria(str, Enum):
    """What the application wants from a variable: its value soon, or work done in bulk."""

    LATENCY = "latency"  # the value is on the critical path: finish it as early as possible
    THROUGHPUT = "throughput"  # part of bulk work: maximise tokens per second

    @classmethod
    def parse(cls, value: "Criteria | str | None") -> "Criteria":
        """A Criteria from an enum, its string value (any case) or None (= LATENCY)."""
        if value is None:
            return cls.LATENCY
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ValueError(f"criteria must be 'latency' or 'throughput', got {value!r}") from None


_RANK = {None: 0, Criteria.THROUGHPUT: 1, Criteria.LATENCY: 2}


def stronger(a: Criteria | None, b: Criteria | None) -> Criteria | None:
    """The more demanding of two objectives (LATENCY > THROUGHPUT > none)."""
    return a if _RANK[a] >= _RANK[b] else b


LATENCY = Criteria.LATENCY
THROUGHPUT = Criteria.THROUGHPUT
