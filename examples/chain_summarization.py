"""Chain summarization: read a document chunk by chunk, refining one running summary.

    python examples/chain_summarization.py --url http://127.0.0.1:8000

Each refine call depends on the previous one. The client submits the whole chain at once and
streams the last summary; the server runs each step the moment the previous one is produced,
with no client round trip in between (see the timeline it prints).
"""
from __future__ import annotations

import time

from common import load_chunks, parse_args, print_timeline

import parrot as P


def make_functions(max_tokens: int):
    @P.semantic_function(max_tokens=max_tokens)
    def first_summary(chunk, summary):
        """{{#system}}You summarize documents step by step, keeping the summary short.{{/system}}
        {{#user}}Summarize this text in two sentences:
        {{input:chunk}}{{/user}}
        {{#assistant}}{{output:summary}}{{/assistant}}"""

    @P.semantic_function(max_tokens=max_tokens)
    def refine(summary_so_far, chunk, summary):
        """{{#system}}You summarize documents step by step, keeping the summary short.{{/system}}
        {{#user}}Summary so far: {{input:summary_so_far}}
        Next part of the text:
        {{input:chunk}}
        Rewrite the summary in two sentences so it covers the new part too.{{/user}}
        {{#assistant}}{{output:summary}}{{/assistant}}"""

    return first_summary, refine


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], chunks=4, words=100)
    first_summary, refine = make_functions(args.max_tokens)
    chunks = load_chunks("CC0-1.0.txt", args.chunks, args.words)
    with P.Session(args.url) as session:
        start = time.perf_counter()
        summary = first_summary(chunks[0])
        for chunk in chunks[1:]:
            summary = refine(summary, chunk)  # wires the chain; nothing waits
        for piece in summary.stream(P.LATENCY):  # the final summary, as it is generated
            print(piece, end="", flush=True)
        elapsed = time.perf_counter() - start
        print_timeline(session.graph())
    print(f"\nchain of {len(chunks)} calls in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
