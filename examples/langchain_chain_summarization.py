"""Chain summarization in plain LCEL: summarize the first chunk, then refine the summary with
each next chunk - run plainly against Parrot's OpenAI API, and compiled to one program.

    parrot serve &
    python examples/langchain_chain_summarization.py --url http://127.0.0.1:8000

Every refine step depends on the previous summary. Plainly, the client waits for each
summary before it sends the next request; compiled, the whole chain goes to the server at
once and each step starts there the moment the previous one is produced.
"""
from __future__ import annotations

from common import load_chunks
from langchain_common import compare, example_args
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from langchain_parrot import ChatParrot, compile_chain

SYSTEM = "You summarize documents step by step, keeping the summary short."
FIRST = ChatPromptTemplate.from_messages([
    ("system", SYSTEM), ("user", "Summarize this text in two sentences:\n{chunk0}")])


def refine_prompt(i: int) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([
        ("system", SYSTEM),
        ("user", "Summary so far: {summary}\nNext part of the text:\n{chunk%d}\nRewrite the "
                 "summary in two sentences so it covers the new part too." % i)])


def summarization_chain(llm: ChatParrot, num_chunks: int):
    """{"chunk0": ..., "chunk1": ...} -> the final summary."""
    chain = RunnablePassthrough.assign(summary=FIRST | llm | StrOutputParser())
    for i in range(1, num_chunks):
        chain = chain | RunnablePassthrough.assign(summary=refine_prompt(i) | llm
                                                   | StrOutputParser())
    return chain.pick("summary")


def main() -> None:
    args = example_args(__doc__.splitlines()[0], chunks=4, words=100)
    chunks = load_chunks("CC0-1.0.txt", args.chunks, args.words)
    inputs = {f"chunk{i}": chunk for i, chunk in enumerate(chunks)}
    llm = ChatParrot(base_url=args.url, temperature=0, max_tokens=args.max_tokens)
    chain = summarization_chain(llm, len(chunks))
    compiled = compile_chain(chain)
    summary = compare(lambda: chain.invoke(inputs), lambda: compiled.invoke(inputs),
                      args.rounds)
    print(f"\nfinal summary ({len(chunks)} chained calls):\n{summary.strip()}")


if __name__ == "__main__":
    main()
