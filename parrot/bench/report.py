"""Summaries of the runs: medians, latency percentiles, prefill counts, ratios, a table.

Every number of a workload is computed from runs of the same invocation; ratios compare
parrot with each baseline mode measured in that same invocation (medians of the repeats).
"""
from __future__ import annotations

import math
import statistics
from typing import Any

from parrot.bench.runner import BASELINE, BASELINE_CACHE, MODES, PARROT, RunResult
from parrot.bench.runtime import Sample
from parrot.bench.workload import Workload


def percentile(values: list[float], q: float) -> float | None:
    """The q-th percentile (0-100), linear between ranks; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(rank), math.ceil(rank)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (rank - lo)


def kind_stats(samples: list[Sample]) -> dict[str, Any]:
    """Latency percentiles of one kind of sample, pooled over the repeats."""
    lat = [s.latency for s in samples]
    per_token = [s.per_token * 1000 for s in samples]
    ttft = [s.ttft for s in samples if s.ttft is not None]
    tpot = [s.tpot * 1000 for s in samples if s.tpot is not None]
    out: dict[str, Any] = {"n": len(samples)}
    for q in (50, 90, 99):
        out[f"latency_p{q}_s"] = percentile(lat, q)
        out[f"per_token_p{q}_ms"] = percentile(per_token, q)
        out[f"ttft_p{q}_s"] = percentile(ttft, q)
        out[f"tpot_p{q}_ms"] = percentile(tpot, q)
    return out


def mode_summary(workload: Workload, runs: list[RunResult]) -> dict[str, Any]:
    seconds = [r.seconds for r in runs]
    median_s = statistics.median(seconds)
    prefill, cached, generated = [], [], []
    for r in runs:
        if r.engine is not None:
            prefill.append(r.engine["num_prefill_tokens"])
            cached.append(r.engine["num_cached_tokens"])
            generated.append(r.engine["num_generated_tokens"])
        elif r.usage is not None:  # another server: what its usage reports
            prefill.append(r.usage["prompt_tokens"] - r.usage["cached_tokens"])
            cached.append(r.usage["cached_tokens"])
            generated.append(r.usage["completion_tokens"])
    kinds = sorted({s.kind for r in runs for s in r.samples})
    cpu = [r.server_cpu_s for r in runs if r.server_cpu_s is not None]
    return {
        "runs": len(runs), "seconds": seconds, "seconds_median": median_s,
        "server_cpu_s": cpu, "server_cpu_s_median": statistics.median(cpu) if cpu else None,
        "seconds_min": min(seconds), "seconds_max": max(seconds),
        "generated_tokens": generated,
        "tokens_per_s": workload.num_generated() / median_s,
        "prefill_tokens": statistics.median(prefill) if prefill else None,
        "prefill_tokens_runs": prefill,
        "cached_tokens": statistics.median(cached) if cached else None,
        "kinds": {k: kind_stats([s for r in runs for s in r.samples if s.kind == k])
                  for k in kinds},
        "used_blocks_after": [r.used_blocks_after for r in runs],
        "loadavg": [round(r.loadavg, 2) for r in runs],
    }


def summarize(workloads: list[Workload], results: list[RunResult]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for w in workloads:
        modes = {m: mode_summary(w, [r for r in results if r.workload == w.name and r.mode == m])
                 for m in MODES if any(r.workload == w.name and r.mode == m for r in results)}
        out[w.name] = {**w.describe(), "primary_kind": w.primary_kind, "modes": modes,
                       "ratios": ratios(modes)}
    return out


def ratios(modes: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """parrot / baseline-mode, for end-to-end time and for prefill tokens computed."""
    out: dict[str, float | None] = {}
    if PARROT not in modes:
        return out
    p = modes[PARROT]
    for base in (BASELINE, BASELINE_CACHE):
        if base not in modes:
            continue
        b = modes[base]
        out[f"seconds_parrot/{base}"] = p["seconds_median"] / b["seconds_median"]
        if p["server_cpu_s_median"] and b["server_cpu_s_median"]:
            out[f"cpu_parrot/{base}"] = p["server_cpu_s_median"] / b["server_cpu_s_median"]
        if p["prefill_tokens"] is not None and b["prefill_tokens"]:
            out[f"prefill_parrot/{base}"] = p["prefill_tokens"] / b["prefill_tokens"]
    return out


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} ({1 / value:.1f}x)"


def table(summary: dict[str, Any]) -> str:
    """The main Markdown table: one row per workload and mode."""
    lines = [("| workload | mode | e2e s (median) | server CPU s | gen tok/s | "
              "latency p50 / p90 / p99 s | prefill tokens computed | cached tokens | "
              "parrot/baseline e2e | parrot/baseline+cache e2e |"),
             "|---|---|---:|---:|---:|---|---:|---:|---:|---:|"]
    for name, w in summary.items():
        for mode, m in w["modes"].items():
            k = m["kinds"].get(w["primary_kind"], {})
            lat = " / ".join(_fmt(k.get(f"latency_p{q}_s")) for q in (50, 90, 99))
            r = w["ratios"] if mode == PARROT else {}
            lines.append(
                f"| {name} | {mode} | {_fmt(m['seconds_median'])} | "
                f"{_fmt(m['server_cpu_s_median'], 1)} | {_fmt(m['tokens_per_s'], 1)} | "
                f"{lat} ({w['primary_kind']}) | "
                f"{_fmt(m['prefill_tokens'], 0)} | {_fmt(m['cached_tokens'], 0)} | "
                f"{_ratio(r.get(f'seconds_parrot/{BASELINE}'))} | "
                f"{_ratio(r.get(f'seconds_parrot/{BASELINE_CACHE}'))} |")
    return "\n".join(lines)


def latency_table(summary: dict[str, Any]) -> str:
    """Per kind of request: normalized latency (ms per generated token), TTFT, TPOT."""
    lines = [("| workload | kind | mode | n | latency p50 / p90 s | ms/token p50 / p90 | "
              "TTFT p50 / p90 s | TPOT p50 / p90 ms |"),
             "|---|---|---|---:|---|---|---|---|"]
    for name, w in summary.items():
        kinds = sorted({k for m in w["modes"].values() for k in m["kinds"]})
        for kind in kinds:
            for mode, m in w["modes"].items():
                k = m["kinds"].get(kind)
                if k:
                    lines.append(f"| {name} | {kind} | {mode} | {k['n']} | "
                                 f"{_pair(k, 'latency_{}_s')} | {_pair(k, 'per_token_{}_ms', 0)} | "
                                 f"{_pair(k, 'ttft_{}_s')} | {_pair(k, 'tpot_{}_ms', 0)} |")
    return "\n".join(lines)


def _pair(stats: dict[str, Any], key: str, digits: int = 2) -> str:
    """p50 / p90 of `key` (a format with {} for the percentile)."""
    return f"{_fmt(stats[key.format('p50')], digits)} / {_fmt(stats[key.format('p90')], digits)}"
