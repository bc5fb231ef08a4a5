"""The order in which a distance matrix shows its clusters (the HTML report, `matrix --plot`).

Average-linkage (UPGMA) agglomerative clustering of the condensed distance matrix; with scipy
(`scipy.cluster.hierarchy`, which the `plot` extra installs), its leaves put in optimal order
(adjacent leaves as close as possible: Bar-Joseph et al. 2001), so blocks of similar entries
line up along the diagonal. The report needs no extra, so without scipy the same clustering
runs in numpy (Lance-Williams updates, O(n^2) per merge: about a second for 500 entries) with
the leaves in merge order. Both callers go through `cluster`, so the page and the PNG always
show the same order on one installation.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Clustering:
    order: list[int]  # row indices in clustered order
    linkage: np.ndarray | None  # scipy's linkage matrix [n - 1, 4] (optimal leaf order); None without scipy
    method: str  # how the order was found, in words (for captions)


def _symmetric(m) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    m = (m + m.T) / 2
    np.fill_diagonal(m, 0.0)
    return m


def cluster(m) -> Clustering:
    """Average-linkage clustering of a symmetric distance matrix [n, n]."""
    m = _symmetric(m)
    n = m.shape[0]
    if n <= 2:
        return Clustering(list(range(n)), None, "as given (too few to cluster)")
    try:
        from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
        from scipy.spatial.distance import squareform
    except ImportError:
        return Clustering(upgma_order(m), None, "average linkage, leaves in merge order (scipy not installed)")
    y = squareform(m, checks=False)
    z = optimal_leaf_ordering(linkage(y, method="average"), y)
    return Clustering([int(i) for i in leaves_list(z)], z, "average linkage, optimal leaf order")


def leaf_order(m) -> list[int]:
    """Indices of a symmetric distance matrix [n, n] in clustered order."""
    return cluster(m).order


def upgma_order(m: np.ndarray) -> list[int]:
    """Leaves of average-linkage clustering in merge order (numpy only)."""
    n = m.shape[0]
    d = np.array(m, dtype=np.float64)
    np.fill_diagonal(d, np.inf)
    size = np.ones(n)
    members: dict[int, list[int]] = {i: [i] for i in range(n)}
    for _ in range(n - 1):
        a, b = divmod(int(np.argmin(d)), n)
        a, b = min(a, b), max(a, b)
        merged = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
        d[a], d[:, a] = merged, merged
        d[b], d[:, b] = np.inf, np.inf
        d[a, a] = np.inf
        size[a] += size[b]
        members[a] = members[a] + members.pop(b)
    return next(iter(members.values()))
