"""Request validators: every bad field is a 4xx ApiError naming it; no server needed."""
from __future__ import annotations

import pytest

from parrot.manager.call_spec import sampling_params
from parrot.manager.errors import BadRequest
from parrot.server.errors import ApiError
from parrot.server.openai_protocol import parse_chat_request, parse_completion_request
from parrot.server.prompts import fit_max_tokens

CHAT = {"messages": [{"role": "user", "content": "hi"}]}


def completion(**fields):
    return parse_completion_request({"prompt": "hi", **fields}, max_n=8)


def chat(**fields):
    return parse_chat_request({**CHAT, **fields}, max_n=8)


def assert_rejects(parse, param, **fields):
    with pytest.raises(ApiError) as info:
        parse(**fields)
    assert info.value.status == 400
    assert info.value.param == param
    assert param.split("[")[0].split(".")[0] in info.value.message
    return info.value


def test_defaults_follow_openai():
    req = completion()
    assert req.prompts == ["hi"]
    opts = req.options
    assert (opts.n, opts.stream, opts.include_usage, opts.max_tokens) == (1, False, False, None)
    s = opts.sampling_for(16, 0)
    assert s.temperature == 1.0 and s.top_p == 1.0 and s.top_k == 0


def test_sampling_fields_are_read():
    opts = completion(max_tokens=7, temperature=0, top_p=0.5, top_k=-1, seed=3, stop="\n",
                      stop_token_ids=[2], ignore_eos=True, min_tokens=2, n=2, stream=True,
                      stream_options={"include_usage": True}, unknown_field={"x": 1}).options
    s = opts.sampling_for(7, choice=1)
    assert (s.max_tokens, s.temperature, s.top_p, s.top_k, s.seed) == (7, 0.0, 0.5, 0, 4)
    assert (s.stop, s.stop_token_ids, s.ignore_eos, s.min_tokens) == (["\n"], [2], True, 2)
    assert opts.n == 2 and opts.stream and opts.include_usage


def test_penalties_are_read():
    assert completion().options.sampling_for(4, 0).has_penalties is False
    s = chat(presence_penalty=-1, frequency_penalty=2, repetition_penalty=1.3).options \
        .sampling_for(4, choice=1)
    assert (s.presence_penalty, s.frequency_penalty, s.repetition_penalty) == (-1.0, 2.0, 1.3)


@pytest.mark.parametrize("value", [0, 0.0, -0.5])
def test_repetition_penalty_must_be_positive(value):
    err = assert_rejects(chat, "repetition_penalty", repetition_penalty=value)
    assert "> 0" in err.message


def test_native_sampling_reads_the_penalties():
    sp = sampling_params({"presence_penalty": 0.5, "frequency_penalty": -0.5,
                          "repetition_penalty": 1.2}, "calls[0].outputs.y.sampling")
    assert (sp.presence_penalty, sp.frequency_penalty, sp.repetition_penalty) == (0.5, -0.5, 1.2)
    with pytest.raises(BadRequest) as info:
        sampling_params({"repetition_penalty": 0}, "calls[0].outputs.y.sampling")
    assert info.value.status == 400 and "repetition_penalty" in str(info.value)


def test_prompt_forms():
    assert completion(prompt=[1, 2, 3]).prompts == [[1, 2, 3]]
    assert completion(prompt=["a", [4]]).prompts == ["a", [4]]


@pytest.mark.parametrize("prompt", [None, 5, [], [[]], [-1], [1.5], {"a": 1}, [True]])
def test_bad_prompts(prompt):
    assert_rejects(completion, "prompt", prompt=prompt)


@pytest.mark.parametrize("field,value", [
    ("max_tokens", 0), ("max_tokens", -5), ("max_tokens", "ten"), ("max_tokens", 2.5),
    ("max_tokens", True), ("temperature", -0.1), ("temperature", "hot"), ("temperature", 2.5),
    ("top_p", 0), ("top_p", 1.5), ("top_k", -2), ("n", 0), ("n", 9), ("seed", "x"),
    ("stop", 3), ("stop", ["a", 1]), ("stop", ["s"] * 17), ("stream", "yes"),
    ("stop_token_ids", [-1]), ("ignore_eos", 1), ("min_tokens", -1), ("model", 3),
    ("best_of", 3), ("presence_penalty", 3), ("stream_options", "usage"),
    ("presence_penalty", -2.5), ("presence_penalty", "x"), ("frequency_penalty", 2.01),
    ("frequency_penalty", -3), ("repetition_penalty", 0), ("repetition_penalty", -1),
    ("repetition_penalty", 2.5), ("repetition_penalty", "x"),
    ("logprobs", 21), ("logprobs", True), ("echo", True), ("guided_regex", 5),
    ("guided_choice", "yes"), ("guided_json", 3), ("structured_outputs", "json"),
])
def test_bad_fields_name_the_field(field, value):
    assert_rejects(completion, field, **{field: value})


def test_min_tokens_beyond_max_tokens():
    """Between two fields: found when the choice's settings are built (before any work)."""
    options = completion(max_tokens=2, min_tokens=5).options
    with pytest.raises(ApiError) as info:
        options.sampling_for(2, 0)
    assert info.value.param == "min_tokens" and "max_tokens" in info.value.message


def test_integral_float_is_an_integer():
    assert completion(max_tokens=4.0).options.max_tokens == 4


def test_chat_messages():
    req = chat(messages=[{"role": "system", "content": "be brief"},
                         {"role": "user", "content": [{"type": "text", "text": "a"},
                                                      {"type": "text", "text": "b"}]},
                         {"role": "assistant", "content": None}])
    assert req.messages == [{"role": "system", "content": "be brief"},
                            {"role": "user", "content": "ab"},
                            {"role": "assistant", "content": ""}]


@pytest.mark.parametrize("messages,param", [
    (None, "messages"), ([], "messages"), ("hi", "messages"), ([3], "messages[0]"),
    ([{"role": "wizard", "content": "x"}], "messages[0].role"),
    ([{"role": "user", "content": 5}], "messages[0].content"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
     "messages[0].content"),
])
def test_bad_messages(messages, param):
    assert_rejects(chat, param, messages=messages)


def test_chat_prefers_max_completion_tokens():
    opts = chat(max_tokens=5, max_completion_tokens=9).options
    assert (opts.max_tokens, opts.max_tokens_field) == (9, "max_completion_tokens")
    assert_rejects(chat, "max_completion_tokens", max_completion_tokens=0)


def test_fit_max_tokens():
    kw = dict(prompt_param="prompt", tokens_param="max_tokens")
    assert fit_max_tokens(None, 10, 100, default=16, **kw) == 16
    assert fit_max_tokens(None, 95, 100, default=16, **kw) == 5  # a default is clamped
    assert fit_max_tokens(None, 10, 100, default=None, **kw) == 90
    assert fit_max_tokens(90, 10, 100, default=16, **kw) == 90
    with pytest.raises(ApiError) as info:
        fit_max_tokens(91, 10, 100, default=16, **kw)
    assert info.value.param == "max_tokens" and "context length is 100" in info.value.message
    with pytest.raises(ApiError) as info:
        fit_max_tokens(None, 100, 100, default=16, **kw)
    assert info.value.param == "prompt"
