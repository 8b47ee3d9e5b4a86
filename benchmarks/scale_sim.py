"""Placement over simulated engines (issue 17.5): the real Manager and scheduler placing the
gpts and multi-agent workloads over 1, 2, 4, 8 simulated engines, per placement policy.

Each run: a fresh `Manager([SimEngine] * n, placement=...)` in this process, the workload's
own program (`parrot/bench/workloads/`) driven through `ManagerRuntime` (no HTTP), on a
virtual clock (`parrot/bench/virtual_loop.py`: no real sleeping; deterministic; a run takes
well under a second). A `SimEngine` batches continuously, keeps a per-engine prefix cache of
16-token blocks, and takes for each step the time a step-cost model gives (defaults: fitted to
BENCHMARKS.md's CPU-kernel engine numbers, see `StepCost`; override with the flags).

Policies: prefix-affine (Parrot's scheduler: calls forking a shared prefix, session or app,
run on its engine; least-loaded otherwise), least-loaded and round-robin (no shared contexts;
only each engine's own prefix cache reuses a prompt, as behind a request-level router).

Per workload, a table engines x policy -> prefill tokens computed, makespan (simulated s),
mean latency of the workload's timed unit (a request; a file for multi_agent), engine busy
spread (busiest engine's busy time / the mean; busy: any request on it). Markdown on stdout,
JSON to --out.

Run: .venv/bin/python benchmarks/scale_sim.py [--out scale_sim.json] [--engines 1 2 4 8]
  [--workloads gpts:apps=8,rate=32 multi_agent:copies=8] [--fixed-ms 12.8 ...]
A workload spec is NAME[:key=value,...]: keys are the workload's sizes (gpts: apps,
requests, words, tokens, rate; multi_agent: coders, rounds, design_tokens, code_tokens,
review_tokens) and `copies` (instances run at once, each its own sessions and tag).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path

from parrot.bench.manager_runtime import ManagerRuntime
from parrot.bench.runtime import Clock
from parrot.bench.sim_engine import SimEngine, StepCost
from parrot.bench.virtual_loop import run_virtual
from parrot.bench.workloads import WORKLOADS
from parrot.manager import Manager
from parrot.manager.scheduler import PLACEMENTS

# Many apps or teams (more than or as many as engines), then few (fewer than engines).
DEFAULT_WORKLOADS = ["gpts:apps=8,requests=256,rate=32", "gpts:apps=2,requests=256,rate=32",
                     "multi_agent:copies=8,coders=4", "multi_agent:copies=2,coders=4"]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--policies", nargs="+", default=list(PLACEMENTS), choices=PLACEMENTS)
    p.add_argument("--workloads", nargs="+", default=DEFAULT_WORKLOADS,
                   help="NAME[:key=value,...] (see the module docstring)")
    p.add_argument("--smoke", action="store_true", help="the workloads' smoke sizes")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    p.add_argument("--tokenizer", help="Hugging Face tokenizer directory (default: the "
                   "embedded SmolLM2's)")
    d = StepCost()
    p.add_argument("--fixed-ms", type=float, default=d.fixed_s * 1e3)
    p.add_argument("--prefill-token-ms", type=float, default=d.prefill_token_s * 1e3)
    p.add_argument("--decode-seq-ms", type=float, default=d.decode_seq_s * 1e3)
    p.add_argument("--kv-token-us", type=float, default=d.kv_token_s * 1e6)
    p.add_argument("--max-batched-tokens", type=int, default=512)
    p.add_argument("--kv-tokens", type=int, default=46_000,
                   help="prefix-cache size per engine (default: ~1 GiB of SmolLM2 KV)")
    return p.parse_args(argv)


def parse_spec(spec: str) -> tuple[str, dict[str, float]]:
    name, _, rest = spec.partition(":")
    if name not in ("gpts", "multi_agent"):
        raise SystemExit(f"unknown workload {name!r}: gpts or multi_agent")
    sizes = {}
    for item in filter(None, rest.split(",")):
        key, _, value = item.partition("=")
        sizes[key.strip()] = float(value) if "." in value else int(value)
    return name, sizes


def load_tokenizer(path: str | None):
    from parrot.engine.loader import load_tokenizer as load
    from parrot.engine.model_files import resolve_model_dir

    return load(Path(path) if path else resolve_model_dir(None)[0])


async def run_one(name: str, sizes: dict, smoke: bool, engines: list[SimEngine],
                  policy: str) -> dict:
    sizes = dict(sizes)
    copies = int(sizes.pop("copies", 1))
    workload = WORKLOADS[name](smoke=smoke, overrides=sizes)
    manager = Manager(engines, placement=policy, sweep_interval=3600.0)
    runtime = ManagerRuntime(manager, Clock(asyncio.get_running_loop().time))
    await asyncio.gather(*(workload.run(runtime, f"sim{i}") for i in range(copies)))
    makespan = runtime.clock.now()
    manager.check_integrity()
    await manager.close()
    busy = [e.stats().busy_s for e in engines]
    samples = [s for s in runtime.samples if s.kind == workload.primary_kind]
    return {"workload": name, "sizes": workload.size, "copies": copies, "policy": policy,
            "engines": len(engines),
            "prefill_tokens": sum(e.stats().num_prefill_tokens for e in engines),
            "reused_tokens": sum(e.stats().num_cached_tokens for e in engines),
            "decode_tokens": sum(e.stats().num_decode_tokens for e in engines),
            "makespan_s": makespan,
            "mean_latency_s": statistics.fmean(s.latency for s in samples),
            "latency_unit": workload.primary_kind, "num_samples": len(samples),
            "busy_s": busy, "busy_spread": max(busy) / max(statistics.fmean(busy), 1e-9)}


def markdown(spec: str, rows: list[dict]) -> str:
    """One row per engine count; each cell lists the policies in order."""
    first = rows[0]
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    lines = [f"**{spec}** ({first['copies']} x {first['workload']} {first['sizes']}; latency "
             f"per {first['latency_unit']}; each cell: {' / '.join(policies)})", "",
             "| engines | prefill tokens | makespan (s) | mean latency (s) | busy spread |",
             "|---|---|---|---|---|"]
    for n in dict.fromkeys(r["engines"] for r in rows):
        by = {r["policy"]: r for r in rows if r["engines"] == n}
        cells = [" / ".join(fmt.format(by[p][key]) for p in policies) for key, fmt in
                 (("prefill_tokens", "{:,}"), ("makespan_s", "{:.2f}"),
                  ("mean_latency_s", "{:.2f}"), ("busy_spread", "{:.2f}"))]
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    cost = StepCost(args.fixed_ms / 1e3, args.prefill_token_ms / 1e3, args.decode_seq_ms / 1e3,
                    args.kv_token_us / 1e6)
    tokenizer = load_tokenizer(args.tokenizer)
    started = time.perf_counter()
    results: dict = {"step_cost": cost.__dict__, "max_batched_tokens": args.max_batched_tokens,
                     "kv_tokens": args.kv_tokens, "time_model": "virtual", "workloads": {}}
    for spec in args.workloads:
        name, sizes = parse_spec(spec)
        rows = []
        for n in args.engines:
            for policy in args.policies:
                engines = [SimEngine(tokenizer, f"sim engine {i}", cost,
                                     args.max_batched_tokens, kv_tokens=args.kv_tokens)
                           for i in range(n)]
                rows.append(run_virtual(run_one(name, sizes, args.smoke, engines, policy)))
                print(f"{spec} {n} {policy}: {rows[-1]['makespan_s']:.2f} s simulated",
                      file=sys.stderr)
        results["workloads"][spec] = rows
        print(markdown(spec, rows) + "\n")
    results["wall_s"] = time.perf_counter() - started
    print(f"({results['wall_s']:.1f} s of real time)", file=sys.stderr)
    if args.out:
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
