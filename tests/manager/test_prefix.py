"""Unit tests: prefix analysis over token lists (pure functions)."""
from parrot.manager.prefix import common_prefix_len, deepest_node, shared_prefixes


def test_common_prefix_len():
    assert common_prefix_len([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_len([1, 2], [1, 2, 3]) == 2
    assert common_prefix_len([], [1]) == 0


def test_nested_branching_points():
    seqs = [[1, 2, 3, 4, 5], [1, 2, 3, 4, 6], [1, 2, 3, 9], [7, 8], [1, 2, 3, 4]]
    nodes = shared_prefixes(seqs, min_len=2)
    assert [(n.depth, sorted(n.members)) for n in nodes] == [(3, [0, 1, 2, 4]), (4, [0, 1, 4])]
    assert nodes[1].parent is nodes[0] and nodes[0].children == [nodes[1]]
    assert deepest_node(nodes, 0) is nodes[1] and deepest_node(nodes, 2) is nodes[0]
    assert deepest_node(nodes, 3) is None


def test_min_len_and_singletons():
    assert shared_prefixes([[1, 2, 3], [1, 2, 4]], min_len=3) == []
    assert shared_prefixes([[1, 2, 3]], min_len=1) == []
    identical = shared_prefixes([[5, 5, 5], [5, 5, 5]], min_len=1)
    assert [(n.depth, n.members) for n in identical] == [(3, [0, 1])]


def test_shorter_child_below_min_is_skipped_but_deeper_kept():
    seqs = [[1] * 10 + [2], [1] * 10 + [3], [1] * 4 + [9]]
    nodes = shared_prefixes(seqs, min_len=5)
    assert [(n.depth, sorted(n.members)) for n in nodes] == [(10, [0, 1])]
