"""Prefix analysis: which token sequences share a prefix worth computing once.

Pure functions over token lists. `shared_prefixes` returns the branching points of the trie of
the sequences (a compacted prefix tree), as nested `PrefixNode`s: each node is a prefix of
`depth` tokens shared by its `members` (at least two), and its children are longer prefixes
shared by subsets. The manager fills one engine context per node and forks the children and
the members' own contexts from it, so each shared prefix is prefilled once.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(eq=False)
class PrefixNode:
    depth: int  # tokens in the shared prefix
    members: list[int]  # indexes of the sequences that start with it
    parent: "PrefixNode | None" = None
    children: list["PrefixNode"] = field(default_factory=list)


def common_prefix_len(a: list[int], b: list[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def shared_prefixes(seqs: list[list[int]], min_len: int) -> list[PrefixNode]:
    """Nodes shared by >= 2 sequences and >= `min_len` tokens long, parents before children."""
    nodes: list[PrefixNode] = []
    for group in _partition(seqs, list(range(len(seqs))), 0):
        _visit(seqs, group, None, min_len, nodes)
    return nodes


def _visit(seqs: list[list[int]], members: list[int], parent: PrefixNode | None,
           min_len: int, nodes: list[PrefixNode]) -> None:
    first = seqs[members[0]]
    depth = min(common_prefix_len(first, seqs[i]) for i in members[1:])
    node = parent
    if depth >= min_len and (parent is None or depth > parent.depth):
        node = PrefixNode(depth, list(members), parent)
        if parent is not None:
            parent.children.append(node)
        nodes.append(node)
    for group in _partition(seqs, members, depth):
        _visit(seqs, group, node, min_len, nodes)


def _partition(seqs: list[list[int]], members: list[int], depth: int) -> list[list[int]]:
    """Members grouped by their token at `depth` (sequences ending there are dropped);
    only groups of two or more are returned."""
    groups: dict[int, list[int]] = {}
    for i in members:
        if len(seqs[i]) > depth:
            groups.setdefault(seqs[i][depth], []).append(i)
    return [g for g in groups.values() if len(g) >= 2]


def deepest_node(nodes: list[PrefixNode], index: int) -> PrefixNode | None:
    """The longest node whose members include sequence `index`."""
    best = None
    for node in nodes:
        if index in node.members and (best is None or node.depth > best.depth):
            best = node
    return best
