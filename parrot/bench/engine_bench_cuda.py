"""`parrot bench engine --device cuda`: the engine's prefill and decode steps on a GPU, with
the card's floors measured in the same run (device-to-device copy bandwidth, bf16 matmul
rate), decode with CUDA graphs and eagerly. `--shape` benchmarks a named model shape with
random weights (parrot.bench.random_model), so no checkpoint has to travel."""
from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time

import torch

from parrot.bench.engine_bench import DECODE_ROUNDS, DECODE_TOKENS, PROMPT_LEN, ROUNDS, _decode_step_ms, _fill_rate, _weight_bytes


def _cuda_ms(fn, iters: int) -> float:
    """Median ms of `fn` on the current stream, timed with CUDA events after a warm-up."""
    fn()
    times = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def measure_floors(device: str) -> dict:
    """Copy bandwidth (bytes read + written, 2 GiB device-to-device) and the bf16 matmul
    rate (8192^3, random data) of the card, median of 10 each."""
    src = torch.randn(2**29, device=device)  # 2 GiB of float32
    dst = torch.empty_like(src)
    copy_ms = _cuda_ms(lambda: dst.copy_(src), 10)
    del src, dst
    a, b = (torch.randn(8192, 8192, device=device, dtype=torch.bfloat16) for _ in range(2))
    mm_ms = _cuda_ms(lambda: a @ b, 10)
    return {"copy_gb_s": 2 * 2**31 / copy_ms / 1e6, "matmul_tflops_bf16": 2 * 8192**3 / mm_ms / 1e9,
            "gpu": torch.cuda.get_device_name(device)}


async def measure(args, model_dir: str, graphs: bool) -> dict:
    """Start (load + graph capture), prefill rate and decode steps of one engine."""
    from parrot.engine import Engine, EngineConfig, SamplingParams

    start = time.perf_counter()
    engine = await Engine(EngineConfig(
        model=model_dir, load_format=args.load_format, device=args.device, dtype=args.dtype,
        kv_memory_gb=args.kv_memory_gb, cuda_graphs=graphs, max_num_seqs=max(64, *args.batches))).start()
    out = {"start_s": time.perf_counter() - start, "graphs": engine.runner.graphs is not None}
    try:
        n = args.prefill_len
        out["prefill_tok_s"] = max([await _fill_rate(engine, n, rep) for rep in range(ROUNDS)])
        sp = SamplingParams(max_tokens=DECODE_TOKENS, ignore_eos=True)
        for batch in args.batches:
            out[f"decode_ms_b{batch}"] = min([await _decode_step_ms(engine, batch, sp) for _ in range(DECODE_ROUNDS)])
        runner = engine.runner
        out["weight_bytes"] = _weight_bytes(runner.model)
        out["kv_bytes_per_token"] = runner.kv_cache[:, :, 0, 0].numel() * runner.kv_cache.element_size()
        out["replays"] = runner.graphs.replays if runner.graphs else 0
        out["model"] = engine.model_name
    finally:
        await engine.stop()
    return out


def report(r: dict) -> str:
    bw = r["copy_gb_s"]
    lines = [f"{r['gpu']}: copy bandwidth {bw:.0f} GB/s (read + written), bf16 matmul "
             f"{r['matmul_tflops_bf16']:.0f} TFLOP/s (both measured in this run)",
             f"model {r['model']} ({r['dtype']}, {r['load_format']} weights), "
             f"{r['weight_bytes'] / 1e9:.2f} GB of weights read per step"]
    modes = [m for m in ("graphs", "eager") if m in r]
    for mode in modes:
        m = r[mode]
        lines.append(f"[{mode}] start {m['start_s']:.1f} s, prefill {m['prefill_tok_s']:.0f} tokens/s "
                     f"({r['prefill_len']}-token prompts), {m['replays']} graph replays")
    for b in r["batches"]:
        read = r["weight_bytes"] + b * (PROMPT_LEN + DECODE_TOKENS) * r["kv_bytes_per_token"]
        floor_ms = read / bw / 1e6  # the memory moves bw bytes a second, read or written
        parts = []
        for mode in modes:
            ms = r[mode][f"decode_ms_b{b}"]
            parts.append(f"{mode} {ms:6.2f} ms ({read / ms / 1e6:5.0f} GB/s, {floor_ms / ms:4.0%} of floor)")
        speedup = ""
        if len(modes) == 2:
            speedup = f"  graphs {r['eager'][f'decode_ms_b{b}'] / r['graphs'][f'decode_ms_b{b}']:.2f}x eager"
        lines.append(f"decode batch {b:<3} floor {floor_ms:5.2f} ms: " + ", ".join(parts) + speedup)
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    from parrot.bench.random_model import write_model_dir

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = str(write_model_dir(tmp, args.shape)) if args.shape else args.model
        r = {"dtype": args.dtype, "batches": args.batches, "prefill_len": args.prefill_len,
             "load_format": args.load_format, "shape": args.shape}
        r.update(measure_floors(args.device))
        modes = [("graphs", True)] + ([("eager", False)] if args.compare_eager else [])
        if args.no_cuda_graphs:
            modes = [("eager", False)]
        for mode, graphs in modes:
            r[mode] = asyncio.run(measure(args, model_dir, graphs))
            torch.cuda.empty_cache()
        first = r[modes[0][0]]
        r.update(model=first["model"], weight_bytes=first["weight_bytes"], kv_bytes_per_token=first["kv_bytes_per_token"])
    print(report(r), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=2)
