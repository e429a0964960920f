"""Containment: a document whose shingles lie (at least ``threshold`` of them) in one other.

Candidates come from two indexes, united. (1) A sampled-shingle index: every document keeps the
shingle hashes ``h`` with ``h % sample == 0`` (content-defined, so the same shingle is sampled
in every document holding it; Broder 1997, Manber 1994); the shared samples of a pair over the
query's samples estimate its containment whatever the size ratio, which is what a chapter page
beside its single-page manual (1-10% of its size) needs. (2) An LSH Ensemble (Zhu et al., VLDB 2016) over the near-dedup MinHash
signatures, laid out exactly as ``datasketch.MinHashLSHEnsemble`` lays its index out: documents
partitioned by set size with datasketch's ``optimal_partitions``, per partition one MinHash LSH
per band width ``r``, and for a query of size ``q`` against a partition whose largest set is
``u``, the (bands, rows) that datasketch's ``_optimal_param`` picks for ``u / q``. The lookups
are vectorised (band keys of all documents, sorted joins) instead of datasketch's per-document
dictionaries; ``tests/test_dedup.py`` checks the candidate pairs equal datasketch's queries.
Candidates are then verified by exact containment of the shingle sets (or, without shingles,
estimated from the signatures), and :func:`choose_containers` decides who is removed.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from functools import lru_cache
from typing import TypeVar

import numpy as np

from curate.dedup.lsh_params import ensemble_optimal_param, optimal_partitions

# datasketch's grid of x/q ratios (MinHashLSHEnsemble._init_optimal_params)
_XQS = np.exp(np.linspace(-5, 5, 10))
T = TypeVar("T")


@lru_cache(maxsize=16)
def ensemble_params(
    threshold: float, num_perm: int, m: int, false_negative_weight: float
) -> np.ndarray:
    """``(10, 2)`` (bands, rows) for each of datasketch's x/q ratios (as MinHashLSHEnsemble)."""
    return np.array(
        [ensemble_optimal_param(threshold, num_perm, m, xq, false_negative_weight) for xq in _XQS],
        dtype=np.int64,
    )


