"""Fixtures of the reliability tests.

- `server`: a real `parrot serve` (embedded model) with the fault-injection hooks on, a
  256-token context and a 64 KiB body limit, shared by this directory's e2e tests.
- `fake_client(**server_config)`: the real app in-process over `FakeEngine` (no model),
  for auth and limits, which need no generation.
"""
from __future__ import annotations

import pytest

from parrot.server.app import create_app
from parrot.server.config import ServerConfig
from tests.manager.fake_engine import FakeEngine

MAX_MODEL_LEN = 256
MAX_BODY_BYTES = 64 * 1024
SERVER_FLAGS = ("--enable-test-hooks", "--max-model-len", str(MAX_MODEL_LEN),
                "--max-body-bytes", str(MAX_BODY_BYTES))


@pytest.fixture(scope="session")
def server(parrot_server_factory) -> str:
    return parrot_server_factory(*SERVER_FLAGS)


@pytest.fixture
async def fake_client(aiohttp_client):
    async def make(**server_config):
        engine = FakeEngine()
        client = await aiohttp_client(create_app([engine], ServerConfig(**server_config)))
        return client, engine

    return make
