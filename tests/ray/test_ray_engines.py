"""Engines as Ray actors on a two-node Ray cluster simulated on this machine (one CPU each),
on a tiny random-init Llama: the manager's programs give what they give on an in-process
engine, a shared prefix is filled once on one node and forked there, a cancel reaches the
engine, and an engine actor killed mid-run fails only its own calls. One cluster and one
pair of engines serve the whole module (its last test kills one of them)."""
from __future__ import annotations

import asyncio

import pytest
import pytest_asyncio

ray = pytest.importorskip("ray")

from ray.cluster_utils import Cluster  # noqa: E402

from parrot.engine import Engine, EngineConfig, SamplingParams  # noqa: E402
from parrot.engine.client import EngineLost  # noqa: E402
from parrot.engine.engine import EngineInputError  # noqa: E402
from parrot.engine.local_engine import LocalEngine  # noqa: E402
from parrot.engine.ray_placement import start_ray_engines  # noqa: E402
from parrot.manager import Manager  # noqa: E402
from parrot.manager.errors import EngineUnavailable  # noqa: E402
from parrot.protocol.criteria import LATENCY  # noqa: E402
from tests.engine.conftest import make_tiny_model  # noqa: E402

pytestmark = pytest.mark.asyncio(loop_scope="module")
NODE = {"num_cpus": 1, "object_store_memory": 80 * 2**20}
SYSTEM = ("You are a meticulous assistant. Read the text and answer in one short line, "
          "naming the main subject first and nothing else.\n")
T = SYSTEM + "Text: {{input:x}}\nAnswer: {{output:y}}"


def llm(cid, x, out, max_tokens=6, **sampling):
    binding = {"var": x[1:]} if x.startswith("$") else x
    return {"id": cid, "template": T, "inputs": {"x": binding},
            "outputs": {"y": {"var": out, "sampling": {"max_tokens": max_tokens,
                                                       "temperature": 0, **sampling}}}}


@pytest.fixture(scope="module")
def cluster():
    c = Cluster(initialize_head=True, head_node_args={**NODE, "include_dashboard": False})
    c.add_node(**NODE)
    ray.init(address=c.address, log_to_driver=False)
    yield c
    ray.shutdown()
    c.shutdown()


@pytest.fixture(scope="module")
def tiny_config(tmp_path_factory, smollm_dir):
    path, _ = make_tiny_model(tmp_path_factory.mktemp("tiny"), smollm_dir)
    return EngineConfig(model=str(path), dtype="float32", kv_memory_gb=0.02, num_threads=1)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engines(cluster, tiny_config):
    started = await start_ray_engines(tiny_config, 2)
    yield started
    await asyncio.gather(*(e.stop() for e in started))


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def local(tiny_config):
    engine = await Engine(tiny_config).start()
    yield LocalEngine(engine)
    await engine.stop()


async def run_program(engines, calls, want):
    manager = Manager(engines)
    try:
        s = manager.open_session()
        manager.submit_calls(s, {"calls": calls})
        value = await manager.get_variable(s, want, LATENCY, timeout=60)
        values = {v.id: v.value for v in s.graph.variables.values()}
        manager.check_integrity()
        return value, values, s
    finally:
        await manager.close()


def chain():
    return [llm("c0", "a short story about a lighthouse keeper", "v0"),
            llm("c1", "$v0", "v1"), llm("c2", "$v1", "v2")]


def map_reduce(n=3):
    calls = [llm(f"m{i}", f"document {i} is about the river number {i}", f"s{i}")
             for i in range(n)]
    calls.append({"id": "j", "kind": "join", "parts": [{"var": f"s{i}"} for i in range(n)],
                  "output": {"var": "all"}})
    return calls + [llm("r", "$all", "final")]


async def test_two_engines_on_two_nodes(engines):
    assert len({e.node_id for e in engines}) == 2
    assert all(e.is_alive and e.stats().num_blocks > 0 for e in engines)


async def test_engines_per_node_pins_engines_node_by_node(cluster, tiny_config):
    from parrot.engine.ray_placement import engine_options

    options = engine_options(tiny_config, 2, engines_per_node=1)
    nodes = [o["scheduling_strategy"].node_id for o in options]
    alive = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
    assert nodes == alive and all(o["num_cpus"] == 1.0 for o in options)
    with pytest.raises(ValueError, match="need 3 nodes with room; the cluster has 2"):
        engine_options(tiny_config, 3, engines_per_node=1)
    with pytest.raises(ValueError, match="the cluster has 0"):  # 2 engines of 1 CPU per node
        engine_options(tiny_config, 2, engines_per_node=2)
    assert all(o["scheduling_strategy"] == "SPREAD" for o in engine_options(tiny_config, 2))


async def test_chain_and_map_reduce_give_what_the_in_process_engine_gives(engines, local):
    for program, want in ((chain(), "v2"), (map_reduce(), "final")):
        _, on_ray, _ = await run_program(engines, program, want)
        _, in_process, _ = await run_program([local], program, want)
        assert on_ray == in_process
    for engine in engines:
        engine.check_integrity()  # every context freed, blocks balanced


