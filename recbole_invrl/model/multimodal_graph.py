"""Building blocks of the graph-based multimodal models (MMGCN, GRCN): each modality's
content rows, the user-item bipartite graph and message passing over it, vectorised.

Nodes are users 0..n_users-1 followed by items n_users..n_users+n_items-1 (RecBole's id 0
of each is padding and has no edge). An edge list holds each training interaction once in
each direction, as (source, target) node pairs; a message goes from source to target.
Fixed weights propagate as one sparse matrix product; learned weights (GRCN's refined
graph) by a gather and a scatter-add over the edges, which autograd differentiates in
both the messages and the weights.
"""
from __future__ import annotations

import numpy as np
import torch

from recbole_invrl.model.content import ContentEncoder
from recbole_invrl.model.item_graph import binarize


def modality_rows(content: ContentEncoder, items: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Every item's masked content, split by modality: [(n_items, width)] in layout order;
    ``items`` (any shape): only theirs, [(*items.shape, width)].

    The slices of m * c_i that belong to each modality, without forming c_i whole."""
    every = items is None
    if every:
        items = torch.arange(content.n_items, device=content.content_mask.device)
    rows, start = [], 0
    for field, width in content.layout:
        if field in content.word_embeddings:
            block = content.word_table(field)
            block = block if every else block[items]
        else:
            block = content.dense_rows(field, items)
        rows.append(block * content.content_mask[start : start + width])
        start += width
    return rows


def bipartite_edges(interactions, n_users: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(source, target) node ids of every distinct user-item interaction of the users x
    items matrix ``interactions``, in both directions: user -> item edges, then item -> user."""
    matrix = binarize(interactions).tocoo()
    users = torch.from_numpy(matrix.row.astype(np.int64))
    items = torch.from_numpy(matrix.col.astype(np.int64)) + n_users
    return torch.cat([users, items]), torch.cat([items, users])


def mean_adjacency(source: torch.Tensor, target: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Sparse (n_nodes, n_nodes) A with A[v, j] = 1 / |N(v)| for each edge j -> v, so that
    A @ X averages each node's neighbours (a node without neighbours gets 0)."""
    in_degree = torch.bincount(target, minlength=n_nodes).float()
    values = 1.0 / in_degree[target]
    return torch.sparse_coo_tensor(torch.stack([target, source]), values, (n_nodes, n_nodes)).coalesce()


def edge_softmax(scores: torch.Tensor, target: torch.Tensor, n_nodes: int) -> torch.Tensor:
    """Softmax of edge ``scores`` (E,) over the edges that share a target node."""
    peak = scores.new_full((n_nodes,), -torch.inf).scatter_reduce(0, target, scores.detach(), "amax")
    weights = (scores - peak[target]).exp()
    total = weights.new_zeros(n_nodes).index_add(0, target, weights)
    return weights / total[target]


def weighted_sum(
    x: torch.Tensor, source: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> torch.Tensor:
    """out[v] = sum over edges j -> v of weight_e * x[j]; ``weight`` (E,)."""
    messages = x[source] * weight.unsqueeze(1)
    return x.new_zeros(x.shape).index_add(0, target, messages)
