"""Parrot's own CPU kernels (parrot_kernels/csrc, AVX2 + FMA, bf16; the projections on AVX-512-BF16
where the CPU has it): build, load, call.

The C++ sources register `torch.ops.parrot.*`; they are compiled once per machine with
`-march=native` (`python -m parrot_kernels` at setup, else on first use, ~40 s)
into a cache folder keyed by the sources and the CPU, so a copied cache never runs on a
CPU it was not built for. Where they cannot be built or loaded (no compiler, no AVX2,
not x86-64) `load()` is False and the engine runs its eager torch path.

Ops (tensors in, tensors out; bf16 activations and cache, fp32 accumulation):
  pack_linear_weight(w [N, K]) -> [ceil(N/16), K (even with AVX-512-BF16), 16];
  linear_packed(x [M, K], packed, N, bias); packed_rows(packed, ids, K) -> rows of w;
  rms_norm(x, residual | None, w, eps); silu_mul(gate_up); rope_write_kv(...);
  paged_decode_attention(q, k_cache, v_cache, tables int32, kv_lens int32, scale);
  paged_prefill_attention(q, k_cache, v_cache, blocks, kv_len, causal, scale).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch

log = logging.getLogger(__name__)

SOURCES = ("linear.cpp", "attention.cpp", "prefill_attention.cpp", "merge_state.cpp", "elementwise.cpp",
           "decoder_layers.cpp")
_CSRC = Path(__file__).parent / "csrc"


@functools.cache
def _first_cpu() -> dict[str, str]:
    """The first CPU's entries in /proc/cpuinfo (empty where there is none), read once."""
    try:
        block = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in block.splitlines())}


def cpu_flags() -> frozenset[str]:
    """The first CPU's flags (empty where /proc/cpuinfo has none)."""
    return frozenset(_first_cpu().get("flags", "").split())


def cpu_model() -> str:
    """The first CPU's model name ("" where /proc/cpuinfo has none)."""
    return _first_cpu().get("model name", "")


def cpu_supported() -> bool:
    """x86-64 with AVX2 and FMA (every kernel here is written for them)."""
    return platform.machine() in ("x86_64", "AMD64") and {"avx2", "fma"} <= cpu_flags()


def _build_tag() -> str:
    h = hashlib.sha256()
    for name in SOURCES + ("vec.h", "gemm_tile.h", "linear_pairs.h", "paged_checks.h", "parallel.h", "ops.h"):
        h.update((_CSRC / name).read_bytes())
    h.update(torch.__version__.encode())
    h.update(_march().encode())
    cpu = _first_cpu()
    h.update((cpu.get("model name", "") + cpu.get("flags", "")).encode())
    return h.hexdigest()[:16]


def _march() -> str:
    """The ISA the kernels are built for: this CPU's, or $PARROT_KERNEL_MARCH (e.g. `haswell`
    to build and test the AVX2 code on an AVX-512 machine)."""
    return os.environ.get("PARROT_KERNEL_MARCH", "native")


def build_dir() -> Path:
    root = Path(os.environ.get("PARROT_KERNEL_CACHE", Path.home() / ".cache" / "parrot" / "kernels"))
    return root / _build_tag()


@functools.cache
def load() -> bool:
    """Load the kernels, building them first if no build is cached (once per process)."""
    return cpu_supported() and os.environ.get("PARROT_CPU_KERNELS", "1") != "0" and _load()


def _load() -> bool:
    directory = build_dir()
    lib = directory / "parrot_cpu_ops.so"
    try:
        if not lib.exists():
            _compile(directory)
        torch.ops.load_library(str(lib))
        return True
    except Exception as e:  # no compiler, a failed build: the eager path serves
        log.warning("Parrot CPU kernels unavailable (%s); using the eager torch path", e)
        return False


def _compile(directory: Path) -> None:
    from torch.utils.cpp_extension import load as load_extension

    directory.mkdir(parents=True, exist_ok=True)
    print(f"parrot: compiling CPU kernels into {directory} (once per machine, ~40 s)", file=sys.stderr, flush=True)
    start = time.perf_counter()
    load_extension(
        name="parrot_cpu_ops", sources=[str(_CSRC / s) for s in SOURCES], build_directory=str(directory),
        extra_cflags=["-O3", f"-march={_march()}", "-fopenmp", "-DNDEBUG"], is_python_module=False, verbose=False,
    )
    print(f"parrot: CPU kernels built in {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)


def supports_shape(hidden: int, intermediate: int, num_heads: int, num_kv_heads: int, head_dim: int) -> bool:
    """The model shapes the kernels are written for (others run the eager path)."""
    return (hidden % 8 == 0 and intermediate % 8 == 0 and head_dim % 16 == 0 and head_dim <= 256
            and num_heads % num_kv_heads == 0 and num_heads // num_kv_heads <= 16)


def usable_for(dtype: torch.dtype, device: torch.device | str) -> bool:
    """The kernels serve bf16 on CPU; load them (building once) if that is what is asked."""
    return torch.device(device).type == "cpu" and dtype == torch.bfloat16 and load()
