"""Item-item constraint graph of UltraGCN (paper eq. 19-20), sparse and vectorised.

G = R^T R; omega_ij = G_ij / (g_i - G_ii) * sqrt(g_i / g_j), g_i = sum_k G_ik (eq. 20).
S(i) is the top-K of row i by omega, j != i. G is never materialised densely: row blocks
R[:, a:b]^T R are formed with a bounded number of non-zeros, and the top-K of every row
in a block is taken at once with one lexsort. g_i = (R^T R 1)_i = sum_u R_ui d_u and
G_ii = d_i for binary R, so neither needs G.
"""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp

DEFAULT_BLOCK_NNZ = 2_000_000  # entries of G per block: ~100 bytes each while a block is ranked


def binarize(interactions: sp.spmatrix) -> sp.csr_matrix:
    """Users x items 0/1 matrix (duplicates counted once)."""
    matrix = sp.csr_matrix(interactions, dtype=np.float64, copy=True)
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    matrix.eliminate_zeros()
    return matrix


def item_item_neighbors(
    interactions: sp.spmatrix, num_neighbors: int, block_nnz: int = DEFAULT_BLOCK_NNZ
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``num_neighbors`` neighbours and omega weights of every item.

    Returns ``(index, weight)``, both ``(n_items, num_neighbors)``; rows with fewer
    neighbours are padded with index 0 and weight 0 (no contribution to the loss).
    Ties in omega are broken by the smaller item index.
    """
    R = binarize(interactions)
    n_items = R.shape[1]
    user_degree = np.asarray(R.sum(axis=1)).ravel()
    item_degree = np.asarray(R.sum(axis=0)).ravel()
    g = R.T @ user_degree  # row sums of G
    index = np.zeros((n_items, num_neighbors), dtype=np.int64)
    weight = np.zeros((n_items, num_neighbors), dtype=np.float32)
    if num_neighbors <= 0:
        return index, weight
    RT = R.T.tocsr()
    for start, stop in _row_blocks(g, block_nnz):
        block = (RT[start:stop] @ R).tocsr()
        block.sort_indices()
        rows = np.repeat(np.arange(start, stop), np.diff(block.indptr))
        cols, g_ij = block.indices, block.data
        off_diagonal = cols != rows
        rows, cols, g_ij = rows[off_diagonal], cols[off_diagonal], g_ij[off_diagonal]
        with np.errstate(divide="ignore", invalid="ignore"):
            omega = g_ij / (g[rows] - item_degree[rows]) * np.sqrt(g[rows] / g[cols])  # eq. 20
        _keep_top_k(rows, cols, omega, num_neighbors, index, weight)
    return index, weight


def _row_blocks(g: np.ndarray, block_nnz: int) -> list[tuple[int, int]]:
    """Split item rows so each block of G has at most ~block_nnz entries (g_i bounds row i)."""
    if len(g) == 0:
        return []
    bounds = np.minimum(g, len(g)).cumsum()
    cuts = np.searchsorted(bounds, np.arange(block_nnz, bounds[-1], block_nnz), side="right")
    edges = np.unique(np.concatenate([[0], cuts, [len(g)]]))
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def _keep_top_k(rows, cols, omega, k, index, weight) -> None:
    """Write the k largest omega of each row into ``index``/``weight`` (in place)."""
    order = np.lexsort((cols, -omega, rows))
    rows, cols, omega = rows[order], cols[order], omega[order]
    row_start = np.searchsorted(rows, rows, side="left")
    rank = np.arange(len(rows)) - row_start
    top = rank < k
    index[rows[top], rank[top]] = cols[top]
    weight[rows[top], rank[top]] = omega[top]