async def test_shared_prefix_is_filled_once_on_one_node_and_forked_there(engines):
    before = [e.stats().num_prefill_tokens for e in engines]
    _, _, s = await run_program(engines, map_reduce(4), "final")
    maps = [s.graph.calls[f"m{i}"] for i in range(4)]
    assert {m.engine for m in maps} == {maps[0].engine}, "forks ran off the prefix's node"
    system_tokens = len(engines[0].tokenizer.encode(SYSTEM, add_special_tokens=False))
    assert all(m.shared_tokens >= system_tokens - 2 for m in maps), [m.shared_tokens for m in maps]
    await asyncio.sleep(0.3)  # a poll
    grew = [e.stats().num_prefill_tokens - b for e, b in zip(engines, before)]
    prefix = maps[0].shared_tokens
    # the maps' engine computed the prefix once, not once per map
    assert grew[maps[0].engine] < prefix + sum(m.prompt_tokens - prefix for m in maps) + 64


async def test_context_operations_keep_their_order_and_a_cancel_reaches_the_engine(engines):
    engine = engines[0]
    tokens = engine.tokenizer.encode("ordering matters here", add_special_tokens=False)
    parent = engine.new_context()
    engine.append(parent, tokens)
    await engine.fill(parent, tokens)
    kids = [engine.fork(parent) for _ in range(4)]  # queued, sent with the next call
    engine.free(parent)
    stream = engine.generate(kids[0], SamplingParams(max_tokens=400, ignore_eos=True))
    async for _ in stream:
        break
    await stream.aclose()  # the cancel travels to the actor
    for kid in kids:
        engine.free(kid)
    for _ in range(50):
        await asyncio.sleep(0.1)
        if engine.stats().num_running == 0 and not engine.status().contexts:
            break
    assert engine.stats().num_running == 0 and engine.stats().num_generated_tokens > 0
    assert engine.status().contexts == {}
    engine.check_integrity()


async def test_one_stream_carries_every_request_and_errors_come_back_in_band(engines, local):
    """Concurrent generates and fills share the engine's one stream: each gets what an
    in-process engine gives it; an op that failed over there fails the next call on its
    context (EngineInputError), and the engine goes on serving."""
    engine = engines[0]
    greedy = SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)

    async def run(client, i):
        ctx = client.new_context()
        tokens = client.tokenizer.encode(f"text number {i} says", add_special_tokens=False)
        client.append(ctx, tokens)
        out = [t async for chunk in client.generate(ctx, greedy) for t in chunk.token_ids]
        cached = await client.fill(ctx, [100 + i])
        client.free(ctx)
        return out, cached

    got = await asyncio.gather(*(run(engine, i) for i in range(6)))
    assert got == [await run(local, i) for i in range(6)]
    bad = engine.fork(12345)  # no such parent: the fork fails in the actor
    with pytest.raises(EngineInputError, match="12345"):
        await engine.fill(bad, [5])
    with pytest.raises(EngineInputError, match="context"):
        async for _ in engine.generate(54321, greedy):
            pass
    engine.free(bad)
    assert (await run(engine, 0)) == got[0]
    engine.check_integrity()


async def test_a_killed_engine_fails_only_its_calls_and_the_other_serves(engines):
    """Last in the module: it kills engine 1."""
    manager = Manager(engines, min_shared_tokens=10_000)  # no sharing: calls spread
    s = manager.open_session()
    long = {"ignore_eos": True}
    calls = [llm(f"k{i}", f"story {i}", f"k{i}", max_tokens=300, **long) for i in range(4)]
    manager.submit_calls(s, {"calls": calls})
    gets = [asyncio.ensure_future(manager.get_variable(s, f"k{i}", LATENCY, timeout=120))
            for i in range(4)]
    while not all(s.graph.calls[f"k{i}"].times.get("first_token") for i in range(4)):
        await asyncio.sleep(0.05)
    victims = {f"k{i}" for i in range(4) if s.graph.calls[f"k{i}"].engine == 1}
    assert victims and len(victims) < 4
    ray.kill(engines[1].actor)
    results = await asyncio.gather(*gets, return_exceptions=True)
    for i, result in enumerate(results):
        if f"k{i}" in victims:
            assert isinstance(result, EngineUnavailable), result
            assert result.status == 503 and "engine lost: engine 1" in result.message
        else:
            assert isinstance(result, str) and result
    assert not engines[1].is_alive and "engine 1" in engines[1].error
    with pytest.raises(EngineLost):
        engines[1].new_context()
    # calls placed now run on the survivor, their shared prefix too
    manager.scheduler.min_shared_tokens = 16
    manager.submit_calls(s, {"calls": [llm(f"after{i}", f"a fresh text {i}", f"after{i}")
                                       for i in range(3)]})
    assert all(await asyncio.gather(*(manager.get_variable(s, f"after{i}", LATENCY, timeout=60)
                                      for i in range(3))))
    for i in range(3):
        assert s.graph.calls[f"after{i}"].engine == 0
        assert s.graph.calls[f"after{i}"].shared_tokens > 0
    manager.check_integrity()  # the survivor's blocks are balanced
    await manager.close()
    await asyncio.sleep(0.3)
    assert engines[0].status().contexts == {}, "contexts leaked on the survivor"
