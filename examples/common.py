"""Shared bits of the examples: command line, document chunks, a timeline of the run."""
from __future__ import annotations

import argparse
from pathlib import Path

DATA = Path(__file__).parent / "data"


def parse_args(description: str, chunks: int = 4, words: int = 120,
               max_tokens: int = 48) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="a `parrot serve` URL")
    parser.add_argument("--chunks", type=int, default=chunks, help="document chunks to use")
    parser.add_argument("--words", type=int, default=words, help="words per chunk")
    parser.add_argument("--max-tokens", type=int, default=max_tokens,
                        help="tokens generated per output (small = fast on CPU)")
    return parser.parse_args()


def load_chunks(name: str, num_chunks: int, words_per_chunk: int) -> list[str]:
    """The first `num_chunks` chunks of `words_per_chunk` words of examples/data/`name`."""
    words = (DATA / name).read_text().split()
    chunks = [" ".join(words[i:i + words_per_chunk])
              for i in range(0, len(words), words_per_chunk)]
    return chunks[:num_chunks]


def print_timeline(graph: dict) -> None:
    """When each call ran, by the server's clock, and what it shared."""
    calls = [c for c in graph["calls"] if "started" in c["times"]]
    if not calls:
        return
    t0 = min(c["times"]["submitted"] for c in calls)
    print(f"\n{'call':<14}{'kind':<8}{'state':<10}{'start s':>8}{'end s':>8}"
          f"{'prompt':>8}{'shared':>8}  objective")
    for c in sorted(calls, key=lambda c: c["times"]["started"]):
        times = c["times"]
        end = times.get("finished", times["started"]) - t0
        print(f"{(c['name'] or c['id'])[:13]:<14}{c['kind']:<8}{c['state']:<10}"
              f"{times['started'] - t0:>8.2f}{end:>8.2f}{c['tokens']['prompt']:>8}"
              f"{c['tokens']['shared']:>8}  {c['criteria'] or '-'}"
              f"{' (group ' + c['group'] + ')' if c['group'] else ''}")
