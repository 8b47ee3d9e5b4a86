"""Where Ray engines go: one actor per engine, placed by resources.

On GPU nodes an engine takes `num_gpus=1`; on CPU nodes `num_cpus=cpus_per_engine`. With
`engines_per_node` set, engines are pinned node by node (that many on each alive node that
has room, in node order) instead of left to Ray's spreading.
"""
from __future__ import annotations

import asyncio
from typing import Any

from parrot.engine.config import EngineConfig
from parrot.engine.ray_engine import RayEngine


def engine_options(config: EngineConfig, num_engines: int, engines_per_node: int | None = None,
                   cpus_per_engine: float = 1.0) -> list[dict[str, Any]]:
    """Ray actor options for each of `num_engines` engines."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    base: dict[str, Any] = ({"num_gpus": 1, "num_cpus": 0} if config.device.startswith("cuda")
                            else {"num_cpus": cpus_per_engine})
    base["max_concurrency"] = 10_000  # every in-flight request of the server is one call
    if engines_per_node is None:
        return [dict(base, scheduling_strategy="SPREAD") for _ in range(num_engines)]
    nodes = _nodes_with_room(base, engines_per_node)
    slots = [node for node in nodes for _ in range(engines_per_node)]
    if len(slots) < num_engines:
        raise ValueError(f"{num_engines} engines at {engines_per_node} per node need "
                         f"{-(-num_engines // engines_per_node)} nodes with room; the cluster "
                         f"has {len(nodes)}")
    return [dict(base, scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
            for node in slots[:num_engines]]


def _nodes_with_room(base: dict[str, Any], per_node: int) -> list[str]:
    import ray

    key, need = ("GPU", base["num_gpus"]) if "num_gpus" in base else ("CPU", base["num_cpus"])
    return [n["NodeID"] for n in sorted(ray.nodes(), key=lambda n: n["NodeID"])
            if n["Alive"] and n["Resources"].get(key, 0) >= need * per_node]


async def start_ray_engines(config: EngineConfig, num_engines: int,
                            engines_per_node: int | None = None,
                            cpus_per_engine: float = 1.0) -> list[RayEngine]:
    """Start `num_engines` engine actors on the connected Ray cluster (`ray.init` first)."""
    options = engine_options(config, num_engines, engines_per_node, cpus_per_engine)
    started = await asyncio.gather(
        *(RayEngine.start(config, f"engine {i}", **opts) for i, opts in enumerate(options)),
        return_exceptions=True)
    failed = [e for e in started if isinstance(e, BaseException)]
    if failed:
        await asyncio.gather(*(e.stop() for e in started if isinstance(e, RayEngine)))
        raise RuntimeError(f"{len(failed)} of {num_engines} Ray engines failed to start: "
                           f"{failed[0]!r}") from failed[0]
    return started
