import numpy as np
import pytest
import scipy.sparse as sp

from recbole_invrl.model.item_graph import item_item_neighbors


def dense_omega(R: np.ndarray) -> np.ndarray:
    """Eq. 20 on a dense G = R^T R; zero on the diagonal and where G_ij = 0."""
    G = R.T @ R
    g = G.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        omega = G / (g - np.diag(G))[:, None] * np.sqrt(g[:, None] / g[None, :])
    omega[~np.isfinite(omega)] = 0.0
    np.fill_diagonal(omega, 0.0)
    omega[G == 0] = 0.0
    return omega


@pytest.mark.parametrize("block_nnz", [10**9, 7])  # one block, and many tiny blocks
def test_top_k_and_omega_match_dense_reference(block_nnz):
    rng = np.random.default_rng(3)
    R = (rng.random((30, 25)) < 0.15).astype(np.float64)
    R[:, 7] = 0.0  # an item nobody interacted with
    k = 4
    index, weight = item_item_neighbors(sp.csr_matrix(R), k, block_nnz=block_nnz)
    omega = dense_omega(R)

    assert index.shape == weight.shape == (25, k)
    for i in range(25):
        expected = np.sort(omega[i][omega[i] > 0])[::-1][:k]
        n = len(expected)
        np.testing.assert_allclose(weight[i, :n], expected, rtol=1e-6)
        np.testing.assert_allclose(weight[i, :n], omega[i, index[i, :n]], rtol=1e-6)
        assert len(set(index[i, :n])) == n and i not in index[i, :n]
        assert (weight[i, n:] == 0).all() and (index[i, n:] == 0).all()
    assert (weight[7] == 0).all()


def test_duplicate_interactions_count_once():
    R = sp.csr_matrix(np.array([[1, 1, 0], [0, 1, 1]], dtype=np.float64))
    rows, cols = R.nonzero()
    doubled = sp.coo_matrix((np.ones(len(rows) + 1), (np.r_[rows, 0], np.r_[cols, 0])), shape=(2, 3))
    _, w1 = item_item_neighbors(R, 2)
    _, w2 = item_item_neighbors(doubled, 2)
    np.testing.assert_allclose(w1, w2)
