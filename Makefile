# Parrot: `make serve` sets up and starts the server; `make test` sets up and runs the tests.
PY := .venv/bin/python
PYTEST := $(PY) -m pytest

.PHONY: setup setup-test serve test test-fast test-e2e test-gpu bench-engine bench-apps clean

setup:
	bash scripts/setup.sh

serve: setup
	.venv/bin/parrot serve $(ARGS)

test:
	bash scripts/setup.sh --test
	$(PYTEST) -q -m "not gpu" --durations=15

setup-test:
	bash scripts/setup.sh --test

test-fast: setup-test
	$(PYTEST) -q -m "not e2e and not gpu"

test-e2e: setup-test
	$(PYTEST) -q -m "e2e"

test-gpu: setup-test
	$(PYTEST) -q -m "gpu"

bench-engine: setup-test
	.venv/bin/parrot bench engine

bench-apps: setup-test
	.venv/bin/parrot bench apps --workload all --out docs/bench

clean:
	rm -rf .venv build *.egg-info .pytest_cache client/build client/*.egg-info \
	  integrations/langchain-parrot/build integrations/langchain-parrot/*.egg-info
