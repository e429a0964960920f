"""Clusters of document indices from candidate pairs (connected components); one kept each."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np


class UnionFind:
    """Disjoint sets over ``0..n-1`` with path halving; the root is always the smallest index.

    Smallest-index roots make the result independent of the order pairs arrive in, so callers
    that number documents by priority get "keep the root" for free.
    """

    def __init__(self, n: int) -> None:
        self.parent = np.arange(n, dtype=np.int64)

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = int(parent[x])
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra == rb:
            return ra
        if rb < ra:
            ra, rb = rb, ra
        self.parent[rb] = ra
        return ra

    def union_pairs(self, pairs: np.ndarray) -> None:
        """Union every row ``(a, b)`` of an ``(m, 2)`` integer array."""
        for a, b in np.asarray(pairs, dtype=np.int64).tolist():
            self.union(a, b)

    def roots(self) -> np.ndarray:
        """Root of every element (fully compressed)."""
        parent = self.parent
        while True:
            grand = parent[parent]
            if np.array_equal(grand, parent):
                return parent.copy()
            parent[:] = grand


def clusters(n: int, pairs: np.ndarray) -> np.ndarray:
    """Cluster label of each of ``n`` items = the smallest index in its connected component
    (``scipy.sparse.csgraph.connected_components`` over the pairs as an undirected graph)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if n == 0:
        return np.zeros(0, np.int64)
    graph = coo_matrix((np.ones(len(pairs), np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    _, labels = connected_components(graph.tocsr(), directed=False)
    _, first = np.unique(labels, return_index=True)  # the first index of a label is its smallest
    return first[labels].astype(np.int64)


def _compress(parent: np.ndarray) -> None:
    """Point every element straight at its root (pointer doubling, in place)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return
        parent[:] = grand


def clusters_streamed(n: int, chunks: Iterable[np.ndarray]) -> np.ndarray:
    """:func:`clusters` over pairs that arrive in chunks (edge lists read one at a time): the
    same labels (the smallest index of each component), with memory O(n + one chunk) whatever
    the number of pairs (repeated pairs included). A union-find in vectorised rounds: every
    pair whose roots differ hooks the larger root to the smallest root offered to it, then
    every path is compressed, until the chunk's pairs agree. int32 labels below 2**31 items."""
    parent = np.arange(n, dtype=np.int32 if n < 2**31 else np.int64)
    for chunk in chunks:
        pairs = np.asarray(chunk).reshape(-1, 2)
        a, b = pairs[:, 0].astype(parent.dtype), pairs[:, 1].astype(parent.dtype)
        while len(a):
            ra, rb = parent[a], parent[b]  # roots: parent is compressed
            differ = ra != rb
            a, b, ra, rb = a[differ], b[differ], ra[differ], rb[differ]
            if not len(a):
                break
            lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
            order = np.lexsort((lo, hi))
            lo, hi = lo[order], hi[order]
            first = np.r_[True, hi[1:] != hi[:-1]]  # each root hooked once, to its smallest
            parent[hi[first]] = lo[first]
            _compress(parent)
    return parent
