"""The step-cost model (fitted online) and the time-sized budget of throughput prefills
next to latency-critical decodes, on a real scheduler with a cost model whose fit is known."""
from __future__ import annotations

import random

import pytest

from parrot.engine.step_cost import StepCostModel, StepFeatures

from .test_scheduler_policy import LATENCY, THROUGHPUT, scheduler, step, submit

# A machine: 20 ms fixed, 1 ms per prefill token, 0.5 ms per decode, 2 us per cached token.
TRUE = (0.020, 0.001, 0.0005, 0.000002)


def true_seconds(f: StepFeatures) -> float:
    return TRUE[0] + TRUE[1] * f.num_prefill_tokens + TRUE[2] * f.num_decode_seqs + TRUE[3] * f.num_cached_tokens


def fitted_model(noise: float = 0.0, steps: int = 60) -> StepCostModel:
    rng, model = random.Random(0), StepCostModel()
    for _ in range(steps):
        f = StepFeatures(rng.choice([0, 0, 16, 128, 512]), rng.randint(0, 32), rng.randint(0, 20000))
        model.observe(f, true_seconds(f) * (1 + rng.uniform(-noise, noise)))
    return model


def test_fit_recovers_a_linear_machine():
    model = fitted_model()
    assert model.is_warm
    for f in (StepFeatures(0, 1, 200), StepFeatures(512, 8, 8000), StepFeatures(64, 32, 30000)):
        assert model.predict(f) == pytest.approx(true_seconds(f), rel=1e-3)
    assert model.per_prefill_token == pytest.approx(TRUE[1], rel=1e-3)


def test_fit_with_noise_stays_close_and_follows_a_drift():
    model = fitted_model(noise=0.05)
    assert model.predict(StepFeatures(256, 8, 4000)) == pytest.approx(true_seconds(StepFeatures(256, 8, 4000)), rel=0.05)
    for _ in range(1500):  # the machine gets 2x slower: recent steps dominate the fit
        f = StepFeatures(random.choice([0, 64, 256]), random.randint(1, 16), random.randint(0, 8000))
        model.observe(f, 2 * true_seconds(f))
    assert model.predict(StepFeatures(128, 4, 1000)) == pytest.approx(2 * true_seconds(StepFeatures(128, 4, 1000)), rel=0.05)


def test_prefill_tokens_within_a_target():
    model = fitted_model()
    base = StepFeatures(0, 4, 1000)
    target = 1.5 * true_seconds(base)  # 1.5 x 24 ms = 36 ms: 12 ms of slack at 1 ms/token
    k = model.prefill_tokens_within(base, target)
    assert k == 11 or k == 12
    assert model.predict(base._replace(num_prefill_tokens=k)) <= target + 1e-9
    assert model.prefill_tokens_within(base, 0.5 * true_seconds(base)) == 0


def warm(sched) -> None:
    sched.cost = fitted_model()


def test_no_latency_work_gets_the_whole_step():
    sched = scheduler(256, max_num_batched_tokens=64)
    warm(sched)
    job = submit(sched, "job", 200, priority=THROUGHPUT)
    assert step(sched)[job] == 64 and sched.last_background_budget == 64


def test_cold_model_falls_back_to_the_token_cap():
    sched = scheduler(256, max_num_batched_tokens=64, latency_token_budget=8)
    chat = submit(sched, "chat", 4, generate=True, priority=LATENCY)
    job = submit(sched, "job", 200, priority=THROUGHPUT, arrival=1)
    computed = step(sched)
    assert computed[chat] == 4 and computed[job] == 8 and not sched.cost.is_warm


def test_throughput_prefill_sized_in_time_next_to_latency_decodes():
    """Two chats decoding (latency) and a job prefilling (throughput): the job's chunk is
    what keeps the step within 1.5x of the chats' own step."""
    sched = scheduler(512, max_num_batched_tokens=64, latency_step_factor=1.5)  # floor: 8 tokens
    chats = [submit(sched, f"chat{i}", 8, generate=True, priority=LATENCY, arrival=i) for i in range(2)]
    step(sched)  # the chats' prompts; they decode from the next step on
    warm(sched)
    job = submit(sched, "job", 400, priority=THROUGHPUT, arrival=5)
    computed = step(sched)
    assert all(computed[c] == 1 for c in chats)
    alone = StepFeatures(0, 2, 2 * 9)  # two decodes over 9 tokens each
    slack = 1.5 * true_seconds(alone) - true_seconds(alone)  # 10.5 ms at 1 ms per token
    assert computed[job] in (int(slack / TRUE[1]), int(slack / TRUE[1]) - 1)
    sched.config.latency_step_factor = 3.0  # a looser target: a bigger chunk
    assert step(sched)[job] > computed[job]


def test_a_tight_target_still_moves_throughput_work_a_block_a_step():
    sched = scheduler(512, max_num_batched_tokens=256, latency_step_factor=1.0)
    chat = submit(sched, "chat", 8, generate=True, priority=LATENCY)
    step(sched)
    warm(sched)
    job = submit(sched, "job", 100, priority=THROUGHPUT, arrival=1)
    computed = step(sched)
    assert computed[chat] == 1 and computed[job] == sched.config.block_size


def test_noisy_early_fits_never_predict_negative_costs():
    model = StepCostModel()
    for f, s in ((StepFeatures(512, 0, 0), 0.9), (StepFeatures(0, 4, 400), 0.02), (StepFeatures(500, 4, 400), 0.5)):
        model.observe(f, s)
    assert all(model.predict(StepFeatures(p, d, c)) >= 0 for p in (0, 512) for d in (0, 32) for c in (0, 50000))
    assert model.per_prefill_token >= 0
