"""EdgeGraph's per-edge dot products and weighted sums against plain per-edge loops."""
import pytest
import torch

from recbole_invrl.model.multimodal_graph import EdgeGraph


def random_edges(n_rows: int, n_cols: int, n_edges: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pairs = torch.unique(torch.stack([torch.randint(n_rows, (n_edges,), generator=g),
                                      torch.randint(n_cols, (n_edges,), generator=g)], 1), dim=0)
    pairs = pairs[torch.randperm(len(pairs), generator=g)]  # EdgeGraph must sort them itself
    return pairs[:, 1].clone(), pairs[:, 0].clone()  # source, target


def loop_edge_dot(rows, cols, source, target):
    return torch.stack([rows[t] @ cols[s] for s, t in zip(source.tolist(), target.tolist())])


def loop_aggregate(values, cols, source, target, n_rows):
    out = [torch.zeros(cols.shape[1], dtype=cols.dtype) for _ in range(n_rows)]
    for value, s, t in zip(values, source.tolist(), target.tolist()):
        out[t] = out[t] + value * cols[s]
    return torch.stack(out)


@pytest.fixture
def graph():
    source, target = random_edges(7, 11, 40)
    return EdgeGraph(source, target, 7, 11)


def test_edges_are_kept_once_each_sorted_by_target(graph):
    source, target = random_edges(7, 11, 40)
    assert sorted(zip(graph.target.tolist(), graph.source.tolist())) == \
        sorted(zip(target.tolist(), source.tolist()))
    assert graph.target.tolist() == sorted(graph.target.tolist())


def assert_same_values_and_gradients(got, expected, upstream, inputs):
    torch.testing.assert_close(got, expected)
    got_grads = torch.autograd.grad((got * upstream).sum(), inputs)
    expected_grads = torch.autograd.grad((expected * upstream).sum(), inputs)
    for g, e in zip(got_grads, expected_grads):
        torch.testing.assert_close(g, e)


def test_edge_dot_and_its_gradients_match_a_loop(graph):
    rows = torch.randn(7, 5, dtype=torch.float64, requires_grad=True)
    cols = torch.randn(11, 5, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(len(graph.source), dtype=torch.float64)
    assert_same_values_and_gradients(graph.edge_dot(rows, cols),
                                     loop_edge_dot(rows, cols, graph.source, graph.target), upstream, (rows, cols))


def test_aggregate_and_its_gradients_match_a_loop(graph):
    values = torch.randn(len(graph.source), dtype=torch.float64, requires_grad=True)
    cols = torch.randn(11, 3, dtype=torch.float64, requires_grad=True)
    upstream = torch.randn(7, 3, dtype=torch.float64)
    assert_same_values_and_gradients(graph.aggregate(values, cols),
                                     loop_aggregate(values, cols, graph.source, graph.target, 7), upstream,
                                     (values, cols))


def test_softmax_sums_to_one_over_each_nodes_in_edges(graph):
    scores = torch.randn(len(graph.source), dtype=torch.float64)
    alpha = graph.softmax(scores)
    for node in graph.target.unique().tolist():
        into = graph.target == node
        torch.testing.assert_close(alpha[into], torch.softmax(scores[into], 0))


def test_a_node_without_in_edges_gets_zero():
    graph = EdgeGraph(torch.tensor([0, 1]), torch.tensor([2, 2]), 4, 3)
    out = graph.aggregate(torch.ones(2), torch.ones(3, 2))
    assert out[2].tolist() == [2.0, 2.0] and out[[0, 1, 3]].abs().sum() == 0
