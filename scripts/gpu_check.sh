#!/usr/bin/env bash
# Every GPU check in one call, for a CUDA machine without network (the JIT compiles each
# FlashInfer kernel variant once, so everything runs in this one process tree):
#   1. install the wheels in .whl/ (made here by `python scripts/flashinfer_wheels.py`);
#   2. the `gpu` tests: FlashInfer kernels vs the float64 reference, the model on CUDA vs
#      transformers, a forked decode step with cascade vs without;
#   3. the cascade benchmark: FlashInfer cascade vs FlashInfer plain vs the torch path.
# Logs go to $OUT (if set) or ./gpu-out. Needs torch, transformers, pytest, aiohttp there.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-gpu-out}"
mkdir -p "$out"
site=/tmp/parrot-gpu-site
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" .whl/*.whl || exit 1
fi
mkdir -p "$site"
ln -sfn "$PWD/kernels" "$site/parrot_kernels"  # the import name pyproject gives kernels/
export PYTHONPATH="$site:$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests/kernels tests/engine -rs -s 2>&1 \
  | tee "$out/gpu-tests.log"
tests=${PIPESTATUS[0]}
python3 benchmarks/kernels_cascade.py --device cuda --iters 50 --block-size 16 1 2>&1 | tee "$out/kernels_cascade.log"
exit "$tests"
