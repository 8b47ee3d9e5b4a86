"""Compile, ahead and in one parallel ninja run, every FlashInfer module Parrot's CUDA path
loads, so no test or request waits on nvcc.

FlashInfer 0.7.2 ships CUDA sources, not kernels: each module JIT-compiles on first use,
one after another. Parrot's backend (parrot_kernels/flashinfer_backend.py) asks for one kernel
family, FA2 (`backend="fa2"` on every wrapper), so a step loads:
  * per (dtype, head_dim), FA2's batch-prefill module: paged prefill, every cascade level
    and tensor-core decode all run it (`get_batch_prefill_module("fa2", ...)`, whose FA2
    "primary" build FlashInfer's own AOT list makes with the same generator used here);
  * once, the "cascade" module (merge_state_in_place, for cascade levels).
`flashinfer.jit.build_jit_specs` writes one ninja file over all of them, so nvcc runs in
parallel across modules; the built libraries land in FlashInfer's JIT cache, where the
wrappers find them (same environment, same cache: scripts/gpu_check.sh keeps both).

    python scripts/flashinfer_prebuild.py                # build (a CUDA machine with nvcc)
    python scripts/flashinfer_prebuild.py --list         # the modules (no GPU needed)
    FLASHINFER_CUDA_ARCH_LIST=9.0a python scripts/flashinfer_prebuild.py --generate
                                                         # write their sources only (no GPU)

`required_modules` names the modules without importing FlashInfer; the CPU tests check
that list against what the backend asks its (stand-in) wrappers for.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from typing import NamedTuple

from parrot_kernels.flashinfer_backend import KERNEL_BACKEND

DTYPES = ("bfloat16",)  # what the GPU checks run
HEAD_DIMS = (64, 128)  # SmolLM2's and Llama-3's (FA2 needs >= 64)


class Module(NamedTuple):
    """One FlashInfer JIT module, named without importing FlashInfer."""

    kind: str  # "batch_prefill" or "cascade"
    backend: str | None = None  # kernel family, batch_prefill only
    dtype: str | None = None  # q, kv and output dtype, batch_prefill only
    head_dim: int | None = None  # batch_prefill only


def required_modules(dtypes=DTYPES, head_dims=HEAD_DIMS) -> list[Module]:
    prefill = [Module("batch_prefill", KERNEL_BACKEND, dtype, d) for dtype in dtypes for d in head_dims]
    return prefill + [Module("cascade")]


def jit_spec(module: Module):
    """FlashInfer's JitSpec of `module`, with the arguments its wrappers pass for Parrot's
    plans: int32 page tables, no RoPE in the kernel, no sliding window or soft cap, no fp16
    QK reduction. Writes the module's generated sources (FlashInfer does so on creation)."""
    import torch

    if module.kind == "cascade":
        from flashinfer.jit.cascade import gen_cascade_module

        return gen_cascade_module()
    if module.kind != "batch_prefill" or module.backend != "fa2":
        raise ValueError(f"no JIT spec for {module}")  # FA3's generator differs
    from flashinfer.jit.attention.modules import _gen_batch_prefill_primary_module

    dtype = getattr(torch, module.dtype)
    return _gen_batch_prefill_primary_module(
        "fa2", dtype, dtype, dtype, torch.int32, module.head_dim, module.head_dim,
        0, False, False, False,  # pos_encoding_mode NONE, sliding window, soft cap, fp16 QK reduction
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtypes", nargs="+", default=list(DTYPES))
    parser.add_argument("--head-dims", nargs="+", type=int, default=list(HEAD_DIMS))
    parser.add_argument("--list", action="store_true", help="print the modules and stop")
    parser.add_argument("--generate", action="store_true", help="write the modules' sources, build nothing")
    parser.add_argument("--verbose", action="store_true", help="ninja's full output")
    args = parser.parse_args()
    modules = required_modules(args.dtypes, args.head_dims)
    if args.list:
        print("\n".join(json.dumps(m._asdict()) for m in modules))
        return 0
    start = time.perf_counter()
    specs = [jit_spec(m) for m in modules]
    for module, spec in zip(modules, specs):
        print(f"{spec.name}: {len(spec.sources)} sources ({module.kind})", flush=True)
    if args.generate:
        return 0
    from flashinfer.jit import build_jit_specs

    build_jit_specs(specs, verbose=args.verbose)
    missing = [spec.name for spec in specs if not spec.is_compiled]
    print(f"built {len(specs) - len(missing)}/{len(specs)} modules in {time.perf_counter() - start:.0f} s")
    if missing:
        print(f"not built: {missing}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