def size_partitions(
    sizes: np.ndarray, num_part: int, max_values: int = 256, step: float = 1.05
) -> tuple[np.ndarray, np.ndarray]:
    """Partition of each document and the partitions' upper sizes, as datasketch's ``index``.

    datasketch's ``optimal_partitions`` is quadratic in the number of distinct sizes (26 s for
    866 sizes); past ``max_values`` the sizes are grouped in geometric buckets (``step`` apart)
    and each bucket stands for its largest size, so every upper bound is still a real size."""
    values, counts = np.unique(sizes, return_counts=True)
    if len(values) > max_values:
        bucket = np.ceil(np.log(np.maximum(values, 1)) / np.log(step)).astype(np.int64)
        last = np.r_[bucket[1:] != bucket[:-1], True]  # largest size of each bucket
        values, counts = (
            values[last],
            np.add.reduceat(counts, np.r_[0, np.flatnonzero(last)[:-1] + 1]),
        )
    bounds = optimal_partitions(values, counts, num_part)
    uppers = np.array([u for _, u in bounds], dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    part = np.empty(len(sizes), np.int64)
    current = 0
    for i, size in zip(order.tolist(), sizes[order].tolist(), strict=True):
        if size > uppers[current]:  # datasketch steps one partition at a time
            current += 1
        part[i] = current
    return part, uppers


def _band_key_matrix(sig: np.ndarray, r: int, bands: int) -> np.ndarray:
    from curate.dedup.minhash import band_keys

    return band_keys(sig, bands, r)


def _join(index_keys: np.ndarray, index_rows: np.ndarray, query_keys: np.ndarray) -> tuple:
    """(query position, index row) of every equal key (sorted join)."""
    order = np.argsort(index_keys, kind="stable")
    sorted_keys = index_keys[order]
    lo = np.searchsorted(sorted_keys, query_keys, "left")
    hi = np.searchsorted(sorted_keys, query_keys, "right")
    count = hi - lo
    total = int(count.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    q = np.repeat(np.arange(len(query_keys)), count)
    start = np.repeat(lo, count) + (np.arange(total) - np.repeat(np.cumsum(count) - count, count))
    return q, index_rows[order[start]]


def ensemble_candidates(
    sig: np.ndarray,
    sizes: np.ndarray,
    queries: np.ndarray,
    threshold: float,
    num_part: int = 16,
    m: int = 8,
    false_negative_weight: float = 0.5,
    max_sizes: int = 256,
) -> np.ndarray:
    """Distinct ``(q, x)`` row pairs, q in ``queries``, x != q, that an LSH Ensemble over all
    rows (signatures ``sig``, set sizes ``sizes`` > 0) returns for "q is contained in x"
    (``max_sizes``: see :func:`size_partitions`; with more distinct sizes than that the
    partitions are datasketch's over bucketed sizes)."""
    n, num_perm = sig.shape
    if n == 0 or len(queries) == 0:
        return np.zeros((0, 2), np.int64)
    params = ensemble_params(threshold, num_perm, m, false_negative_weight)
    part, uppers = size_partitions(sizes, num_part, max_sizes)
    members = [np.flatnonzero(part == p) for p in range(len(uppers))]
    q_size = sizes[queries].astype(np.float64)
    codes = []
    for r in sorted(set(params[:, 1].tolist())):
        keys = None
        for p, rows in enumerate(members):
            if len(rows) == 0:
                continue
            i = np.minimum(np.searchsorted(_XQS, uppers[p] / q_size, "left"), len(_XQS) - 1)
            b, rq = params[i, 0], params[i, 1]
            mine = rq == r
            if not mine.any():
                continue
            if keys is None:
                keys = _band_key_matrix(sig, r, num_perm // r)
            for band in range(int(b[mine].max())):
                who = queries[mine & (b > band)]
                qpos, x = _join(keys[rows, band], rows, keys[who, band])
                qrow = who[qpos]
                keep = qrow != x
                codes.append(np.unique(qrow[keep] * n + x[keep]))
    if not codes:
        return np.zeros((0, 2), np.int64)
    code = np.unique(np.concatenate(codes))
    return np.stack([code // n, code % n], axis=1)


PRODUCT_BUDGET = 1 << 22  # entries of one block's (queries x rows) product in sampled_candidates
MAX_THREADS = 8  # threads of sampled_candidates at most (its blocks: scipy's product frees the GIL)


def available_cores() -> int:
    """The cores this process may use, at least 1: its CPU affinity, and no more than
    ``OMP_NUM_THREADS`` when that is set (a scheduler such as Ray sets it to the CPUs it
    reserved for the task, so the threads stay within the reservation)."""
    try:
        cores = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no affinity off Linux
        cores = os.cpu_count() or 1
    given = os.environ.get("OMP_NUM_THREADS", "")
    return min(cores, int(given)) if given.isdigit() and int(given) > 0 else cores


def sampled_candidates(
    offsets: np.ndarray,
    values: np.ndarray,
    queries: np.ndarray,
    threshold: float,
    slack: float = 0.5,
    max_docs: int = 1000,
    block: int = 2048,
    threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(q, x)`` row pairs, q in ``queries``, x != q, where x holds at least ``slack *
    threshold`` of q's sampled shingles (``values[offsets[i]:offsets[i+1]]``, distinct per row),
    and the share of q's samples found in x. Samples held by more than ``max_docs`` rows
    (boilerplate) are not indexed; they still count in q's total. The blocks of queries run on
    ``threads`` threads (default: the cores this process may use, at most ``MAX_THREADS``; the
    step runs alone, between two barriers of the plan); the result does not depend on it."""
    import scipy.sparse as sp

    n = len(offsets) - 1
    if n == 0 or len(values) == 0 or len(queries) == 0:
        return np.zeros((0, 2), np.int64), np.zeros(0)
    uniq, col, df = np.unique(values, return_inverse=True, return_counts=True)
    rare = df[col] <= max_docs
    row = np.repeat(np.arange(n), np.diff(offsets))
    ones = np.ones(int(rare.sum()), np.int32)
    x = sp.csr_matrix((ones, (row[rare], col[rare])), shape=(n, len(uniq)))
    xt = x.T.tocsr()
    totals = np.diff(offsets)
    pairs, shares = [np.zeros((0, 2), np.int64)], [np.zeros(0)]
    # bounded memory: one block of queries at once, whose product with every row has at most
    # ``PRODUCT_BUDGET`` entries (shared boilerplate can make it dense: 2,048 queries x 40k
    # rows took +320 MB; the blocks' results are the same whatever their size)
    block = max(1, min(block, PRODUCT_BUDGET // n))

    def found(start: int) -> tuple[np.ndarray, np.ndarray]:
        mine = queries[start : start + block]
        shared = (x[mine] @ xt).tocoo()
        total = totals[mine][shared.row]
        qrow = mine[shared.row]
        keep = (qrow != shared.col) & (shared.data >= slack * threshold * total)
        return (
            np.stack([qrow[keep], shared.col[keep].astype(np.int64)], axis=1),
            shared.data[keep] / total[keep],
        )

    starts = range(0, len(queries), block)
    workers = min(threads or available_cores(), MAX_THREADS, len(starts))
    if workers > 1:  # in order, at most ~2 blocks per thread in memory at once
        with ThreadPoolExecutor(workers) as pool:
            for p, s in _in_order(pool, found, starts, 2 * workers):
                pairs.append(p)
                shares.append(s)
    else:
        for start in starts:
            p, s = found(start)
            pairs.append(p)
            shares.append(s)
    return np.concatenate(pairs), np.concatenate(shares)


def _in_order(
    pool: ThreadPoolExecutor, fn: Callable[[int], T], items: Iterable[int], ahead: int
) -> Iterator[T]:
    """``fn`` over ``items`` on ``pool``, results in order, at most ``ahead`` pending at once
    (``Executor.map`` submits every item first, so all results could wait in memory)."""
    pending: deque[Future[T]] = deque()
    for item in items:
        pending.append(pool.submit(fn, item))
        if len(pending) >= ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


def estimated_containment(
    sig: np.ndarray, sizes: np.ndarray, pairs: np.ndarray, block: int = 1 << 15
) -> np.ndarray:
    """|A ∩ B| / |A| of each pair (a, b) estimated from MinHash Jaccard and the set sizes."""
    out = np.zeros(len(pairs))
    for start in range(0, len(pairs), block):  # bounded memory: a block of pairs at once
        a, b = pairs[start : start + block, 0], pairs[start : start + block, 1]
        j = (sig[a] == sig[b]).mean(axis=1)
        out[start : start + block] = np.minimum(
            j * (sizes[a] + sizes[b]) / ((1.0 + j) * sizes[a]), 1.0
        )
    return out


def exact_containment(a: np.ndarray, b: np.ndarray) -> float:
    """Share of the sorted distinct hashes ``a`` that are also in ``b``."""
    if len(a) == 0:
        return 0.0
    return len(np.intersect1d(a, b, assume_unique=True)) / len(a)


def choose_containers(pairs: np.ndarray, rank: np.ndarray) -> np.ndarray:
    """Container of each document (-1: kept) from verified edges ``(a, b)``: a lies in b.

    A document is removed when it lies in a document that is kept; a container is never removed
    for containing others. Mutual containment (two renditions of one text) keeps the better
    ``rank`` (0 = best, the keep policy's). Among several kept containers the best ranked is
    named. Edges are followed depth first, so a chain a in b in c keeps c, removes b, and
    removes a only when it also lies in c (or in another kept document).
    """
    n = len(rank)
    container = np.full(n, -2, np.int64)  # -2: undecided, -1: kept, >= 0: removed, lies in it
    if len(pairs) == 0:
        container[:] = -1
        return container
    a, b = pairs[:, 0], pairs[:, 1]
    code = set((a * n + b).tolist())
    reverse = np.fromiter(((y * n + x) in code for x, y in zip(a, b, strict=True)), bool, len(a))
    keep_edge = ~reverse | (rank[a] > rank[b])  # mutual: only the worse one may go
    a, b = a[keep_edge], b[keep_edge]
    order = np.lexsort((rank[b], a))
    a, b = a[order], b[order]
    starts = np.searchsorted(a, np.arange(n + 1))
    has_out = starts[1:] > starts[:-1]
    container[~has_out] = -1
    for start in np.flatnonzero(has_out).tolist():
        if container[start] != -2:
            continue
        stack, on_stack = [[start, int(starts[start])]], {start}
        while stack:
            node, k = stack[-1]
            end = int(starts[node + 1])
            descended = False
            while k < end:
                t = int(b[k])
                state = container[t]
                if state == -1:
                    break
                if state == -2 and t not in on_stack:
                    stack[-1][1] = k
                    stack.append([t, int(starts[t])])
                    on_stack.add(t)
                    descended = True
                    break
                k += 1  # removed, or on the stack (a cycle): not a container
            if descended:
                continue
            container[node] = int(b[k]) if k < end else -1
            stack.pop()
            on_stack.discard(node)
    return container
