"""Fixtures of the LangChain integration tests: a live Parrot server for the e2e ones."""
from __future__ import annotations

import json
import urllib.request

import pytest

pytest.importorskip("langchain_core")


@pytest.fixture
def parrot_url(parrot_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """The shared e2e server's URL, also as PARROT_BASE_URL (what ChatParrot() reads)."""
    monkeypatch.setenv("PARROT_BASE_URL", parrot_server)
    return parrot_server


def engine_stats(url: str) -> dict:
    with urllib.request.urlopen(f"{url}/v1/parrot/engine_stats") as resp:
        return json.load(resp)
