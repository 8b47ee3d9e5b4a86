"""The application workloads of `parrot bench apps`, by name, in the order they run."""
from __future__ import annotations

from parrot.bench.workload import Workload
from parrot.bench.workloads.chain_summary import ChainSummary
from parrot.bench.workloads.gpts import Gpts
from parrot.bench.workloads.map_reduce import MapReduce
from parrot.bench.workloads.mixed import Mixed
from parrot.bench.workloads.multi_agent import MultiAgent
from parrot.bench.workloads.shared_prompt import SharedPrompt

WORKLOADS: dict[str, type[Workload]] = {w.name: w for w in (
    ChainSummary, MapReduce, SharedPrompt, Gpts, MultiAgent, Mixed)}


def select(name: str) -> list[type[Workload]]:
    """`all`, one name, or a comma-separated list."""
    if name == "all":
        return list(WORKLOADS.values())
    names = [n.strip() for n in name.split(",") if n.strip()]
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise ValueError(f"unknown workload(s) {unknown}; choose from: all, "
                         f"{', '.join(WORKLOADS)}")
    return [WORKLOADS[n] for n in names]
