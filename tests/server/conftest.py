"""The official `openai` client on the session's real `parrot serve` (fixtures for e2e tests)."""
from __future__ import annotations

import openai
import pytest


@pytest.fixture(scope="module")
def client(parrot_server):
    return openai.OpenAI(base_url=parrot_server + "/v1", api_key="unused", max_retries=0)


@pytest.fixture
def aclient(parrot_server):
    return openai.AsyncOpenAI(base_url=parrot_server + "/v1", api_key="unused", max_retries=0)
