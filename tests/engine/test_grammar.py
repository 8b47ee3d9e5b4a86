"""Constraints compiled by llguidance against the embedded model's tokenizer, and the
sampler's bitmask: what a mask allows is exactly what the grammar can continue with."""
from __future__ import annotations

import json

import pytest
import torch

from parrot.engine.grammar import ConstraintError, GrammarCompiler, apply_masks
from parrot.engine.sampler import SamplingRow, sample
from parrot.engine.sampling_params import Constraint, SamplingParams


@pytest.fixture(scope="module")
def compiler(smollm):
    return GrammarCompiler(smollm.tokenizer, smollm.config.vocab_size)


def allowed_texts(compiler, matcher, tokenizer) -> set[str]:
    mask = compiler.fill_masks([matcher])
    logits = torch.zeros(1, compiler.vocab_size)
    apply_masks(logits, [0], mask)
    ids = torch.nonzero(logits[0] == 0).flatten().tolist()
    return {tokenizer.decode([i]) for i in ids}


def test_choice_mask_allows_only_prefixes_of_the_choices(compiler, smollm):
    m = compiler.matcher(Constraint("choice", json.dumps(["yes", "no"])))
    texts = allowed_texts(compiler, m, smollm.tokenizer)
    assert texts and all("yes".startswith(t) or "no".startswith(t) for t in texts)
    assert {"yes", "no"} <= texts


def test_a_grammar_walked_to_its_end_is_stopped(compiler, smollm):
    m = compiler.matcher(Constraint("regex", "[0-9]{3}"))
    for t in smollm.tokenizer.encode("123", add_special_tokens=False):
        assert m.consume_token(t)
    assert m.is_accepting()
    assert allowed_texts(compiler, m, smollm.tokenizer) <= {smollm.tokenizer.eos_token}


def test_json_schema_walks_a_valid_document_and_refuses_an_invalid_one(compiler, smollm):
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    good = compiler.matcher(Constraint("json_schema", json.dumps(schema)))
    assert all(good.consume_token(t) for t in smollm.tokenizer.encode('{"n": 12}'))
    assert good.is_accepting()
    bad = compiler.matcher(Constraint("json_schema", json.dumps(schema)))
    assert not all(bad.consume_token(t) for t in smollm.tokenizer.encode('{"n": "x"}'))


def test_each_request_gets_its_own_matcher_from_one_compiled_grammar(compiler, smollm):
    c = Constraint("regex", "ab|cd")
    a, b = compiler.matcher(c), compiler.matcher(c)
    assert a is not b
    a.consume_token(smollm.tokenizer.encode("a", add_special_tokens=False)[0])
    assert "c" in allowed_texts(compiler, b, smollm.tokenizer)  # b did not move
    assert "c" not in allowed_texts(compiler, a, smollm.tokenizer)


@pytest.mark.parametrize("constraint, message", [
    (Constraint("json_schema", "{not json"), "not JSON"),
    (Constraint("json_schema", json.dumps({"type": "bogus"})), "bogus"),
    (Constraint("json_schema", "[1]"), "must be a JSON object"),
    (Constraint("regex", "[a-z"), "regex"),
    (Constraint("choice", json.dumps([])), "non-empty strings"),
    (Constraint("choice", json.dumps(["a", 3])), "non-empty strings"),
    (Constraint("grammar", "start: undefined_rule"), "undefined_rule"),
])
def test_invalid_constraints_are_refused_with_the_reason(compiler, constraint, message):
    with pytest.raises(ConstraintError, match=message):
        compiler.matcher(constraint)


def test_unknown_kind_and_oversized_spec_are_refused_by_sampling_params():
    with pytest.raises(ValueError, match="constraint kind"):
        SamplingParams(constraint=Constraint("yaml", "x"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        SamplingParams(constraint=Constraint("regex", "a" * 70_000))
    with pytest.raises(ValueError, match="logprobs"):
        SamplingParams(logprobs=21)


def test_apply_masks_clears_disallowed_and_columns_past_the_mask():
    logits = torch.zeros(2, 40)
    mask = torch.tensor([[0b101]], dtype=torch.int32)  # tokens 0 and 2 of a 32-token mask
    apply_masks(logits, [1], mask)
    assert logits[0].eq(0).all()  # an unmasked row is untouched
    assert torch.isfinite(logits[1]).nonzero().flatten().tolist() == [0, 2]


def test_sampler_masks_greedy_and_sampled_rows_and_reports_raw_logprobs():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]] * 2)
    mask = torch.tensor([0b0100], dtype=torch.int32)  # only token 2
    greedy = SamplingRow(0.0, 0, 1.0, None, [], allowed=mask, logprobs=1)
    seeded = SamplingRow(1.0, 0, 1.0, torch.Generator().manual_seed(0), [], allowed=mask)
    out = sample(logits.clone(), [greedy, seeded])
    assert out.tokens == [2, 2]
    raw = torch.tensor([3.0, 2.0, 1.0, 0.0]).log_softmax(-1)
    lp = out.logprobs[0]
    assert lp.token_id == 2 and lp.logprob == pytest.approx(float(raw[2]))
    assert lp.top == [(0, pytest.approx(float(raw[0])))]  # the model's choice, not the mask's
    assert out.logprobs[1] is None


def test_objects_that_list_their_properties_are_closed_unless_they_say_otherwise(compiler, smollm):
    from parrot.engine.grammar import closed_objects

    schema = {"type": "object", "properties": {"a": {"type": "object", "properties": {
        "b": {"const": {"properties": 1}}}}, "c": {"type": "object", "properties": {},
                                                 "additionalProperties": True}}}
    closed = closed_objects(schema)
    assert closed["additionalProperties"] is False
    assert closed["properties"]["a"]["additionalProperties"] is False
    assert closed["properties"]["a"]["properties"]["b"] == {"const": {"properties": 1}}
    assert closed["properties"]["c"]["additionalProperties"] is True
    named = closed_objects({"properties": {"properties": {"type": "string"}}})
    assert named == {"properties": {"properties": {"type": "string"}},
                     "additionalProperties": False}  # a property may be named "properties"
    m = compiler.matcher(Constraint("json_schema", json.dumps(
        {"type": "object", "properties": {"n": {"type": "integer"}}})))
    assert not all(m.consume_token(t) for t in smollm.tokenizer.encode('{"x": 1}'))
