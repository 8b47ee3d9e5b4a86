"""`parrot bench apps`: argument parsing and the command (imports stay light until it runs)."""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODE_NAMES = ("parrot", "baseline", "baseline+cache")


def add_apps_parser(bench_subparsers: argparse._SubParsersAction,
                    parents: list[argparse.ArgumentParser]) -> None:
    p = bench_subparsers.add_parser(
        "apps", parents=parents, help="whole applications: parrot vs request-level baselines",
        description="Run LLM applications as Semantic-Variable programs (parrot) and as "
        "request-at-a-time OpenAI clients (baseline: prefix cache off; baseline+cache: on), "
        "against servers it starts one at a time unless --url/--baseline-url are given.")
    p.add_argument("--workload", default="all",
                   help="all, or names, comma-separated: chain_summary, map_reduce, "
                   "shared_prompt, gpts, multi_agent, mixed")
    p.add_argument("--scale", type=float, default=1.0, help="grow the workloads' sizes")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, one repeat (tests)")
    p.add_argument("--size", action="append", default=[], metavar="KEY=N",
                   help="override a size field of every selected workload that has it, "
                   "e.g. --size words=380 --size chunks=6 (repeatable)")
    p.add_argument("--repeats", type=int, help="runs per workload and mode (default 3; "
                   "1 with --smoke); the median is reported")
    p.add_argument("--modes", default=",".join(MODE_NAMES),
                   help="comma-separated subset of: " + ", ".join(MODE_NAMES))
    p.add_argument("--out", default="bench-out", help="directory for the table, JSON, plots")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    g = p.add_argument_group("servers")
    g.add_argument("--url", help="a running Parrot server (prefix cache on) for the parrot "
                   "and baseline+cache modes, instead of starting one")
    g.add_argument("--baseline-url", help="an OpenAI-compatible server (e.g. vLLM) for the "
                   "baseline modes; its own cache setting applies, so choose one mode with "
                   "--modes")
    g.add_argument("--baseline-model", help="model name for --baseline-url (default: its "
                   "first /v1/models entry)")
    g.add_argument("--model", help="model of the servers started (default: embedded SmolLM2); "
                   "its chat template also renders the baseline's prompts, so give the model "
                   "a --baseline-url server runs")
    g.add_argument("--rtt-ms", type=float, default=0.0, metavar="N",
                   help="emulated network round trip between the clients and every server "
                   "(a delaying proxy on loopback: N/2 ms each way, every mode alike)")
    g.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16", "float16"))
    g.add_argument("--serve-arg", action="append", default=[], metavar="ARG",
                   help="extra `parrot serve` argument for started servers (repeatable), "
                   "e.g. --serve-arg=--kv-memory-gb=2")
    p.set_defaults(func=cmd_apps)


def _parse_size(item: str) -> tuple[str, int]:
    key, _, value = item.partition("=")
    if not key or not value.isdigit():
        raise ValueError(f"--size wants KEY=N, got {item!r}")
    return key, int(value)


def cmd_apps(args: argparse.Namespace) -> int:
    from parrot.bench import report
    from parrot.bench.runner import Options, run
    from parrot.bench.workloads import select

    modes = tuple(m.strip() for m in args.modes.split(",") if m.strip())
    bad = [m for m in modes if m not in MODE_NAMES]
    if bad or not modes:
        raise SystemExit(f"parrot bench apps: unknown mode(s) {bad}; choose from {MODE_NAMES}")
    try:
        overrides = dict(_parse_size(item) for item in args.size)
        workloads = [cls(args.scale, args.smoke, overrides) for cls in select(args.workload)]
    except ValueError as e:
        raise SystemExit(f"parrot bench apps: {e}") from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    options = Options(modes=modes, repeats=args.repeats or (1 if args.smoke else 3),
                      url=args.url, baseline_url=args.baseline_url,
                      baseline_model=args.baseline_model, dtype=args.dtype, model=args.model,
                      serve_args=list(args.serve_arg), rtt_ms=args.rtt_ms)
    meta = machine_info()
    started = time.time()
    results = run(workloads, options)
    meta.update(wall_seconds=round(time.time() - started, 1), loadavg_end=os.getloadavg(),
                repeats=options.repeats, modes=list(modes), dtype=args.dtype, rtt_ms=args.rtt_ms,
                scale=args.scale, smoke=args.smoke)
    summary = report.summarize(workloads, results)
    tables = f"{report.table(summary)}\n\n{report.latency_table(summary)}\n"
    (out / "apps.md").write_text(tables)
    (out / "apps.json").write_text(json.dumps(
        {"meta": meta, "summary": summary, "runs": [r.to_json() for r in results]}, indent=1))
    written = [] if args.no_plots else _plots(summary, out)
    print(tables)
    print(f"{meta['command']}\n{len(results)} runs in {meta['wall_seconds']} s; wrote "
          f"{out / 'apps.json'}, {out / 'apps.md'}" + "".join(f", {p}" for p in written))
    return 0


def _plots(summary: dict[str, Any], out: Path) -> list[Path]:
    try:
        from parrot.bench.plots import write_plots
    except ImportError:  # pragma: no cover - matplotlib missing
        print("matplotlib is not installed (pip install 'parrot-serve[bench]'): no plots",
              file=sys.stderr)
        return []
    return write_plots(summary, out)


def machine_info() -> dict[str, Any]:
    """What a reader needs to judge the numbers: the command, CPU, load, code version."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, check=False).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"command": "parrot " + shlex.join(sys.argv[1:]), "cpu": cpu,
            "num_cpus": os.cpu_count(), "python": platform.python_version(),
            "git_commit": commit, "loadavg_start": os.getloadavg(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
