"""Compiled LCEL chains give the plain chains' values (greedy), as one Parrot program."""
from __future__ import annotations

import random
import warnings
from operator import itemgetter

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder, PromptTemplate
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from langchain_parrot import ChatParrot, ParrotLLM, compile_chain
from langchain_parrot.messages import to_openai_messages
from langchain_parrot.program import ChatRenderer
from tests.langchain.conftest import engine_stats

pytestmark = pytest.mark.e2e

FACT = ChatPromptTemplate.from_messages([("system", "You answer in one short sentence."),
                                         ("user", "Tell me a fact about {topic}.")])
SHORTEN = ChatPromptTemplate.from_messages([("user", "Make this shorter: {fact}")])


@pytest.fixture
def chat(parrot_url: str) -> ChatParrot:
    return ChatParrot(base_url=parrot_url, temperature=0, max_tokens=10)


@pytest.fixture
def llm(parrot_url: str) -> ParrotLLM:
    return ParrotLLM(base_url=parrot_url, temperature=0, max_tokens=10)


def compiled_quietly(chain, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a fully compilable chain warns about nothing
        return compile_chain(chain, keep_graph=True, **kwargs)


def model_calls(graph: dict) -> list[dict]:
    return [c for c in graph["calls"] if c["kind"] == "llm"]


async def test_rendered_chat_prompt_is_what_the_chat_endpoint_runs(chat, llm):
    messages = FACT.invoke({"topic": "salt"}).to_messages()
    [text] = await ChatRenderer(chat._endpoint()).render([to_openai_messages(messages)])
    assert text.endswith("<|im_start|>assistant\n")
    answer = await chat.ainvoke(messages)
    assert (await llm.ainvoke(text)) == answer.content  # same tokens in, same tokens out
    usage = (await llm.agenerate([text])).llm_output["token_usage"]
    assert usage["prompt_tokens"] == answer.usage_metadata["input_tokens"]


async def test_sequence_of_chat_calls(chat):
    chain = {"fact": FACT | chat | StrOutputParser()} | SHORTEN | chat | StrOutputParser()
    compiled = compiled_quietly(chain)
    assert await compiled.ainvoke({"topic": "parrots"}) == chain.invoke({"topic": "parrots"})
    assert len(model_calls(compiled.last_graph)) == 2


def test_parallel_with_chat_and_bound_stop(chat, llm):
    chain = RunnableParallel(
        fact=FACT | chat | StrOutputParser(),
        answer=PromptTemplate.from_template("Q: What is {topic}?\nA:") | llm.bind(stop=["."]),
        story=PromptTemplate.from_template("A story about {topic}:") | chat.bind(stop=[","])
        | StrOutputParser())
    plain = chain.invoke({"topic": "the moon"})
    assert compiled_quietly(chain).invoke({"topic": "the moon"}) == plain
    assert "." not in plain["answer"] and "," not in plain["story"]


def test_assign_and_itemgetter(chat):
    chain = (RunnablePassthrough.assign(fact=FACT | chat | StrOutputParser())
             .assign(short={"fact": itemgetter("fact")} | SHORTEN | chat | StrOutputParser()))
    compiled = compiled_quietly(chain)
    assert compiled.invoke({"topic": "owls"}) == chain.invoke({"topic": "owls"})


def test_chat_history_and_message_output(chat):
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Be brief."), MessagesPlaceholder("history"), ("user", "{question}")])
    chain = {"question": FACT | chat | StrOutputParser(),
             "history": itemgetter("history")} | prompt | chat
    inputs = {"topic": "tea", "history": [HumanMessage("Hi"), AIMessage("Hello!")]}
    compiled = compiled_quietly(chain).invoke(inputs)
    assert isinstance(compiled, AIMessage)
    assert compiled.content == chain.invoke(inputs).content


def test_batch_runs_every_input_in_one_session(chat):
    chain = FACT | chat | StrOutputParser()
    inputs = [{"topic": "cats"}, {"topic": "dogs"}]
    compiled = compiled_quietly(chain)
    assert compiled.batch(inputs) == chain.batch(inputs)
    assert len(model_calls(compiled.last_graph)) == 2


def test_lambda_splits_the_program_and_warns(chat):
    shout = RunnableLambda(lambda d: {"fact": d["fact"].upper()})
    chain = {"fact": FACT | chat | StrOutputParser()} | shout | SHORTEN | chat | StrOutputParser()
    with pytest.warns(UserWarning, match=r"1 step\(s\).*RunnableLambda\(<lambda>\)"):
        compiled = compile_chain(chain, keep_graph=True)
    assert compiled.invoke({"topic": "bees"}) == chain.invoke({"topic": "bees"})
    graph = compiled.last_graph
    assert len(model_calls(graph)) == 2
    assert sum(r["what"].startswith("get") for r in graph["requests"]) == 2  # the split


def test_map_reduce_is_one_program_sharing_its_prefix(chat, smollm_dir):
    chunks = [{"chunk": text} for text in CHUNKS]
    # Two fresh tags of one length: each run meets a cold prefix cache, same token counts.
    plain_tag, compiled_tag = random.sample(range(10**5, 10**6), 2)
    plain_chain = map_reduce_chain(chat, plain_tag, smollm_dir)
    compiled_chain = map_reduce_chain(chat, compiled_tag, smollm_dir)
    compiled = compiled_quietly(compiled_chain)

    before = engine_stats(chat.base_url)
    plain_chain.invoke(chunks)
    middle = engine_stats(chat.base_url)
    value = compiled.invoke(chunks)
    after = engine_stats(chat.base_url)
    assert value == compiled_chain.invoke(chunks)  # the plain run of the same chain

    graph = compiled.last_graph
    assert sorted(c["kind"] for c in graph["calls"]) == ["llm"] * 6 + ["render"]  # + join
    assert sum(r["what"].startswith("get") for r in graph["requests"]) == 1
    assert all(c["tokens"]["shared"] >= PREFIX_TOKENS_MIN for c in model_calls(graph)[:5])
    compiled_prefill = after["num_prefill_tokens"] - middle["num_prefill_tokens"]
    plain_prefill = middle["num_prefill_tokens"] - before["num_prefill_tokens"]
    assert compiled_prefill < plain_prefill


PREFIX_TOKENS_MIN = 48
CHUNKS = ["Permission is granted to copy the work.", "Redistributions must keep notices.",
          "The name may not endorse products.", "No warranty is given.",
          "Authors are not liable for damages."]


def map_reduce_chain(chat: ChatParrot, tag: int, model_dir):
    """Summarize each chunk (one long shared instruction), join, summarize the summaries.

    The instruction is padded so the prompts' common prefix ends just before a KV-block
    boundary: plain requests reuse only whole cached blocks while the compiled program forks
    the whole prefix, so fewer prefilled tokens is certain, not a matter of timing.
    """
    system = pad_to_block_end(
        f"[{tag}] You read software licenses. Note who grants which rights to whom, under "
        "which conditions, and what is disclaimed. Then summarize the given part of a license "
        "in one plain sentence.", model_dir)
    map_prompt = ChatPromptTemplate.from_messages([("system", system), ("user", "{chunk}")])
    reduce_prompt = ChatPromptTemplate.from_messages([
        ("system", f"[{tag}] You read software licenses."),
        ("user", "Summaries of consecutive parts of a license:\n{summaries}\nSummarize them.")])
    summaries = (map_prompt | chat | StrOutputParser()).map() | "\n".join
    return {"summaries": summaries} | reduce_prompt | chat | StrOutputParser()


def pad_to_block_end(system: str, model_dir, block_size: int = 16) -> str:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)

    def shared_prefix_len(text: str) -> int:
        prompts = [tokenizer.encode(tokenizer.apply_chat_template(
            [{"role": "system", "content": text}, {"role": "user", "content": chunk}],
            tokenize=False, add_generation_prompt=True)) for chunk in CHUNKS]
        return next(i for i, ids in enumerate(zip(*prompts)) if len(set(ids)) > 1)

    while shared_prefix_len(system) % block_size < block_size - 3:
        system += " Be exact."
    assert shared_prefix_len(system) >= PREFIX_TOKENS_MIN
    return system


