"""`parrot bench apps` pieces that need no server: workloads on a recording runtime,
the mode plan, statistics."""
from __future__ import annotations

import asyncio
import functools

import pytest

from parrot.bench import documents
from parrot.bench.baseline_runtime import BaselineRuntime, Result, local_chat_template
from parrot.bench.report import percentile, ratios
from parrot.bench.runner import (
    BASELINE,
    BASELINE_CACHE,
    PARROT,
    Options,
    plan,
    run_order,
)
from parrot.bench.runtime import Clock
from parrot.bench.workloads import WORKLOADS, select
from parrot.cli import build_parser


class RecordingRuntime(BaselineRuntime):
    """The baseline client with the server replaced: records every prompt and sampling."""

    def __init__(self) -> None:
        super().__init__("http://unused", "baseline", Clock(), http=None, model=None,
                         render_chat=smollm_chat_template())
        self.requests: list[tuple[str, dict]] = []

    async def complete(self, prompt: str, sampling: dict) -> Result:
        self.requests.append((prompt, sampling))
        await asyncio.sleep(0)
        first = self.clock.now()
        return Result(f"<out {len(self.requests)}>", first, self.clock.now())


@functools.cache
def smollm_chat_template():
    return local_chat_template(None)  # the workloads' role blocks need a chat template


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    """Arrival times are honoured by sleeping; here they need not be."""
    async def instant(self, offset: float) -> None:
        await asyncio.sleep(0)
    monkeypatch.setattr(Clock, "sleep_until", instant)


@pytest.mark.parametrize("smoke", [True, False])
@pytest.mark.parametrize("name", list(WORKLOADS))
def test_workload_makes_its_calls_with_fixed_lengths(name, smoke):
    workload = WORKLOADS[name](1.0, smoke)
    runtime = RecordingRuntime()
    asyncio.run(workload.run(runtime, "tag-1"))
    assert len(runtime.requests) == workload.num_calls()
    assert sum(s["max_tokens"] for _, s in runtime.requests) == workload.num_generated()
    for prompt, sampling in runtime.requests:
        assert prompt.startswith("<|im_start|>system\nRun tag-1.")
        assert sampling["ignore_eos"] is True and sampling["temperature"] == 0.0
        assert "{{" not in prompt
    assert {s.kind for s in runtime.samples} == {*_kinds(name)}


def test_dependent_calls_see_their_producers_output():
    workload = WORKLOADS["chain_summary"](1.0, True)
    runtime = RecordingRuntime()
    asyncio.run(workload.run(runtime, "t"))
    assert "Summary so far: <out 1>" in runtime.requests[1][0]


def test_scale_grows_counts():
    small, large = WORKLOADS["map_reduce"](1.0), WORKLOADS["map_reduce"](2.0)
    assert large.num_calls() > small.num_calls()
    assert WORKLOADS["gpts"](0.5).size["apps"] >= 1


def test_select():
    assert [w.name for w in select("all")] == list(WORKLOADS)
    assert [w.name for w in select("gpts, mixed")] == ["gpts", "mixed"]
    with pytest.raises(ValueError, match="unknown workload"):
        select("nope")


def test_run_order_rotates_which_mode_goes_first():
    modes = [PARROT, BASELINE, BASELINE_CACHE]
    assert [run_order(modes, r)[0] for r in range(3)] == modes
    assert sorted(run_order(modes, 4)) == sorted(modes)


def test_plan_starts_cache_on_then_cache_off():
    phases = plan(Options())
    assert [(p.modes, p.url, p.prefix_caching) for p in phases] == [
        ([PARROT, BASELINE_CACHE], None, True), ([BASELINE], None, False)]
    phases = plan(Options(url="http://p", baseline_url="http://v",
                          modes=(PARROT, BASELINE_CACHE)))
    assert [(p.modes, p.url) for p in phases] == [([PARROT], "http://p"),
                                                  ([BASELINE_CACHE], "http://v")]


def test_percentile_and_ratios():
    assert percentile([], 50) is None
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0
    assert percentile([0.0, 10.0], 90) == pytest.approx(9.0)
    modes = {PARROT: {"seconds_median": 1.0, "prefill_tokens": 10, "server_cpu_s_median": None},
             BASELINE: {"seconds_median": 4.0, "prefill_tokens": 40, "server_cpu_s_median": 2}}
    assert ratios(modes) == {"seconds_parrot/baseline": 0.25, "prefill_parrot/baseline": 0.25}


def test_documents_are_real_text_and_arrivals_reproducible():
    chunks = documents.chunks(3, 50)
    assert len(chunks) == 3 and all(len(c.split()) == 50 for c in chunks)
    assert "Apache" in documents.words(0, 20)
    assert documents.poisson_arrivals(5, 2.0, seed=1) == documents.poisson_arrivals(5, 2.0, seed=1)


def test_cli_parses_bench_apps():
    args = build_parser().parse_args(["bench", "apps", "--smoke", "--workload", "gpts"])
    assert args.smoke and args.workload == "gpts" and args.dtype == "bfloat16"


def _kinds(name: str) -> tuple[str, ...]:
    return {"chain_summary": ("chain",), "map_reduce": ("job",), "shared_prompt": ("request",),
            "gpts": ("request",), "multi_agent": ("file",), "mixed": ("chat", "job")}[name]


def test_the_engine_report_names_the_cpu_and_warns_of_emulated_bf16_peers():
    from parrot.bench.engine_bench import cpu_line

    without = cpu_line("Intel(R) Xeon(R) Processor", {"avx2", "avx512f", "avx512_vnni", "sse4_2"})
    assert without.startswith("cpu Intel(R) Xeon(R) Processor: avx2 avx512f avx512_vnni;")
    assert "emulated" in without
    for bf16 in ("avx512_bf16", "amx_bf16"):
        line = cpu_line("AMD EPYC", {"avx2", "avx512f", bf16})
        assert line.endswith(bf16) and "emulated" not in line
    assert "none of" in cpu_line("", set())


def test_the_engine_report_gives_each_alternated_rounds_ratio_beside_the_best_of_each_side():
    from parrot.bench.engine_bench import report

    r = {"read_gb_s": 20.0, "weight_bytes": 270e6, "head_bytes": 57e6, "weight_bytes_per_param": 2,
         "attn_flops_per_token": 3e7, "matmul_gflops": 200.0, "matmul_gflops_fp32": 200.0,
         "matmul_gflops_bf16": 50.0, "model": "m", "dtype": "bfloat16", "startup_s": 6.0, "rss_gib": 1.8,
         "kv_memory_gb": 1.0, "kernels": True, "linear": "parrot", "prefill_len": 1024,
         "prefill_tok_s": 600.0, "peer_prefill_tok_s": 500.0, "prefill_ratios": [1.3, 0.9, 1.1, 1.2],
         "batches": [1], "kv_bytes_per_token": 1000, "decode_ms_b1": 20.0, "peer_decode_ms_b1": 50.0,
         "decode_ratios_b1": [0.5, 0.3], "peer_url": "http://peer"}
    text = report(r)
    assert "Parrot is 1.20x its rate (rounds alternated: median 1.15x, 0.90-1.30)" in text
    assert "Parrot's step is 0.40x its time (rounds alternated: median 0.40x, 0.30-0.50)" in text
    del r["prefill_ratios"]  # a report without rounds (an older JSON) still reads
    assert "Parrot is 1.20x its rate\n" in report(r)
