"""Unit tests: the SV graph's rules (producers, cycles, atomic batches, failure) - no engine."""
import pytest

from parrot.manager.call import Call, CallSpec, CallState, VarRef
from parrot.manager.errors import Conflict, NotFound
from parrot.manager.graph import Graph
from parrot.protocol.template import Template

T = Template.parse("{{input:a}} -> {{output:b}}")


def call(cid, a, b):
    """A call reading `a` (a var id, or a constant when prefixed with '=') into var `b`."""
    binding = a[1:] if a.startswith("=") else VarRef(a)
    return Call(CallSpec(cid, T, {"a": binding}, {"b": b}))


def test_links_producers_and_consumers():
    g = Graph()
    g.add_variable("x", value="hello")
    g.add_calls([call("c1", "x", "y"), call("c2", "y", "z")])
    assert g.variables["y"].producer == "c1" and g.variables["y"].consumers == {"c2"}
    assert g.variables["x"].consumers == {"c1"}
    g.check_integrity()


def test_one_producer_per_variable():
    g = Graph()
    g.add_variable("x")
    g.add_calls([call("c1", "=k", "y")])
    with pytest.raises(Conflict, match="already has a producer"):
        g.add_calls([call("c2", "=k", "y")])
    with pytest.raises(Conflict, match="produced by call 'c1'"):
        g.set_value("y", "v")
    g.set_value("x", "v")
    with pytest.raises(Conflict, match="already has a value"):
        g.set_value("x", "w")
    with pytest.raises(Conflict, match="already has a value; it cannot be an output"):
        g.add_calls([call("c3", "=k", "x")])
    with pytest.raises(Conflict, match="call id 'c1' already exists"):
        g.add_calls([call("c1", "=k", "q")])
    g.check_integrity()


def test_cycle_is_refused_with_its_path():
    g = Graph()
    g.add_variable("x")
    g.add_calls([call("c1", "x", "y"), call("c2", "y", "z")])
    with pytest.raises(Conflict, match=r"cycle: x -> c1 -> y -> c2 -> z -> c3 -> x"):
        g.add_calls([call("c3", "z", "x")])
    g.add_variable("x2")
    with pytest.raises(Conflict, match="cycle: x2 -> self -> x2"):
        g.add_calls([call("self", "x2", "x2")])
    g.check_integrity()


def test_batch_is_atomic():
    g = Graph()
    with pytest.raises(NotFound, match="unknown variable 'missing'"):
        g.add_calls([call("c1", "=k", "y"), call("c2", "y", "z"), call("c3", "missing", "w")])
    assert g.calls == {} and g.variables == {}
    g.check_integrity()


def test_failure_propagates_downstream():
    g = Graph()
    g.add_calls([call("c1", "=k", "y"), call("c2", "y", "z"), call("c3", "z", "w")])
    g.fail_call(g.calls["c1"], "boom")
    assert [g.calls[c].state for c in ("c1", "c2", "c3")] == [CallState.FAILED] * 3
    assert g.variables["w"].error == "input 'z' failed: input 'y' failed: boom"
    g.check_integrity()


def test_integrity_check_catches_corruption():
    g = Graph()
    g.add_calls([call("c1", "=k", "y")])
    g.variables["y"].producer = "nobody"
    with pytest.raises((AssertionError, KeyError)):
        g.check_integrity()
