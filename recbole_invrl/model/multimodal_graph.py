"""Building blocks of the graph-based multimodal models (MMGCN, GRCN): each modality's
content rows, the user-item bipartite graph and message passing over it, vectorised.

Nodes are users 0..n_users-1 followed by items n_users..n_users+n_items-1 (RecBole's id 0
of each is padding and has no edge). An edge list holds each training interaction once in
each direction, as (source, target) node pairs; a message goes from source to target.
Messages go through ``EdgeGraph``: the edges sorted by target as a CSR pattern, on which a
per-edge dot product is one sampled dense-dense product (SDDMM) and a weighted sum over
each node's in-edges one sparse-dense product (SpMM), both ways differentiated in closed
form. No (edges x width) tensor is formed, forward or backward.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from recbole_invrl.model.content import ContentEncoder
from recbole_invrl.model.item_graph import binarize


def modality_rows(content: ContentEncoder, items: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every item's masked content, split by modality: [(n_items, width)] in layout order;
    ``items`` (any shape): only theirs, [(*items.shape, width)].

    The slices of m * c_i that belong to each modality, without forming c_i whole."""
    return [modality_block(content, index, items) for index in range(len(content.layout))]


def modality_block(content: ContentEncoder, index: int, items: torch.Tensor | None = None) -> torch.Tensor:
    """Modality ``index`` of m * c_i for every item (n_items, width), or for ``items``."""
    field, mask = content.modality_mask(index)
    if field in content.word_embeddings:
        block = content.word_table(field)
        return (block if items is None else block[items]) * mask
    if items is None:
        items = torch.arange(content.n_items, device=mask.device)
    block = content.dense_rows(field, items)  # a fresh gather: masked in place unless m is learned
    return block * mask if mask.requires_grad else block.mul_(mask)


def bipartite_edges(interactions, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) node ids of every distinct user-item interaction of the users x
    items matrix ``interactions``, in both directions: user -> item edges, then item -> user."""
    matrix = binarize(interactions).tocoo()
    users = torch.from_numpy(matrix.row.astype(np.int64))
    items = torch.from_numpy(matrix.col.astype(np.int64)) + n_users
    return torch.cat([users, items]), torch.cat([items, users])


def edge_softmax(scores: torch.Tensor, target: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Softmax of edge ``scores`` (E,) over the edges that share a target node."""
    peak = scores.new_full((n_nodes,), -torch.inf).scatter_reduce(0, target, scores.detach(), "amax")
    weights = (scores - peak.index_select(0, target)).exp()
    total = weights.new_zeros(n_nodes).index_add(0, target, weights)
    return weights / total.index_select(0, target)


class EdgeGraph(nn.Module):
    """Directed edges source -> target between ``n_rows`` target and ``n_cols`` source nodes,
    sorted by (target, source), with the CSR pattern of A[target, source] and of its
    transpose. Per-edge values are in this sorted order (``source``, ``target``)."""

    def __init__(self, source: torch.Tensor, target: torch.Tensor, n_rows: int, n_cols: int):
        super().__init__()
        order = torch.argsort(target * n_cols + source)
        source, target = source[order], target[order]
        by_source = torch.argsort(source * n_rows + target)
        self.shape = (n_rows, n_cols)
        for name, value in {
            "source": source, "target": target,
            "crow": _crow(target, n_rows), "transposed_crow": _crow(source[by_source], n_cols),
            "transposed_col": target[by_source], "transposed_order": by_source,
        }.items():
            self.register_buffer(name, value, persistent=False)

    def matrix(self, values: torch.Tensor) -> torch.Tensor:
        """A (n_rows, n_cols) with A[target_e, source_e] = values_e."""
        return _csr(self.crow, self.source, values, self.shape)

    def transposed(self, values: torch.Tensor) -> torch.Tensor:
        """A^T (n_cols, n_rows) of ``matrix(values)``."""
        return _csr(self.transposed_crow, self.transposed_col, values.index_select(0, self.transposed_order),
                    self.shape[::-1])

    def sampled_dot(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(E,) <rows[target_e], cols[source_e]> without autograd (one SDDMM)."""
        pattern = self.matrix(rows.new_ones(len(self.source)))
        return torch.sparse.sampled_addmm(pattern, rows, cols.T, beta=0.0).values()

    def edge_dot(self, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(E,) s_e = <rows[target_e], cols[source_e]>, differentiable in both."""
        return _EdgeDot.apply(rows, cols, self)

    def aggregate(self, values: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        """(n_rows, width) out_v = sum over edges j -> v of values_e cols[j], differentiable
        in ``values`` and ``cols``."""
        return _Aggregate.apply(values, cols, self)

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax of edge ``scores`` over the edges into each target node."""
        return edge_softmax(scores, self.target, self.shape[0])


def mean_weights(graph: EdgeGraph) -> torch.Tensor:
    """1 / |N(v)| for each edge j -> v of ``graph``, so that ``graph.aggregate`` of them
    averages each node's neighbours (a node without neighbours gets 0)."""
    in_degree = torch.bincount(graph.target, minlength=graph.shape[0]).float()
    return in_degree.index_select(0, graph.target).reciprocal()


def _csr(crow: torch.Tensor, col: torch.Tensor, values: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """A CSR matrix on a pattern built here (sorted, in range), so torch's checks are skipped;
    torch's once-per-process notice that CSR support is in beta is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(crow, col, values, shape, check_invariants=False)


def _crow(sorted_rows: torch.Tensor, n_rows: int) -> torch.Tensor:
    crow = torch.zeros(n_rows + 1, dtype=torch.long, device=sorted_rows.device)
    crow[1:] = torch.bincount(sorted_rows, minlength=n_rows).cumsum(0)
    return crow


class _EdgeDot(torch.autograd.Function):
    """s_e = <r[t_e], c[s_e]>: d r = S c, d c = S^T r with S[t_e, s_e] = ds_e."""

    @staticmethod
    def forward(ctx, rows, cols, graph: EdgeGraph):
        ctx.graph = graph
        ctx.save_for_backward(rows, cols)
        return graph.sampled_dot(rows, cols)

    @staticmethod
    def backward(ctx, grad):
        rows, cols = ctx.saved_tensors
        graph = ctx.graph
        grad_rows = graph.matrix(grad) @ cols if ctx.needs_input_grad[0] else None
        grad_cols = graph.transposed(grad) @ rows if ctx.needs_input_grad[1] else None
        return grad_rows, grad_cols, None


class _Aggregate(torch.autograd.Function):
    """out = A(w) c: d c = A(w)^T d out, d w_e = <d out[t_e], c[s_e]>."""

    @staticmethod
    def forward(ctx, values, cols, graph: EdgeGraph):
        ctx.graph = graph
        ctx.save_for_backward(values, cols)
        return graph.matrix(values) @ cols

    @staticmethod
    def backward(ctx, grad):
        values, cols = ctx.saved_tensors
        graph = ctx.graph
        grad = grad.contiguous()
        grad_values = graph.sampled_dot(grad, cols) if ctx.needs_input_grad[0] else None
        grad_cols = graph.transposed(values) @ grad if ctx.needs_input_grad[1] else None
        return grad_values, grad_cols, None
