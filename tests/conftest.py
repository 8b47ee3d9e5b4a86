"""Fixtures shared by every test directory.

- `smollm`: the embedded SmolLM2-135M-Instruct loaded once (float32), for
  in-process engines (`Engine(config, loaded=smollm)`).
- `parrot_server_factory(*flags)`: a REAL `python -m parrot serve` subprocess on
  the embedded model, one per distinct flag set, shared by the session and
  terminated (SIGTERM, then kill) at its end; returns the base URL.
- `parrot_server`: the default one. Tests using a server are marked `e2e`.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from parrot.bench.launcher import ServerProcess

# Small and exact: float32, a small KV pool (so the blocks a test frees are visible).
E2E_SERVER_FLAGS = ("--dtype", "float32", "--kv-memory-gb", "0.25", "--max-num-seqs", "32")


@pytest.fixture(scope="session")
def smollm_dir():
    from parrot.engine.model_files import resolve_model_dir

    return resolve_model_dir(None)[0]


@pytest.fixture(scope="session")
def smollm(smollm_dir):
    """The embedded model loaded once, in float32."""
    from parrot.engine import EngineConfig
    from parrot.engine.loader import load

    return load(EngineConfig(dtype="float32"), progress=False)


@pytest.fixture(scope="session")
def parrot_server_factory(tmp_path_factory) -> Iterator[Callable[..., str]]:
    servers: dict[tuple[str, ...], ServerProcess] = {}

    def start(*flags: str) -> str:
        if flags not in servers:
            log_path = tmp_path_factory.mktemp("parrot-serve") / "serve.log"
            server = ServerProcess([*E2E_SERVER_FLAGS, *flags], log_path=log_path)
            server.start()
            servers[flags] = server
        return servers[flags].url

    yield start
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="session")
def parrot_server(parrot_server_factory) -> str:
    return parrot_server_factory()
