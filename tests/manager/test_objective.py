"""Unit tests: lazy activation, objective deduction, task groups, order (no engine)."""
from parrot.engine.sampling_params import Priority
from parrot.manager.call import Call, CallSpec, CallKind, VarRef
from parrot.manager.graph import Graph
from parrot.manager.objective import on_calls_added, remaining_depth, request, task_group
from parrot.manager.scheduler import engine_priority, prioritize
from parrot.protocol.criteria import LATENCY, THROUGHPUT
from parrot.protocol.template import INPUT, OUTPUT, Placeholder, Template

T = Template.parse("{{input:a}} -> {{output:b}}")


def llm(cid, a, b, eager=False):
    binding = a[1:] if a.startswith("=") else VarRef(a)
    return Call(CallSpec(cid, T, {"a": binding}, {"b": b}, is_eager=eager))


def join(cid, parts, out):
    pieces = [Placeholder(INPUT, f"p{i}") for i in range(len(parts))]
    return Call(CallSpec(cid, Template.from_pieces(pieces + [Placeholder(OUTPUT, "out")]),
                         {f"p{i}": VarRef(p) for i, p in enumerate(parts)}, {"out": out},
                         kind=CallKind.RENDER))


def map_reduce(n=3):
    g = Graph()
    calls = [llm(f"m{i}", f"=doc{i}", f"s{i}") for i in range(n)]
    calls += [join("j", [f"s{i}" for i in range(n)], "all"), llm("r", "all", "final")]
    g.add_calls(calls)
    return g


def test_nothing_runs_until_requested():
    g = map_reduce()
    assert on_calls_added(g, list(g.calls.values())) == []
    assert not any(c.is_active for c in g.calls.values())


def test_request_activates_upstream_with_criteria():
    g = map_reduce()
    activated = request(g, "final", LATENCY)
    assert {c.id for c in activated} == {"m0", "m1", "m2", "j", "r"}
    assert all(c.criteria == LATENCY for c in g.calls.values())
    assert g.variables["final"].is_requested and not g.variables["s0"].is_requested


def test_request_on_a_branch_leaves_the_rest_lazy():
    g = map_reduce()
    request(g, "s1", THROUGHPUT)
    assert {c.id for c in g.calls.values() if c.is_active} == {"m1"}
    request(g, "s1", LATENCY)  # a stronger objective upgrades
    assert g.calls["m1"].criteria == LATENCY


def test_eager_and_late_producer_activation():
    g = Graph()
    g.add_variable("x")
    request(g, "x", LATENCY)  # someone waits for x before its producer exists
    producer = llm("p", "=k", "x")
    g.add_calls([producer, llm("e", "=k", "y", eager=True)])
    activated = on_calls_added(g, [producer, g.calls["e"]])
    assert {c.id for c in activated} == {"p", "e"}
    assert producer.criteria == LATENCY and g.calls["e"].criteria is None


def test_task_group_and_depth_look_through_joins():
    g = map_reduce()
    g.add_calls([llm("after", "final", "z")])
    request(g, "z", LATENCY)
    assert task_group(g, g.calls["m0"]) == ("feeds:r", 3)
    assert task_group(g, g.calls["r"]) is None
    memo = {}
    assert remaining_depth(g, g.calls["m0"], memo) == 3
    assert remaining_depth(g, g.calls["after"], memo) == 1


def test_a_producer_upstream_of_its_sibling_is_not_in_the_group():
    g = map_reduce(2)  # m0, m1 -> j -> r
    critic_in = join("j2", ["final", "all"], "both")  # r and the maps both feed "w"
    g.add_calls([critic_in, llm("w", "both", "reply")])
    request(g, "reply", LATENCY)
    assert task_group(g, g.calls["r"]) is None  # the maps are upstream of r
    assert task_group(g, g.calls["m0"]) == ("feeds:r", 2)


def test_priority_mapping_and_order():
    assert engine_priority(LATENCY, 1) == Priority.LATENCY
    assert engine_priority(LATENCY, 4) == Priority.NORMAL  # a task group fills a batch
    assert engine_priority(THROUGHPUT, 1) == Priority.THROUGHPUT
    assert engine_priority(None, 1) == Priority.NORMAL
    g = map_reduce(2)
    g.add_calls([llm("solo", "=q", "answer"), llm("bulk", "=q", "b")])
    request(g, "final", LATENCY)
    request(g, "answer", LATENCY)
    request(g, "b", THROUGHPUT)
    ordered = prioritize(g, [g.calls[c] for c in ("bulk", "m0", "solo", "m1")])
    assert [c.id for c in ordered] == ["solo", "m0", "m1", "bulk"]
    assert [c.priority for c in ordered] == [Priority.LATENCY, Priority.NORMAL,
                                             Priority.NORMAL, Priority.THROUGHPUT]
    assert ordered[1].group == "feeds:r"
