"""`parrot` command line: `parrot serve` (more subcommands plug in beside it; `generate.py`
is `parrot generate`). Part of the parrot-serve distribution (docs/packages.md).

Engine flags are shared: `add_engine_args` declares them and
`engine_config_from_args` maps them onto EngineConfig, so every subcommand that
builds an engine (serve, generate, bench) reads them the same way.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from parrot.engine import EngineConfig

LOG_LEVELS = ("debug", "info", "warning", "error")


def add_engine_args(parser: argparse.ArgumentParser) -> None:
    """Flags that configure an engine. Unset flags keep EngineConfig's defaults."""
    g = parser.add_argument_group("engine")
    g.add_argument("--model", help="Hugging Face directory or .gguf file "
                   "(default: the embedded SmolLM2-135M-Instruct)")
    g.add_argument("--dtype", choices=("float32", "bfloat16", "float16"))
    g.add_argument("--device", help="torch device, e.g. cpu or cuda:0")
    g.add_argument("--kv-memory-gb", type=float, help="memory for the paged KV cache "
                   "(default: 1 on CPU; on CUDA see --gpu-memory-utilization)")
    g.add_argument("--gpu-memory-utilization", type=float, metavar="F",
                   help="CUDA without --kv-memory-gb: the KV cache takes this fraction of the "
                   "device memory free once the weights are loaded (default 0.9)")
    g.add_argument("--block-size", type=int, help="tokens per KV block")
    g.add_argument("--max-num-batched-tokens", type=int, help="token budget of one step")
    g.add_argument("--max-num-seqs", type=int, help="most requests in one batch")
    g.add_argument("--latency-token-budget", type=int,
                   help="step budget of other work's prefills while latency-critical work runs")
    g.add_argument("--max-model-len", type=int, help="context length (default: the model's)")
    g.add_argument("--latency-step-factor", type=float, metavar="X",
                   help="while latency-critical work runs, other work's prefills may grow a step "
                   "to X times the predicted step of the latency work alone (default 1.5)")
    g.add_argument("--quantization", choices=("int8",),
                   help="int8: int8 weight-only decode projections (CPU bf16; faster decode, "
                   "outputs differ slightly)")
    g.add_argument("--no-prefix-caching", action="store_true",
                   help="do not reuse cached KV of earlier prompts")
    g.add_argument("--no-cascade", action="store_true",
                   help="plain paged attention even where sequences share a prefix (to compare)")
    g.add_argument("--cascade-min-saved-tokens", type=int, metavar="N",
                   help="read a shared prefix once per group only where that saves >= N token "
                   "reads per layer, from >= 2 sharers (default on CPU: 10000 and >= 16 sharers with the "
                   "CPU kernels, 2048 eager; every shared block on CUDA)")
    g.add_argument("--no-cpu-kernels", action="store_true",
                   help="the eager torch reference path instead of Parrot's fused CPU kernels")
    g.add_argument("--no-step-runner", action="store_true",
                   help="run each step layer by layer from Python instead of one C++ call per step "
                   "(the same CPU kernels; to compare)")
    g.add_argument("--linear-kernel", choices=("auto", "parrot", "onednn", "torch"),
                   help="bf16 CPU projections: auto (oneDNN on AMX CPUs, else Parrot's kernel: AVX2, "
                   "or AVX-512 with AVX-512-BF16), or one of them")
    g.add_argument("--load-format", choices=("auto", "dummy"),
                   help="dummy: random weights of the model's config.json, the checkpoint unread "
                   "(for benchmarks of a model's shape)")
    g.add_argument("--no-cuda-graphs", action="store_true",
                   help="CUDA: run decode steps eagerly instead of replaying captured CUDA graphs")


def engine_config_from_args(args: argparse.Namespace) -> EngineConfig:
    from parrot.engine import EngineConfig

    values = {
        "model": args.model, "dtype": args.dtype, "device": args.device,
        "kv_memory_gb": args.kv_memory_gb, "block_size": args.block_size,
        "gpu_memory_utilization": getattr(args, "gpu_memory_utilization", None),
        "max_num_batched_tokens": args.max_num_batched_tokens,
        "max_num_seqs": args.max_num_seqs, "max_model_len": args.max_model_len,
        "latency_token_budget": getattr(args, "latency_token_budget", None),
        "latency_step_factor": getattr(args, "latency_step_factor", None),
        "quantization": getattr(args, "quantization", None),
        "cascade_min_saved_tokens": getattr(args, "cascade_min_saved_tokens", None),
        "linear_kernel": getattr(args, "linear_kernel", None),
        "load_format": getattr(args, "load_format", None),
    }
    config = EngineConfig(**{k: v for k, v in values.items() if v is not None})
    config.enable_prefix_caching = not args.no_prefix_caching
    config.enable_cascade = not getattr(args, "no_cascade", False)
    config.cpu_kernels = not getattr(args, "no_cpu_kernels", False)
    config.step_runner = not getattr(args, "no_step_runner", False)
    config.cuda_graphs = not getattr(args, "no_cuda_graphs", False)
    return config


