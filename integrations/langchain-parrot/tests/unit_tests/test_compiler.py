"""What the LCEL compiler compiles and what it leaves to the client (no server needed)."""
from __future__ import annotations

import warnings
from operator import itemgetter

import pytest
from langchain_core.output_parsers import JsonOutputParser, StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from langchain_parrot import ChatParrot, ParrotLLM, compile_chain
from langchain_parrot.compiler import Compiler, model_sampling
from langchain_parrot.program import Program
from langchain_parrot.steps import (AssignStep, ClientStep, EachStep, JoinStep, ModelStep,
                                    ParallelStep, PickStep, SequenceStep)
from langchain_parrot.symbols import (PlannedVar, is_transparent, sentinelize,
                                      split_at_sentinels)

URL = "http://127.0.0.1:9"  # never contacted
PROMPT = PromptTemplate.from_template("About {topic}:")


def test_structural_steps_compile():
    chat = ChatParrot(base_url=URL, max_tokens=8)
    chain = (RunnablePassthrough.assign(a=PROMPT | chat | StrOutputParser())
             | {"b": itemgetter("a"), "c": (PROMPT | chat.bind(stop=["."])).map() | ", ".join})
    compiler = Compiler()
    step = compiler.compile(chain)
    assert isinstance(step, SequenceStep) and not compiler.client_steps
    assign, parallel = step.steps
    assert isinstance(assign, AssignStep) and isinstance(parallel, ParallelStep)
    assert isinstance(parallel.branches["b"], PickStep)
    each, join = parallel.branches["c"].steps
    assert isinstance(each, EachStep) and isinstance(join, JoinStep) and join.sep == ", "
    model = each.inner.steps[1]
    assert isinstance(model, ModelStep) and model.sampling["stop"] == ["."]


def test_functions_and_other_runnables_split_with_one_warning():
    chat = ChatParrot(base_url=URL, max_tokens=8)
    chain = PROMPT | chat | RunnableLambda(lambda m: m.content) | JsonOutputParser()
    with pytest.warns(UserWarning) as record:
        compile_chain(chain)
    assert len(record) == 1
    assert "2 step(s)" in str(record[0].message)
    assert "RunnableLambda(<lambda>)" in str(record[0].message)


def test_unknown_server_settings_run_on_the_client():
    chat = ChatParrot(base_url=URL)
    compiler = Compiler()
    assert isinstance(compiler.compile(chat), ClientStep)  # max_tokens=None: context room
    assert "max_tokens=None" in compiler.client_steps[0].reason
    compiler = Compiler()
    compiler.compile(ChatParrot(base_url=URL, max_tokens=4))
    other = compiler.compile(ChatParrot(base_url="http://elsewhere:1", max_tokens=4))
    assert isinstance(other, ClientStep) and "another Parrot server" in other.reason
    assert isinstance(Compiler().compile(ParrotLLM(base_url=URL).bind(logprobs=True)),
                      ClientStep)


def test_sampling_follows_the_openai_defaults():
    assert model_sampling(ParrotLLM(base_url=URL), {}) == {"max_tokens": 16,
                                                            "temperature": 1.0}
    chat = ChatParrot(base_url=URL, max_tokens=5, temperature=0, stop=["x"])
    assert model_sampling(chat, {"stop": ["y"], "seed": 1}) == {
        "max_tokens": 5, "temperature": 0, "stop": ["y"], "seed": 1}


def test_sentinels_split_verbatim_insertions_only():
    var = PlannedVar(7)
    variables = {7: var}
    for template, transparent in [("A {x} B {x}", True), ("A {x!r}", False)]:
        prompt = PromptTemplate.from_template(template)
        a, b = (prompt.format(x=sentinelize(var, s)) for s in ("A", "B"))
        pieces = split_at_sentinels(a, variables)
        assert is_transparent(pieces, b) is transparent
    pieces = split_at_sentinels(PromptTemplate.from_template("A {x} B").format(
        x=sentinelize(var, "A")), variables)
    assert pieces == ["A ", var, " B"]
    jinja = PromptTemplate.from_template("{{ x | upper }}", template_format="jinja2")
    a, b = (jinja.format(x=sentinelize(var, s)) for s in ("A", "B"))
    assert not is_transparent(split_at_sentinels(a, variables), b)


def test_chat_messages_carry_sentinels():
    var = PlannedVar(3)
    prompt = ChatPromptTemplate.from_messages([("system", "S"), ("user", "Q: {q}")])
    messages = prompt.invoke({"q": sentinelize(var, "A")}).to_messages()
    assert split_at_sentinels(messages[1].content, {3: var}) == ["Q: ", var]


def test_planning_merges_constant_text_and_keeps_order():
    program = Program(session=None, renderer=None)
    first = program.plan_call("llm", ["a", "", "b"], {"max_tokens": 2})
    join = program.plan_join([first, "x"], sep="\n")
    program.plan_call("llm", ["c", join], {"stop": ["."]})
    planned = program._planned
    assert planned[0].pieces == ("ab",) and planned[1].parts == (first, "x")
    assert planned[2].sampling == (("stop", (".",)),)


def test_no_model_means_no_compilation_warning():
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        compile_chain(PROMPT | StrOutputParser())
    assert "runs entirely on the client" in str(record[0].message)


def test_penalties_compile_into_the_semantic_function():
    llm = ParrotLLM(base_url=URL, max_tokens=8, frequency_penalty=1.0)
    assert model_sampling(llm, {"presence_penalty": 0.25}) == {
        "max_tokens": 8, "temperature": 1.0, "frequency_penalty": 1.0, "presence_penalty": 0.25}
