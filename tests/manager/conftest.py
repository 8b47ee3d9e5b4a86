"""A manager over one fake engine, checked for integrity and leaked contexts at the end."""
from __future__ import annotations

import pytest

from parrot.manager import Manager
from tests.manager.fake_engine import FakeEngine


@pytest.fixture
async def engine():
    return FakeEngine()


@pytest.fixture
async def manager(engine):
    m = Manager([engine])
    yield m
    m.check_integrity()
    await m.close()
    assert engine.live == {}, "contexts leaked"
