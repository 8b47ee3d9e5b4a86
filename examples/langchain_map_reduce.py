"""Map-reduce summarization in plain LCEL: summarize every chunk, join, merge - run plainly
against Parrot's OpenAI API, and compiled to one Semantic-Variable program.

    parrot serve &
    python examples/langchain_map_reduce.py --url http://127.0.0.1:8000

The chain is ordinary LCEL: `(prompt | llm | parser).map()` for the chunks, `"\\n".join`
to join them, then the reduce prompt. Compiled, the map calls reach the server together
with the reduce: they share their instruction prefix (prefilled once, then forked), run as
one task group, the join happens on the server and the reduce starts the moment the last map
ends. Only the final summary crosses the network.
"""
from __future__ import annotations

from common import load_chunks
from langchain_common import compare, example_args
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate

from langchain_parrot import ChatParrot, compile_chain

MAP = ChatPromptTemplate.from_messages([
    ("system", "You are an expert at reading software licenses. Summarize the given part of a "
               "license in one or two plain sentences."),
    ("user", "{chunk}")])
REDUCE = ChatPromptTemplate.from_messages([
    ("system", "You are an expert at reading software licenses."),
    ("user", "Here are summaries of consecutive parts of one license:\n{summaries}\n"
             "Write one short paragraph that summarizes the whole license.")])


def map_reduce_chain(llm: ChatParrot):
    """[{"chunk": ...}, ...] -> one summary of all chunks."""
    summaries = (MAP | llm | StrOutputParser()).map() | "\n".join
    return {"summaries": summaries} | REDUCE | llm | StrOutputParser()


def main() -> None:
    args = example_args(__doc__.splitlines()[0], chunks=6, words=80)
    chunks = [{"chunk": c} for c in load_chunks("Apache-2.0.txt", args.chunks, args.words)]
    llm = ChatParrot(base_url=args.url, temperature=0, max_tokens=args.max_tokens)
    chain = map_reduce_chain(llm)
    compiled = compile_chain(chain)
    summary = compare(lambda: chain.invoke(chunks), lambda: compiled.invoke(chunks),
                      args.rounds)
    print(f"\nsummary of {len(chunks)} chunks:\n{summary.strip()}")


if __name__ == "__main__":
    main()
