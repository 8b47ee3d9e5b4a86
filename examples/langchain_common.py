"""Shared bits of the LangChain/LangGraph examples: run a workload plainly and compiled.

Plain: the chain (or graph) as LangChain runs it, one OpenAI-API request per model call,
the client waiting for each answer before sending the calls that depend on it. Compiled:
the same object through `langchain_parrot.compile_chain` / `compile_graph`, one Semantic-
Variable program per run. Rounds alternate plain and compiled, so both see the server's
prefix cache equally warm after the first round.
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable

from common import parse_args


def example_args(description: str, **defaults: Any) -> argparse.Namespace:
    import sys

    rounds = 2
    if "--rounds" in sys.argv:  # one extra option on top of common.parse_args
        i = sys.argv.index("--rounds")
        rounds = int(sys.argv[i + 1])
        del sys.argv[i:i + 2]
    args = parse_args(description, **defaults)
    args.rounds = rounds
    return args


def compare(plain: Callable[[], Any], compiled: Callable[[], Any], rounds: int) -> Any:
    """Time both ways `rounds` times (alternating); print times, ratio, and whether the values
    are the same. Returns the compiled value of the last round."""
    times: dict[str, list[float]] = {"plain": [], "compiled": []}
    values: dict[str, Any] = {}
    for round_ in range(1, rounds + 1):
        for name, run in (("plain", plain), ("compiled", compiled)):
            start = time.perf_counter()
            values[name] = run()
            times[name].append(time.perf_counter() - start)
            print(f"round {round_}: {name:<8} {times[name][-1]:7.2f} s", flush=True)
    best = {name: min(ts) for name, ts in times.items()}
    print(f"\nplain (LangChain -> OpenAI API):  best {best['plain']:.2f} s, "
          f"median {statistics.median(times['plain']):.2f} s")
    print(f"compiled (Semantic Variables):    best {best['compiled']:.2f} s, "
          f"median {statistics.median(times['compiled']):.2f} s")
    print(f"speedup (best): {best['plain'] / best['compiled']:.2f}x; "
          f"same values: {values['plain'] == values['compiled']}")
    return values["compiled"]
