"""Map-reduce summarization: summarize every chunk of a document, then merge the summaries.

    parrot serve &                      # embedded SmolLM2, 127.0.0.1:8000
    python examples/map_reduce.py --url http://127.0.0.1:8000

The whole program goes to the server at once: the map calls form a task group feeding the
reduce, they share their instruction prefix (prefilled once, then forked), and the reduce
starts the moment the last map finishes - the client only waits for the final value.
"""
from __future__ import annotations

import time

from common import load_chunks, parse_args, print_timeline

import parrot as P


def make_functions(max_tokens: int):
    @P.semantic_function(max_tokens=max_tokens)
    def summarize(chunk, summary):
        """{{#system}}You are an expert at reading software licenses. Summarize the given part
        of a license in one or two plain sentences.{{/system}}
        {{#user}}{{input:chunk}}{{/user}}
        {{#assistant}}{{output:summary}}{{/assistant}}"""

    @P.semantic_function(max_tokens=max_tokens * 2)
    def combine(summaries, final):
        """{{#system}}You are an expert at reading software licenses.{{/system}}
        {{#user}}Here are summaries of consecutive parts of one license:
        {{input:summaries}}
        Write one short paragraph that summarizes the whole license.{{/user}}
        {{#assistant}}{{output:final}}{{/assistant}}"""

    return summarize, combine


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    summarize, combine = make_functions(args.max_tokens)
    chunks = load_chunks("Apache-2.0.txt", args.chunks, args.words)
    with P.Session(args.url) as session:
        start = time.perf_counter()
        parts = [summarize(chunk) for chunk in chunks]  # futures, returned at once
        final = combine(P.numbered(parts))  # a join on the server: no round trip
        print(final.get(P.LATENCY).strip())  # the only value that crosses the network
        elapsed = time.perf_counter() - start
        for i, part in enumerate(parts, 1):
            print(f"  part {i}: {part.get().strip()}")
        print_timeline(session.graph())
    print(f"\n{len(chunks)} maps + 1 reduce in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
