"""The order in which a distance matrix shows its clusters (heatmaps, reports).

Average-linkage (UPGMA) agglomerative clustering; with scipy, its leaves put in optimal
order (adjacent leaves as close as possible: Bar-Joseph et al. 2001), so blocks of similar
entries line up along the diagonal. Without scipy, the same clustering in numpy (Lance-
Williams updates, O(n^2) per merge: about a second for 500 entries) with the leaves in
merge order.
"""
from __future__ import annotations

import numpy as np


def leaf_order(m: np.ndarray) -> list[int]:
    """Indices of a symmetric distance matrix [n, n] in clustered order."""
    m = np.asarray(m, dtype=np.float64)
    n = m.shape[0]
    if n <= 2:
        return list(range(n))
    m = (m + m.T) / 2
    np.fill_diagonal(m, 0.0)
    try:
        from scipy.cluster.hierarchy import leaves_list, linkage, optimal_leaf_ordering
        from scipy.spatial.distance import squareform
    except ImportError:
        return upgma_order(m)
    y = squareform(m, checks=False)
    z = optimal_leaf_ordering(linkage(y, method="average"), y)
    return [int(i) for i in leaves_list(z)]


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
