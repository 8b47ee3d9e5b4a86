"""The sampler's penalties on hand-made logits: vLLM's math, exact values, no model."""
from __future__ import annotations

import pytest
import torch

from parrot.engine.sampler import Penalties, SamplingRow, _top_k, _top_p, apply_penalties, sample
from parrot.engine.sampling_params import SamplingParams

INF = float("inf")


def row(presence=0.0, frequency=0.0, repetition=1.0, prompt=(), output=(), temperature=0.0,
        seed=None, banned=()) -> SamplingRow:
    penalties = None
    if (presence, frequency, repetition) != (0.0, 0.0, 1.0):
        penalties = Penalties(presence, frequency, repetition, list(prompt), list(output))
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    return SamplingRow(temperature, 0, 1.0, generator, list(banned), penalties)


def penalized(logits: list[list[float]], *rows: SamplingRow) -> list[list[float]]:
    t = torch.tensor(logits)
    apply_penalties(t, list(rows))
    return t.tolist()


def test_frequency_subtracts_once_per_output_occurrence():
    got = penalized([[1.0, 2.0, 3.0, -1.0]], row(frequency=0.5, prompt=[1], output=[0, 0, 3]))
    assert got == [[0.0, 2.0, 3.0, -1.5]]  # the prompt's token 1 is not counted


def test_presence_subtracts_once_per_output_token():
    got = penalized([[1.0, 2.0, 3.0, -1.0]], row(presence=0.25, prompt=[1], output=[0, 0, 3]))
    assert got == [[0.75, 2.0, 3.0, -1.25]]


def test_negative_frequency_and_presence_reward_repeats():
    got = penalized([[1.0, 2.0]], row(presence=-0.5, frequency=-0.25, output=[1, 1]))
    assert got == [[1.0, 3.0]]


def test_repetition_divides_positive_and_multiplies_negative_logits_of_prompt_and_output():
    got = penalized([[4.0, 2.0, -1.0, 0.0, 6.0]], row(repetition=2.0, prompt=[1, 3], output=[2]))
    assert got == [[4.0, 1.0, -2.0, 0.0, 6.0]]  # 0 and 4 never occurred: untouched
    got = penalized([[4.0, -4.0]], row(repetition=0.5, prompt=[0, 1]))
    assert got == [[8.0, -2.0]]  # below 1 it rewards repeats


def test_combined_in_vllms_order_repetition_then_frequency_then_presence():
    got = penalized([[4.0, 1.0]], row(presence=0.25, frequency=0.5, repetition=2.0, output=[0, 0]))
    assert got == [[4.0 / 2 - 0.5 * 2 - 0.25, 1.0]]  # 0.75; frequency first would give 1.375


def test_rows_of_one_batch_keep_their_own_settings():
    logits = [[1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0], [1.0, 2.0, 3.0]]
    got = penalized(logits, row(output=[0, 1, 2]), row(frequency=1.0, output=[2, 2]),
                    row(repetition=2.0, prompt=[0]), row(presence=0.5, output=[1]))
    assert got == [[1.0, 2.0, 3.0], [1.0, 2.0, 1.0], [0.5, 2.0, 3.0], [1.0, 1.5, 3.0]]


def test_banned_tokens_stay_banned_under_any_penalty():
    logits = torch.tensor([[1.0, 5.0, 0.5]])
    r = row(presence=-2.0, frequency=-2.0, repetition=0.5, output=[1, 1, 1], banned=[1])
    assert sample(logits, [r]).tokens == [0]
    assert logits.tolist() == [[1.0, -INF, 0.5]]


def test_greedy_decoding_is_penalized():
    logits = [[3.0, 2.9, 0.0]]
    assert sample(torch.tensor(logits), [row(output=[0])]).tokens == [0]
    assert sample(torch.tensor(logits), [row(frequency=0.5, output=[0])]).tokens == [1]
    assert sample(torch.tensor(logits), [row(presence=0.2, output=[0])]).tokens == [1]
    assert sample(torch.tensor(logits), [row(repetition=1.1, prompt=[0])]).tokens == [1]


def test_sampling_draws_from_the_penalized_logits():
    logits = [[10.0, 0.0, 0.0, 0.0]]  # token 0 has probability 0.9999 before the penalty
    by_hand = [[10.0 - 2.0 * 10, 0.0, 0.0, 0.0]]
    for seed in range(20):
        r = row(frequency=2.0, output=[0] * 10, temperature=1.0, seed=seed)
        got = sample(torch.tensor(logits), [r]).tokens
        assert got != [0]
        assert got == sample(torch.tensor(by_hand), [row(temperature=1.0, seed=seed)]).tokens


@pytest.mark.parametrize("repetition", [1e-38, 5e-324])  # 5e-324 is 0 in float32
def test_a_tiny_repetition_penalty_does_not_overflow_to_nan(repetition):
    logits = torch.tensor([[30.0, 1.0, 0.0, -3.0, 2.0]])
    r = row(repetition=repetition, prompt=[0, 1, 2, 3, 4], temperature=0.5, seed=0, banned=[4])
    assert sample(logits, [r]).tokens[0] in (0, 1)
    assert torch.isfinite(logits[0, :4]).all() and logits[0, 4] == -INF


