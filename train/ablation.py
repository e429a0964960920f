"""The statistics of a data ablation: intervals over the seeds actually run.

Every variant is trained with the same seeds (model init and data order), so the comparison
with the baseline is *paired* by seed: d_s = L_variant,s − L_baseline,s over the seeds both
ran, and its Student-t interval mean(d) ± t_{(1+c)/2, n−1} · sd(d)/√n. A difference is
distinguishable from seed noise when that interval excludes 0. With one seed there is no
interval (sd is undefined), and the report says so instead of printing one.

:func:`seeds_to_resolve`: the seeds a paired comparison needs so that its interval's half-width
is at most ``rel`` of the loss, for a seed-to-seed sd of the difference measured here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats

LN2 = math.log(2.0)


def t_interval(values: Sequence[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean, sample sd and the Student-t interval of ``values`` (``lo``/``hi`` None for n < 2)."""
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    out: dict[str, Any] = {"n": n, "mean": float(x.mean()) if n else math.nan}
    if n < 2:
        return {**out, "sd": None, "half_width": None, "lo": None, "hi": None}
    sd = float(x.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1) * sd / math.sqrt(n))
    return {**out, "sd": sd, "half_width": half, "lo": out["mean"] - half, "hi": out["mean"] + half}


def paired_difference(
    baseline: Mapping[int, float], other: Mapping[int, float], confidence: float = 0.95
) -> dict[str, Any]:
    """``other − baseline`` paired by seed over the seeds both have: the t-interval of the
    per-seed differences, relative to the baseline's mean, and whether it excludes 0."""
    seeds = sorted(set(baseline) & set(other))
    diffs = [other[s] - baseline[s] for s in seeds]
    interval = t_interval(diffs, confidence)
    base = float(np.mean([baseline[s] for s in seeds])) if seeds else math.nan
    distinguishable = None
    if interval["lo"] is not None:
        distinguishable = bool(interval["lo"] > 0 or interval["hi"] < 0)
    return {
        "seeds": seeds,
        "diffs": diffs,
        **interval,
        "mean_baseline": base,
        "relative": interval["mean"] / base if seeds else math.nan,
        "distinguishable": distinguishable,
    }


def seeds_to_resolve(
    sd_diff: float, loss: float, rel: float = 0.005, confidence: float = 0.95, cap: int = 10**6
) -> int | None:
    """The smallest n ≥ 2 with t_{(1+c)/2, n−1} · sd_diff / √n ≤ rel · loss: paired seeds per
    variant for a difference of ``rel`` of the loss to lie outside the interval's half-width
    (None when even ``cap`` seeds do not; 2 when the noise is already below it)."""
    target = rel * loss
    if sd_diff <= 0:
        return 2
    # z-approximation first, then walk up to the exact t criterion
    n = max(2, int((stats.norm.ppf((1 + confidence) / 2) * sd_diff / target) ** 2))
    while n <= cap:
        if stats.t.ppf((1 + confidence) / 2, n - 1) * sd_diff / math.sqrt(n) <= target:
            return n
        n += 1 if n < 1000 else n // 100
    return None


def bits_per_byte(nats_per_token: float, target_tokens: int, target_bytes: int) -> float:
    """Σ nats over the target tokens / (ln 2 · the UTF-8 bytes they stand for)."""
    return nats_per_token * target_tokens / (LN2 * target_bytes)


def fmt_interval(mean: float, lo: float | None, hi: float | None, digits: int = 4) -> str:
    """``mean [lo, hi]``, or ``mean (no interval: 1 seed)``."""
    if lo is None or hi is None:
        return f"{mean:.{digits}f} (no interval: 1 seed)"
    return f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"
