"""Item-item neighbour table (eq. 19-20) at Kwai scale: time and peak memory.

Builds a Kwai-shaped interaction matrix (7,010 users, 86,483 items, ~298,492 interactions,
skewed user and item degrees) and computes the top-K neighbours with ``item_item_neighbors``.

    python bench/bench_item_graph.py [--users 7010] [--items 86483] [--interactions 298492] [--k 10]
"""
from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import scipy.sparse as sp

from recbole_invrl.model.item_graph import item_item_neighbors


def kwai_shaped(users: int, items: int, interactions: int, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    user_weight = rng.pareto(1.2, users) + 1.0
    item_weight = rng.pareto(1.0, items) + 1.0
    rows = rng.choice(users, interactions, p=user_weight / user_weight.sum())
    cols = rng.choice(items, interactions, p=item_weight / item_weight.sum())
    matrix = sp.csr_matrix((np.ones(interactions), (rows, cols)), shape=(users, items))
    matrix.sum_duplicates()
    return matrix


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=7010)
    parser.add_argument("--items", type=int, default=86483)
    parser.add_argument("--interactions", type=int, default=298492)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    matrix = kwai_shaped(args.users, args.items, args.interactions)
    degrees = np.asarray(matrix.sum(axis=1)).ravel()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    index, weight = item_item_neighbors(matrix, args.k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.users} users, {args.items} items, {matrix.nnz} interactions "
          f"(max user degree {int(degrees.max())}, G = R^T R has about {int((degrees ** 2).sum()):,} entries "
          f"before merging)")
    print(f"top-{args.k} neighbours: {seconds:.1f} s, peak RSS {peak:.0f} MB "
          f"({peak - before:.0f} MB above the matrix), items with a neighbour: "
          f"{int((weight[:, 0] > 0).sum())}")


if __name__ == "__main__":
    main()
