"""A multi-agent workflow: three experts answer in parallel, a critic weighs them, a writer
answers the user.

    python examples/multi_agent.py --url http://127.0.0.1:8000 --question "Can I sell it?"

Every agent's prompt starts with the same long background (a license text), so the server
prefills it once and forks it for every expert. The experts form a task group feeding the
critic; the critic has two outputs (a critique, then a verdict generated in the same context);
the writer's reply is latency-critical and streamed.
"""
from __future__ import annotations

import argparse
import time

from common import DATA, print_timeline

import parrot as P

ROLES = {
    "lawyer": "a careful lawyer who explains legal duties",
    "engineer": "a software engineer who explains what developers must do in practice",
    "manager": "a product manager who explains the business consequences",
}


def make_functions(max_tokens: int):
    @P.semantic_function(max_tokens=max_tokens)
    def expert(background, role, question, answer):
        """{{#system}}Background document:
        {{input:background}}
        You are {{input:role}}.{{/system}}
        {{#user}}{{input:question}}{{/user}}
        {{#assistant}}{{output:answer}}{{/assistant}}"""

    @P.semantic_function(max_tokens=max_tokens,
                         outputs={"verdict": P.Output(max_tokens=12)})
    def critic(question, answers, critique, verdict):
        """{{#system}}You compare expert answers and decide which is most useful.{{/system}}
        {{#user}}Question: {{input:question}}
        Answers:
        {{input:answers}}{{/user}}
        {{#assistant}}Critique: {{output:critique}}
        Verdict: {{output:verdict}}{{/assistant}}"""

    @P.semantic_function(max_tokens=max_tokens * 2)
    def writer(question, verdict, answers, reply):
        """{{#system}}You write friendly, accurate replies for users.{{/system}}
        {{#user}}A user asked: {{input:question}}
        Expert answers:
        {{input:answers}}
        Reviewer's verdict: {{input:verdict}}
        Write the reply to the user in three sentences.{{/user}}
        {{#assistant}}{{output:reply}}{{/assistant}}"""

    return expert, critic, writer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--question", default="May I sell a product that includes this code?")
    parser.add_argument("--max-tokens", type=int, default=40)
    args = parser.parse_args()
    expert, critic, writer = make_functions(args.max_tokens)
    background = (DATA / "BSD.txt").read_text()
    with P.Session(args.url) as session:
        start = time.perf_counter()
        question = P.variable(args.question, name="question")
        answers = {name: expert(background, role, question) for name, role in ROLES.items()}
        numbered = P.join([P.concat(f"{name}: ", a) for name, a in answers.items()], sep="\n")
        critique, verdict = critic(question, numbered)
        reply = writer(question, verdict, numbered)
        for piece in reply.stream(P.LATENCY):
            print(piece, end="", flush=True)
        elapsed = time.perf_counter() - start
        print(f"\n\nverdict: {verdict.get().strip()}\ncritique: {critique.get().strip()}")
        print_timeline(session.graph())
    print(f"\n{len(ROLES)} experts + critic + writer in {elapsed:.2f} s")


if __name__ == "__main__":
    main()