def common_parser() -> argparse.ArgumentParser:
    """Flags every subcommand takes (pass as `parents=[common_parser()]`)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--log-level", choices=LOG_LEVELS, default="info")
    return parser


def _add_serve(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("serve", parents=[common_parser()],
                              help="run the HTTP server (OpenAI-compatible and native)")
    add_engine_args(p)
    g = p.add_argument_group("server")
    g.add_argument("--host", default="127.0.0.1")
    g.add_argument("--port", type=int, default=8000, help="0 picks a free port (logged)")
    g.add_argument("--served-model-name", help="model name the API answers to "
                   "(default: the model's name)")
    g.add_argument("--api-key", default=os.environ.get("PARROT_API_KEY"),
                   help="require 'Authorization: Bearer KEY' (default: $PARROT_API_KEY)")
    g.add_argument("--num-engines", type=int, default=1, help="engines to run side by side")
    r = p.add_argument_group("ray (engines as Ray actors across machines; docs/ray.md)")
    r.add_argument("--ray-address", help="'auto' or HOST:PORT of a running Ray cluster: run "
                   "each engine as a Ray actor there (pip install 'parrot-serve[ray]')")
    r.add_argument("--engines-per-node", type=_positive_int,
                   help="pin this many engines on each node (default: Ray spreads them)")
    r.add_argument("--cpus-per-engine", type=float, default=1.0,
                   help="CPUs each engine actor reserves on a CPU node (GPU nodes: 1 GPU)")
    g.add_argument("--shutdown-timeout", type=float, default=10.0,
                   help="seconds in-flight requests get to finish on SIGINT/SIGTERM")
    _add_limit_args(p)
    p.set_defaults(func=_cmd_serve)


LIMIT_FLAGS = ("max_sessions", "max_session_calls", "max_session_variables", "max_queue")
# oneDNN and ideep keep an LRU cache of primitives per input shape, 1024 entries each by
# default; under continuous batching (a new shape nearly every step) on CPU bf16 they grow
# the server's memory for a long time. A small cache keeps it flat at the same throughput
# (docs/reliability.md). Set the variables yourself to override.
ONEDNN_CACHES = {"ONEDNN_PRIMITIVE_CACHE_CAPACITY": "64", "LRU_CACHE_CAPACITY": "64"}


def _add_limit_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("limits (past one: 429, with Retry-After when it clears "
                                  "with time; docs/reliability.md)")
    g.add_argument("--max-body-bytes", type=_positive_int,
                   help="largest request body; larger ones get 413 (default 8 MiB)")
    g.add_argument("--max-sessions", type=_positive_int, help="open sessions (default 10000)")
    g.add_argument("--max-session-calls", type=_positive_int,
                   help="unfinished calls one session may have (default 1024)")
    g.add_argument("--max-session-variables", type=_positive_int,
                   help="variables one session may have (default 16384)")
    g.add_argument("--max-queue", type=_positive_int, help="engine requests waiting plus "
                   "unfinished calls, over all sessions (default 4096)")
    g.add_argument("--enable-test-hooks", action="store_true",
                   help="open the fault-injection routes tests use (never in production)")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _server_config(args: argparse.Namespace):
    from parrot.manager.limits import Limits
    from parrot.server.config import ServerConfig

    limits = {name: getattr(args, name) for name in LIMIT_FLAGS if getattr(args, name)}
    body = {"max_body_bytes": args.max_body_bytes} if args.max_body_bytes else {}
    return ServerConfig(served_model_name=args.served_model_name,
                        api_key=args.api_key or None, shutdown_timeout=args.shutdown_timeout,
                        limits=Limits(**limits), enable_test_hooks=args.enable_test_hooks,
                        **body)


def _cmd_serve(args: argparse.Namespace) -> int:
    for name, value in ONEDNN_CACHES.items():
        os.environ.setdefault(name, value)  # before torch loads
    from parrot.server.serve import RayDeployment, run, serve

    engine_config = engine_config_from_args(args)
    engine_configs = [dataclasses.replace(engine_config) for _ in range(args.num_engines)]
    ray = None if args.ray_address is None else RayDeployment(
        args.ray_address, args.engines_per_node, args.cpus_per_engine)
    run(serve(engine_configs, _server_config(args), args.host, args.port, ray))
    return 0


def _add_generate(subparsers: argparse._SubParsersAction) -> None:
    from parrot.cli.generate import add_generate_args

    p = subparsers.add_parser("generate", parents=[common_parser()],
                              help="generate offline on the engine (no server)")
    add_engine_args(p)
    add_generate_args(p)
    p.set_defaults(func=_cmd_generate)


def _cmd_generate(args: argparse.Namespace) -> int:
    import asyncio

    from parrot.cli.generate import generate

    asyncio.run(generate(engine_config_from_args(args), args))
    return 0


def _add_bench(subparsers: argparse._SubParsersAction) -> None:
    from parrot.bench.cli import add_apps_parser
    from parrot.bench.engine_bench import add_engine_parser

    p = subparsers.add_parser("bench", help="benchmarks (apps: whole applications)")
    bench = p.add_subparsers(dest="bench_command", required=True, metavar="BENCH")
    add_apps_parser(bench, parents=[common_parser()])
    add_engine_parser(bench, parents=[common_parser()])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="parrot", description="Parrot: serving LLM "
                                     "applications with Semantic Variables")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_serve(subparsers)
    _add_generate(subparsers)
    _add_bench(subparsers)
    return parser


def setup_logging(level: str) -> None:
    logging.basicConfig(level=level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if level != "debug":  # one line per request only when debugging
        logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    return args.func(args)
