"""datasketch's permutations and LSH parameter searches, computed without importing datasketch.

``import datasketch`` costs ~0.5 CPU s in every process that dedups (its package imports
``scipy.integrate``, ``redis`` and every index) for four small computations; here they are done
with numpy and give datasketch 2.0.0's results (``tests/test_dedup.py`` compares them over grids
of settings; one exception below):

- the affine32 permutations ``(a, b)``, drawn from ``np.random.RandomState(seed)`` as datasketch;
- ``MinHashLSH``'s (bands, rows): datasketch integrates the false-positive and false-negative
  probabilities with scipy's ``quad``. They are polynomials in ``s`` of degree ``b·r ≤ num_perm``,
  which Gauss–Legendre quadrature with ``num_perm // 2 + 1`` nodes integrates exactly;
- ``MinHashLSHEnsemble``'s (bands, rows) per x/q ratio: the integrands are rational in ``t`` with
  their pole at ``t = 1 + x/q``, outside the interval, so Gauss–Legendre converges geometrically:
  with ``num_perm`` nodes the areas are within 1e-13 of those with 8× as many. Where two
  candidates' weighted errors are equal to the last bit (large x/q, where every candidate misses
  everything), datasketch's pick comes from quad's rounding and this one's may differ: 11 of
  2,160 settings of a grid (num_perm 32–256, m 4–16, thresholds 0.3–0.95, weights 0.2–0.95),
  none at the default settings, each a tie within 1.4e-17;
- the ensemble's size partitions: datasketch's own ``lshensemble_partition`` module (numpy only),
  loaded from its file without running the package's ``__init__``.

The searches keep datasketch's order (bands outer, rows inner) and its tie rule (the first
minimum wins).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from functools import cache, lru_cache
from pathlib import Path
from types import ModuleType

import numpy as np


@lru_cache(maxsize=32)
def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """datasketch's affine32 permutation parameters ``(a, b)`` (uint32) for this seed."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return a, b


@lru_cache(maxsize=8)
def _gauss_legendre(nodes: int) -> tuple[np.ndarray, np.ndarray]:
    return np.polynomial.legendre.leggauss(nodes)


def _areas(
    lo: float, hi: float, integrand: Callable[[np.ndarray], np.ndarray], nodes: int
) -> np.ndarray:
    """``∫_lo^hi integrand`` per candidate (``integrand`` maps the ``nodes`` abscissae to a
    ``(candidates, nodes)`` array), by Gauss–Legendre quadrature."""
    x, w = _gauss_legendre(nodes)
    half = (hi - lo) / 2
    return (integrand(half * (x + 1) + lo) * w).sum(axis=1) * half


def _first_minimum(
    pairs: list[tuple[int, int]], fp: np.ndarray, fn: np.ndarray, false_negative_weight: float
) -> tuple[int, int]:
    error = fp * (1.0 - false_negative_weight) + fn * false_negative_weight
    return pairs[int(np.argmin(error))]  # argmin: the first of equal minima, as datasketch's `<`


@lru_cache(maxsize=32)
def optimal_params(
    threshold: float, num_perm: int, false_negative_weight: float = 0.5
) -> tuple[int, int]:
    """(bands, rows) minimising the weighted false positive + negative areas (datasketch's
    ``lsh._optimal_param``)."""
    pairs = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bands = np.array([b for b, _ in pairs], np.float64)[:, None]
    rows = np.array([r for _, r in pairs], np.float64)[:, None]
    nodes = num_perm // 2 + 1  # exact for degree ≤ 2·nodes − 1 ≥ num_perm ≥ b·r
    fp = _areas(0.0, threshold, lambda s: 1.0 - (1.0 - s**rows) ** bands, nodes)
    fn = _areas(threshold, 1.0, lambda s: (1.0 - s**rows) ** bands, nodes)
    return _first_minimum(pairs, fp, fn, false_negative_weight)


def ensemble_optimal_param(
    threshold: float, num_perm: int, max_r: int, xq: float, false_negative_weight: float
) -> tuple[int, int]:
    """(bands, rows) for containment ``threshold`` at size ratio ``xq`` = x/q (datasketch's
    ``lshensemble._optimal_param``; ties: module doc)."""
    pairs = [
        (b, r) for b in range(1, num_perm + 1) for r in range(1, max_r + 1) if b * r <= num_perm
    ]
    bands = np.array([b for b, _ in pairs], np.float64)[:, None]
    rows = np.array([r for _, r in pairs], np.float64)[:, None]
    nodes = num_perm  # areas within 1e-13 of 8x as many nodes (module doc)

    def jaccard(t: np.ndarray) -> np.ndarray:  # containment t of q in x, as Jaccard at x/q
        return (t / (1.0 + xq - t)) ** rows

    fp = _areas(0.0, min(threshold, xq), lambda t: 1 - (1 - jaccard(t)) ** bands, nodes)
    if xq >= threshold:
        fn = _areas(threshold, min(xq, 1.0), lambda t: (1 - jaccard(t)) ** bands, nodes)
    else:
        fn = np.zeros(len(pairs))
    return _first_minimum(pairs, fp, fn, false_negative_weight)


@cache
def _datasketch_partition_module() -> ModuleType:
    """datasketch's ``lshensemble_partition`` (imports only numpy), loaded from its file."""
    spec = importlib.util.find_spec("datasketch")
    if spec is None or spec.origin is None:
        raise ImportError("datasketch is not installed")
    path = Path(spec.origin).with_name("lshensemble_partition.py")
    module_spec = importlib.util.spec_from_file_location("_sluice_datasketch_partition", path)
    if module_spec is None or module_spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def optimal_partitions(sizes: np.ndarray, counts: np.ndarray, num_part: int) -> list[tuple]:
    """datasketch's ``optimal_partitions``: (lower, upper) set sizes of each partition."""
    return _datasketch_partition_module().optimal_partitions(sizes, counts, num_part)
