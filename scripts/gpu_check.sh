#!/usr/bin/env bash
# Every GPU check in one call on a fresh CUDA machine without network, in <= 8 minutes:
#   install   the wheels carried in .whl/ (made here by `python scripts/flashinfer_wheels.py`)
#   probe     the GPU, nvcc and ninja are there, and flashinfer imports
#   prebuild  every FlashInfer module Parrot uses (FA2, bf16, head_dim 64 and 128), one
#             parallel ninja run (scripts/flashinfer_prebuild.py), so no test waits on nvcc
#   tests     the `gpu` tests: FlashInfer kernels vs the float64 reference, the model on CUDA
#             vs transformers, a forked decode with cascade vs without, the engine on CUDA
#   bench     the cascade benchmark: FlashInfer cascade vs FlashInfer plain vs torch
# Each stage runs under `timeout` (its limit beside it below) and logs to $OUT/<stage>.log;
# $OUT/summary.json says what ran (scripts/gpu_check_report.py; at most 8 files come back
# from a device call, this writes 7). Exits non-zero, with the reason on stderr, when a
# stage fails or times out, or when no test ran (all skipped).
# $OUT defaults to ./gpu-out; PARROT_WHEELS to .whl. Needs python3 with torch, pytest,
# transformers and aiohttp (the device image has them).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
wheels="${PARROT_WHEELS:-.whl}"
work=$(mktemp -d)  # stage records and JIT listings, for the report
site="$work/site"  # the wheels' install target
mkdir -p "$out" "$site"
: >"$work/stages.tsv"
# The JIT cache the prebuild fills and the tests load from: the same place and the same
# FlashInfer environment for both, or the tests would rebuild.
export FLASHINFER_WORKSPACE_BASE=/tmp/parrot-flashinfer PYTHONUNBUFFERED=1
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# stage NAME SECONDS COMMAND...: COMMAND under `timeout SECONDS`, logged to $out/NAME.log;
# its exit status and time go to $work/stages.tsv.
stage() {
  local name=$1 limit=$2 start=$SECONDS rc
  shift 2
  echo "== $name (limit ${limit}s)"
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$work/stages.tsv"
  tail -n 4 "$out/$name.log"
  return "$rc"
}

# report: summary.json and the verdict; its exit status is the script's.
report() {
  timeout 30 python3 scripts/gpu_check_report.py "$work" "$out"
  exit $?
}

# fail NAME REASON: stage NAME failed before it could run; report.
fail() {
  echo "$2" >"$out/$1.log"
  printf '%s\t1\t0\t0\n' "$1" >>"$work/stages.tsv"
  report
}

jit_modules() {  # the FlashInfer modules built so far
  find "$FLASHINFER_WORKSPACE_BASE" -name '*.so' 2>/dev/null | sort
}

probe_py='import torch, flashinfer
assert torch.cuda.is_available(), "torch sees no GPU"
print("torch", torch.__version__, "flashinfer", flashinfer.__version__, torch.cuda.get_device_name())'

shopt -s nullglob
wheel_files=("$wheels"/*.whl)
[ ${#wheel_files[@]} -gt 0 ] || fail install "no wheels in $wheels/: carry it (made by python scripts/flashinfer_wheels.py)"
stage install 45 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$site" "${wheel_files[@]}" || report
stage probe 45 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv &&
  nvcc --version | tail -n 2 && echo "ninja $(ninja --version)" && python3 -c "$1"' probe "$probe_py" || report
stage prebuild 270 python3 scripts/flashinfer_prebuild.py || report
jit_modules >"$work/jit-before-tests.txt"
stage tests 150 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rs \
  --junitxml="$out/tests.xml" tests/kernels tests/engine
jit_modules >"$work/jit-after-tests.txt"
stage bench 45 python3 benchmarks/kernels_cascade.py --device cuda --iters 50 --block-size 16 1
report
