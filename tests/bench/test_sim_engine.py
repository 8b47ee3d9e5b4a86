"""UNIT tests of the simulated engine (parrot/bench/sim_engine.py) on the virtual clock:
steps batch every running request and last what the step-cost model says, a prompt's blocks
computed on an engine are not computed again there (and are on another engine), and the text
is a function of the prompt; plus a smoke-sized run of benchmarks/scale_sim.py."""
from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

from parrot.bench.sim_engine import SimEngine, StepCost
from parrot.bench.virtual_loop import run_virtual
from parrot.engine.sampling_params import SamplingParams
from parrot.engine.step_cost import StepFeatures
from tests.manager.fake_engine import CharTokenizer

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "scale_sim.py"


async def generate(engine, tokens, n):
    ctx = engine.new_context()
    engine.append(ctx, tokens)
    chunks = [c async for c in engine.generate(ctx, SamplingParams(max_tokens=n))]
    engine.free(ctx)
    return "".join(c.text for c in chunks), chunks[-1].usage


def test_requests_run_together_in_steps_of_the_models_cost():
    cost = StepCost(0.01, 0.001, 0.002, 1e-5)
    engine = SimEngine(CharTokenizer(), cost=cost)

    async def main():
        loop = asyncio.get_running_loop()
        start = loop.time()
        await asyncio.gather(generate(engine, list(range(100, 110)), 3),
                             generate(engine, list(range(200, 210)), 3))
        return loop.time() - start

    elapsed = run_virtual(main())
    # both prompts in one step (which samples their first tokens), then two decode steps
    expected = (cost.seconds(StepFeatures(20, 0, 0)) + cost.seconds(StepFeatures(0, 2, 22))
                + cost.seconds(StepFeatures(0, 2, 24)))
    assert abs(elapsed - expected) < 1e-9 and engine.stats().num_steps == 3
    assert engine.stats().num_prefill_tokens == 20 and engine.live == {}


def test_the_prefix_cache_is_per_engine_and_block_grained():
    a, b = SimEngine(CharTokenizer()), SimEngine(CharTokenizer())
    prompt = list(range(1000, 1070))  # 4 full blocks and 6 tokens

    async def main():
        ctx = a.new_context()
        await a.fill(ctx, prompt[:40])  # 2 full blocks and 8 tokens
        a.free(ctx)
        first = await generate(a, prompt, 4)
        second = await generate(a, prompt, 4)
        other = await generate(b, prompt, 4)
        return first, second, other

    first, second, other = run_virtual(main())
    assert first[1].cached_tokens == 32 and second[1].cached_tokens == 64
    assert other[1].cached_tokens == 0  # another engine computed nothing of it
    assert a.stats().num_prefill_tokens == 40 + (70 - 32) + (70 - 64)
    assert first[0] == second[0] == other[0] and len(first[0].strip()) == 4  # 4 letters
    assert first[1].completion_tokens == 4


def test_scale_sim_runs_on_a_tiny_input(tmp_path):
    spec = importlib.util.spec_from_file_location("scale_sim", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "sim.json"
    module.main(["--smoke", "--engines", "1", "2", "--workloads", "gpts", "multi_agent:coders=3",
                 "--out", str(out)])
    result = json.loads(out.read_text())
    rows = result["workloads"]["multi_agent:coders=3"]
    assert [(r["engines"], r["policy"]) for r in rows] == [
        (n, p) for n in (1, 2) for p in ("prefix-affine", "least-loaded", "round-robin")]
    assert all(r["prefill_tokens"] > 0 and r["makespan_s"] > 0 for r in rows)
    by = {(r["engines"], r["policy"]): r for r in rows}
    # forks of the team's design run where it was computed; the others compute it again
    assert by[2, "prefix-affine"]["prefill_tokens"] < by[2, "round-robin"]["prefill_tokens"]
    assert len(result["workloads"]["gpts"]) == 6
