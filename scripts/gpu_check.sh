#!/usr/bin/env bash
# Every GPU check in one call on a fresh CUDA machine without network, within a budget
# (GPU_CHECK_BUDGET seconds, default 540, so a second try fits a 15-minute lease):
#   install   the wheels carried in .whl/ (made here by `python scripts/flashinfer_wheels.py`:
#             FlashInfer, its tvm-ffi, llguidance); a carried .whl/flashinfer-aot.tar.gz (the
#             modules an earlier run built) goes into FlashInfer's AOT folder
#   probe     the GPU, nvcc and ninja are there, and flashinfer imports
#   prebuild  every FlashInfer module Parrot uses (FA2, bf16, head_dim 64 and 128), one
#             parallel ninja run (scripts/flashinfer_prebuild.py), so no test waits on nvcc;
#             skipped when the carried AOT modules hold them; the built modules are packed
#             into $OUT/flashinfer-aot.tar.gz for the next run
#   tests     the `gpu` tests: FlashInfer kernels vs the float64 reference, the model on CUDA
#             vs transformers, cascade vs plain, decode graphs vs eager, the engine on CUDA
#   bench     the cascade benchmark: FlashInfer cascade vs FlashInfer plain vs torch
#   engine-*  `parrot bench engine --device cuda` on random-weight Llama-3-8B and SmolLM2
#             shapes: decode with CUDA graphs and eagerly, against the card's floors
#   apps      `parrot bench apps` (the six workloads, SV vs plain OpenAI on Parrot) on the
#             GPU, SmolLM2's tokenizer (.whl/smollm2-dummy) with random weights
# Each stage runs under `timeout` (its own limit, cut to what is left of the budget) and logs
# to $WORK/logs/<stage>.log; the report joins them into $OUT/stages.log and writes
# $OUT/summary.json (at most 8 files come back from a device call; this writes 7). Exits
# non-zero, with the reason on stderr, when a stage fails or times out, or when no test
# ran (all skipped). $OUT defaults to ./gpu-out; PARROT_WHEELS to .whl. Needs python3 with
# torch, pytest, transformers and aiohttp (the device image has them).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
wheels="${PARROT_WHEELS:-.whl}"
budget="${GPU_CHECK_BUDGET:-540}"
work=$(mktemp -d)  # stage records, logs and JIT listings, for the report
site="$work/site"  # the wheels' install target
mkdir -p "$out" "$site" "$work/logs"
: >"$work/stages.tsv"
# The JIT cache the prebuild fills and the tests load from: the same place and the same
# FlashInfer environment for both, or the tests would rebuild.
export FLASHINFER_WORKSPACE_BASE="${FLASHINFER_WORKSPACE_BASE:-/tmp/parrot-flashinfer}" PYTHONUNBUFFERED=1
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! command -v nvcc >/dev/null && [ -x /usr/local/cuda/bin/nvcc ]; then
  export PATH="/usr/local/cuda/bin:$PATH"
fi

# stage NAME SECONDS COMMAND...: COMMAND under `timeout` (SECONDS, or what is left of the
# budget if less), logged to $work/logs/NAME.log; its exit status and time go to stages.tsv.
stage() {
  local name=$1 limit=$2 start=$SECONDS rc left
  shift 2
  left=$((budget - SECONDS - 20))  # 20 s kept for the report
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -lt 5 ]; then
    echo "no time left in the ${budget}s budget" >"$work/logs/$name.log"
    printf '%s\t124\t0\t0\n' "$name" >>"$work/stages.tsv"
    return 124
  fi
  echo "== $name (limit ${limit}s, at ${SECONDS}s)"
  timeout --kill-after=10 "$limit" "$@" >"$work/logs/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$((SECONDS - start))" "$limit" >>"$work/stages.tsv"
  tail -n 4 "$work/logs/$name.log"
  return "$rc"
}

# report: stages.log, summary.json and the verdict; its exit status is the script's.
report() {
  timeout 30 python3 scripts/gpu_check_report.py "$work" "$out"
  exit $?
}

# fail NAME REASON: stage NAME failed before it could run; report.
fail() {
  echo "$2" >"$work/logs/$1.log"
  printf '%s\t1\t0\t0\n' "$1" >>"$work/stages.tsv"
  report
}

jit_modules() {  # the FlashInfer modules built so far
  find "$FLASHINFER_WORKSPACE_BASE" -name '*.so' 2>/dev/null | sort
}

pack_modules() {  # the built modules as FlashInfer's AOT layout: <name>/<name>.so
  local list
  list=$(cd "$FLASHINFER_WORKSPACE_BASE" 2>/dev/null && find . -name '*.so' -path '*cached_ops*' | sort)
  [ -n "$list" ] || return 0
  mkdir -p "$work/aot"
  for so in $list; do
    name=$(basename "$so" .so)
    mkdir -p "$work/aot/$name" && cp "$FLASHINFER_WORKSPACE_BASE/$so" "$work/aot/$name/"
  done
  tar -C "$work/aot" -czf "$out/flashinfer-aot.tar.gz" .
  ls -la "$out/flashinfer-aot.tar.gz"
}

probe_py='import torch, flashinfer
assert torch.cuda.is_available(), "torch sees no GPU"
print("torch", torch.__version__, "flashinfer", flashinfer.__version__, torch.cuda.get_device_name())'

shopt -s nullglob
wheel_files=("$wheels"/*.whl)
[ ${#wheel_files[@]} -gt 0 ] || fail install "no wheels in $wheels/: carry it (made by python scripts/flashinfer_wheels.py)"
aot="$wheels/flashinfer-aot.tar.gz"
stage install 60 bash -c 'python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target "$1" "${@:3}" && if [ -f "$2" ]; then mkdir -p "$1/flashinfer/data/aot" &&
  tar -C "$1/flashinfer/data/aot" -xzf "$2" && echo "AOT modules:" && ls "$1/flashinfer/data/aot"; fi' \
  install "$site" "$aot" "${wheel_files[@]}" || report
stage probe 45 bash -c 'nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv &&
  nvcc --version | tail -n 2 && echo "ninja $(ninja --version)" && python3 -c "$1"' probe "$probe_py" || report
if [ -f "$aot" ]; then
  echo "prebuild: the carried AOT modules serve" >"$work/logs/prebuild.log"
else
  stage prebuild 300 python3 scripts/flashinfer_prebuild.py || report
  pack_modules
fi
jit_modules >"$work/jit-before-tests.txt"
stage tests 180 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rs -s \
  --junitxml="$work/tests.xml" tests/kernels tests/engine
jit_modules >"$work/jit-after-tests.txt"
stage bench 45 python3 benchmarks/kernels_cascade.py --device cuda --iters 50 --block-size 16 1
for shape in llama3-8b smollm2-135m; do
  stage "engine-$shape" 120 python3 -c 'import sys; from parrot.cli import main; sys.exit(main(sys.argv[1:]))' \
    bench engine --device cuda --shape "$shape" --compare-eager --kv-memory-gb 8 --json "$out/engine-$shape.json"
done
stage apps 150 python3 -m parrot bench apps --workload all --modes parrot,baseline+cache --repeats 1 \
  --no-plots --model "$wheels/smollm2-dummy" --serve-arg=--load-format --serve-arg=dummy \
  --serve-arg=--device --serve-arg=cuda --out "$out/apps"
report
