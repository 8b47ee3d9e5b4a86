"""A LangGraph multi-agent workflow: a router picks experts, the experts answer in parallel,
a critic weighs them, a writer answers - run plainly against Parrot's OpenAI API, and
compiled to Semantic-Variable programs.

    parrot serve &
    python examples/langgraph_multi_agent.py --url http://127.0.0.1:8000 --question "Can I sell it?"

The graph is a plain `StateGraph` whose LLM nodes are `parrot_node(prompt, llm, key)`.
Compiled, the router (a Python function on the input) runs on the client, then experts,
critic and writer go to the server as one program: the experts fork one prefilled copy of
the long shared background, run as a task group, and the critic and writer start there the
moment their inputs exist.
"""
from __future__ import annotations

import sys
from typing import TypedDict

from common import DATA
from langchain_common import compare, example_args
from langchain_core.prompts import ChatPromptTemplate
from langgraph.graph import END, START, StateGraph

from langchain_parrot import ChatParrot, compile_graph, parrot_node

EXPERTS = {
    "lawyer": "a careful lawyer who explains legal duties",
    "engineer": "a software engineer who explains what developers must do in practice",
    "manager": "a product manager who explains the business consequences",
}


class Team(TypedDict, total=False):
    background: str
    question: str
    lawyer: str
    engineer: str
    manager: str
    critique: str
    answer: str


def expert_prompt(role: str) -> ChatPromptTemplate:
    return ChatPromptTemplate.from_messages([
        ("system", "Background document:\n{background}\nYou are %s." % role),
        ("user", "{question}")])


CRITIC = ChatPromptTemplate.from_messages([
    ("system", "You compare expert opinions and point out what is missing or wrong."),
    ("user", "Question: {question}\nLawyer: {lawyer}\nEngineer: {engineer}\n"
             "Manager: {manager}\nCritique these answers in two sentences.")])
WRITER = ChatPromptTemplate.from_messages([
    ("system", "You write short, friendly answers for users."),
    ("user", "Question: {question}\nExpert notes: {lawyer} {engineer} {manager}\n"
             "Critique: {critique}\nAnswer the question in three sentences.")])


def route(state: Team) -> list[str]:
    """Every expert for a question about selling; lawyer and engineer otherwise."""
    if "sell" in state["question"].lower():
        return list(EXPERTS)
    return ["lawyer", "engineer"]


def team_graph(llm: ChatParrot) -> StateGraph:
    builder = StateGraph(Team)
    for name, role in EXPERTS.items():
        builder.add_node(name, parrot_node(expert_prompt(role), llm, name))
        builder.add_edge(name, "critic")
    builder.add_node("critic", parrot_node(CRITIC.partial(manager="(no opinion)"), llm,
                                           "critique"))
    builder.add_node("writer", parrot_node(WRITER.partial(manager=""), llm, "answer"))
    builder.add_conditional_edges(START, route, list(EXPERTS))
    builder.add_edge("critic", "writer")
    builder.add_edge("writer", END)
    return builder


def main() -> None:
    question = "Can I sell software that uses this code?"
    if "--question" in sys.argv:
        i = sys.argv.index("--question")
        question = sys.argv[i + 1]
        del sys.argv[i:i + 2]
    args = example_args(__doc__.splitlines()[0], max_tokens=48)
    llm = ChatParrot(base_url=args.url, temperature=0, max_tokens=args.max_tokens)
    builder = team_graph(llm)
    plain, compiled = builder.compile(), compile_graph(builder)
    inputs = {"background": (DATA / "BSD.txt").read_text(), "question": question}
    state = compare(lambda: plain.invoke(inputs), lambda: compiled.invoke(inputs), args.rounds)
    for key in ("lawyer", "engineer", "manager", "critique"):
        if key in state:
            print(f"\n{key}: {state[key].strip()}")
    print(f"\nanswer: {state['answer'].strip()}")


if __name__ == "__main__":
    main()