def test_prompt_that_transforms_a_value_waits_for_it(chat):
    quoting = PromptTemplate.from_template("Shorten {fact!r}:")
    chain = {"fact": FACT | chat | StrOutputParser()} | quoting | chat | StrOutputParser()
    compiled = compile_chain(chain, keep_graph=True)
    with pytest.warns(UserWarning, match="transforms the text"):
        value = compiled.invoke({"topic": "rain"})
    assert value == chain.invoke({"topic": "rain"})


async def test_stream_yields_the_final_answer_as_it_is_generated(parrot_url):
    chat = ChatParrot(base_url=parrot_url, temperature=0, max_tokens=24)
    chain = {"fact": FACT | chat | StrOutputParser()} | SHORTEN | chat | StrOutputParser()
    compiled = compiled_quietly(chain)
    expected = chain.invoke({"topic": "parrots"})
    chunks = [c async for c in compiled.astream({"topic": "parrots"})]
    assert all(isinstance(c, str) for c in chunks) and len(chunks) > 1  # tokens, not one blob
    assert "".join(chunks) == expected
    assert len(model_calls(compiled.last_graph)) == 2  # both calls in one program
    sync_chunks = list(compiled.stream({"topic": "parrots"}))
    assert len(sync_chunks) > 1 and "".join(sync_chunks) == expected


def test_stream_of_a_chat_answer_gives_message_chunks(chat):
    chain = FACT | chat
    compiled = compiled_quietly(chain)
    chunks = list(compiled.stream({"topic": "tea"}))
    assert len(chunks) > 1 and all(isinstance(c, AIMessageChunk) for c in chunks)
    merged = chunks[0]
    for c in chunks[1:]:
        merged += c
    assert merged.content == chain.invoke({"topic": "tea"}).content
    assert merged.response_metadata == compiled.invoke({"topic": "tea"}).response_metadata


def test_stream_of_a_dict_value_gives_it_whole(chat):
    chain = RunnableParallel(a=FACT | chat | StrOutputParser(), b=SHORTEN | chat | StrOutputParser())
    inputs = {"topic": "owls", "fact": "Owls can turn their heads far."}
    assert list(compiled_quietly(chain).stream(inputs)) == [chain.invoke(inputs)]
