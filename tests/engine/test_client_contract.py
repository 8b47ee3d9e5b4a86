"""Every engine client implements the whole engine contract (engine/client.py) with the same
parameters: the in-process and Ray clients, the bench's simulated engine, and the tests' fake
(which has no test hook: the fault-injection route never runs over it)."""
from __future__ import annotations

import inspect

import pytest

from parrot.bench.sim_engine import SimEngine
from parrot.engine.client import EngineClient
from parrot.engine.local_engine import LocalEngine
from parrot.engine.ray_engine import RayEngine
from tests.manager.fake_engine import CharTokenizer, FakeEngine

METHODS = {name: member for name, member in vars(EngineClient).items()
           if not name.startswith("_") and callable(member)}
PROPERTIES = [name for name, member in vars(EngineClient).items() if isinstance(member, property)]


def shape(fn) -> tuple[int, list[tuple[str, object]]]:
    """How many parameters, and the names and defaults of those with a default."""
    params = list(inspect.signature(fn).parameters.values())
    return len(params), [(p.name, p.default) for p in params if p.default is not p.empty]


@pytest.mark.parametrize("cls", [LocalEngine, RayEngine, SimEngine, FakeEngine],
                         ids=lambda c: c.__name__)
def test_every_client_has_the_contracts_methods_with_its_parameters(cls):
    assert set(METHODS) == {"new_context", "fork", "append", "pin", "free", "fill", "generate",
                            "compile", "stats", "status", "check_integrity", "inject_failure"}
    for name, member in METHODS.items():
        if cls is FakeEngine and name == "inject_failure":
            continue
        impl = getattr(cls, name, None)
        assert impl is not None, f"{cls.__name__} has no {name}"
        assert shape(impl) == shape(member), f"{cls.__name__}.{name}"
        assert inspect.iscoroutinefunction(impl) == inspect.iscoroutinefunction(member), name


def test_the_simulated_and_fake_engines_are_engine_clients():
    sim = SimEngine(CharTokenizer())
    for engine in (sim, FakeEngine()):
        for name in ["name", "tokenizer", "model_name", "max_model_len", "vocab_size",
                     *PROPERTIES]:
            assert hasattr(engine, name), f"{type(engine).__name__} has no {name}"
