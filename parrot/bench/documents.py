"""Real text for the workloads, available offline: the licence texts in examples/data.

The corpus is Apache-2.0, CC0-1.0 and BSD back to back (about 2,900 words); documents are
cut from it in whole words, reading on cyclically when a large `--scale` needs more. The
same corpus on every machine keeps prompt lengths, and so results, comparable.
"""
from __future__ import annotations

import functools
import random
from pathlib import Path

EXAMPLES_DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
SYSTEM_LICENSES = Path("/usr/share/common-licenses")  # Debian's copies of the same texts
CORPUS = ("Apache-2.0", "CC0-1.0", "BSD")


def load(name: str) -> str:
    """The text of licence `name` from examples/data, else /usr/share/common-licenses."""
    for path in (EXAMPLES_DATA / f"{name}.txt", SYSTEM_LICENSES / name):
        if path.is_file():
            return path.read_text(errors="replace")
    raise FileNotFoundError(f"no text for {name!r} in {EXAMPLES_DATA} or {SYSTEM_LICENSES}")


@functools.cache
def corpus_words() -> tuple[str, ...]:
    """The corpus as words, in a fixed order."""
    return tuple(word for name in CORPUS for word in load(name).split())


def words(start: int, count: int) -> str:
    """`count` words of the corpus from word `start`, wrapping around at its end."""
    corpus = corpus_words()
    return " ".join(corpus[(start + i) % len(corpus)] for i in range(count))


def chunks(num_chunks: int, words_per_chunk: int, start: int = 0) -> list[str]:
    """Consecutive chunks of the corpus: a long document cut for summarization."""
    return [words(start + i * words_per_chunk, words_per_chunk) for i in range(num_chunks)]


def poisson_arrivals(n: int, rate: float, seed: int, start: float = 0.0) -> list[float]:
    """`n` arrival offsets (seconds) of a Poisson process of `rate` per second; the same
    seed gives every mode the same arrivals."""
    rng = random.Random(seed)
    t, times = start, []
    for _ in range(n):
        times.append(round(t, 3))
        t += rng.expovariate(rate)
    return times