def test_rows_without_penalties_cost_nothing():
    sp = SamplingParams()
    assert not sp.has_penalties and Penalties.of(sp, [1, 2, 3], 2) is None
    t = torch.tensor([[1.0, 2.0]])
    apply_penalties(t, [row()])
    assert t.tolist() == [[1.0, 2.0]]


def test_penalties_split_the_context_into_prompt_and_output():
    sp = SamplingParams(frequency_penalty=1.0, repetition_penalty=1.5)
    assert Penalties.of(sp, [5, 6, 7, 8], 3) == Penalties(0.0, 1.0, 1.5, [5, 6, 7], [8])
    only_output = Penalties.of(SamplingParams(presence_penalty=0.1), [5, 6, 7, 8], 3)
    assert only_output.prompt_token_ids == [] and only_output.output_token_ids == [8]


@pytest.mark.parametrize("field,value", [
    ("presence_penalty", 2.5), ("presence_penalty", -2.1), ("frequency_penalty", 3),
    ("frequency_penalty", float("nan")), ("repetition_penalty", 0), ("repetition_penalty", -1.0),
    ("repetition_penalty", 2.5), ("repetition_penalty", "high"), ("presence_penalty", True),
])
def test_out_of_range_penalties_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"^{field} "):
        SamplingParams(**{field: value})


def test_penalty_bounds_are_accepted():
    sp = SamplingParams(presence_penalty=-2, frequency_penalty=2.0, repetition_penalty=2.0)
    assert sp.has_penalties
    assert SamplingParams(repetition_penalty=1e-6).has_penalties


def draw_many(logits: list[float], n: int, **kw) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    r = SamplingRow(kw.get("temperature", 1.0), kw.get("top_k", 0), kw.get("top_p", 1.0), g, [])
    counts = torch.zeros(len(logits))
    for _ in range(n):
        counts[sample(torch.tensor([logits]), [r]).tokens[0]] += 1
    return counts / n


def test_draws_follow_the_tempered_distribution():
    freq = draw_many([0.0, 1.0, 2.0, -INF], 6000, temperature=0.7)
    expected = (torch.tensor([0.0, 1.0, 2.0, -INF]) / 0.7).softmax(-1)
    assert (freq - expected).abs().max() < 0.03 and freq[3] == 0


def test_top_k_and_top_p_keep_exactly_the_reference_sets():
    torch.manual_seed(1)
    logits = torch.randn(6, 3000) * 2  # some nuclei wider than the sorted candidates
    ps = [0.05, 0.5, 0.9, 0.99, 0.999, 0.3]
    got = _top_p(logits.clone(), ps)
    for i, p in enumerate(ps):
        probs = logits[i].softmax(-1)
        order = probs.argsort(descending=True)
        before = probs[order].cumsum(-1) - probs[order]
        expected = set(order[(before < p) | (torch.arange(3000) == 0)].tolist())
        assert set(torch.isfinite(got[i]).nonzero().flatten().tolist()) == expected
    kept = logits.clone()
    _top_k(kept, [1, 5, 0, 3000, 7, 2])
    for i, k in enumerate([1, 5, 3000, 3000, 7, 2]):
        assert torch.isfinite(kept[i]).sum() == k
        assert set(torch.isfinite(kept[i]).nonzero().flatten().tolist()) == set(
            logits[i].topk(k).indices.tolist())


def test_a_seeded_row_draws_the_same_whatever_shares_its_batch():
    logits = torch.randn(1, 500)
    alone = [sample(logits.clone(), [row(temperature=1.0, seed=s)]).tokens[0]
             for s in range(8)]
    batch = sample(logits.repeat(9, 1), [row(temperature=1.0, seed=s) for s in range(8)]
                   + [row(temperature=1.0)]).tokens
    assert batch[:8] == alone and len(set(alone)) > 1


def _reference_penalties(logits: list[float], p: Penalties) -> list[float]:
    """vLLM's penalties for one row, written token by token (no tensors)."""
    out = list(logits)
    seen = set(p.prompt_token_ids) | set(p.output_token_ids)
    for t in seen:
        out[t] = out[t] / p.repetition if out[t] > 0 else out[t] * p.repetition
    for t in set(p.output_token_ids):
        out[t] -= p.frequency * p.output_token_ids.count(t) + p.presence
    return out


def test_batched_penalties_match_a_per_token_reference_on_random_rows():
    gen = torch.Generator().manual_seed(0)
    vocab, rows, want = 50, [], []
    logits = torch.randn(12, vocab, generator=gen) * 3
    for i in range(12):
        if i % 4 == 3:  # rows without penalties share the batch
            rows.append(row())
            want.append(logits[i].tolist())
            continue
        ids = torch.randint(0, vocab, (30,), generator=gen).tolist()
        split = int(torch.randint(0, 30, (1,), generator=gen))
        pens = Penalties(*(torch.rand(3, generator=gen) * torch.tensor([4, 4, 1.9])
                           + torch.tensor([-2, -2, 0.05])).tolist(), ids[:split], ids[split:])
        rows.append(SamplingRow(0.0, 0, 1.0, None, [], pens))
        want.append(_reference_penalties(logits[i].tolist(), pens))
    got = logits.clone()
    apply_penalties(got, rows)
    assert torch.allclose(got, torch.tensor(want), atol=1e-5)
