"""Domain mixing: target weights + a token budget → a repeat count per document.

Map/reduce shape (the flow runs the maps per part, in parallel):

1. ``available_tokens(part, cfg)`` per part (map): per key, a histogram of tokens over the
   documents' hash values; summed with ``sum_counts`` (reduce);
2. ``plan_mixture(available, cfg)`` once (reduce): the sampling ratio of every mixture key;
3. ``apply_mixture(part, plan)`` per part (map): adds ``repeats`` and drops documents with 0;
4. ``selected_tokens(part, plan)`` per part, summed → ``mixture_report(plan, achieved)``:
   target next to achieved as a dict, a markdown table and a PNG.

Mixture keys: a document's key is ``"<domain>/<lang>"`` when that key has a weight, else
``"<domain>"`` when that has one; documents of any other key get no weight and are dropped.

Tokens: a table with an ``n_tokens`` column (the real counts, e.g. from
``curate.shards.write.encode_part``) is counted exactly; otherwise tokens are estimated as
UTF-8 bytes / ``bytes_per_token``. So the same plan runs before the tokenizer exists (to draw
its training sample from the mixture) and after encoding, with real counts.

Sampling: ratio r = target tokens / available tokens, capped at ``max_epochs``. A document gets
``floor(r)`` whole epochs plus one more when its stable hash u (of its id and the seed) is below
the key's threshold; r < 1 is plain down-sampling by hash. The threshold is the token-weighted
quantile of u at ``r - floor(r)`` (from the histograms), not ``r - floor(r)`` itself: a key
made of a few large documents then still gets its target within about one document, where
independent coin flips would miss it by a lot. The choice depends only on the id, the seed and
the plan, never on part boundaries or order. When a key hits the epoch cap, its
shortfall is spread over the other keys in proportion to their weights (water-filling), so the
budget is met whenever the data allow; the report shows where the achieved mix departs.

A weighted key with no documents at mix time (every document of the domain filtered away) gets
no share: its weight is ignored, the others are renormalised, and the plan, the report
(``ignored``) and the log say so; when no weighted key has documents, ``plan_mixture`` raises a
ValueError naming the weighted keys and the keys the documents have. Never an empty mix. (A
weighted domain that no input can produce is a config error, see ``curate.config``.)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash
from pydantic import BaseModel, ConfigDict, Field, field_validator

_U64 = float(1 << 64)
HASH_BINS = 4096  # resolution of the per-key token histograms over the hash value
_log = logging.getLogger("sluice.mix")


def stable_uniform(ids: Iterable[str], seed: int, salt: str) -> np.ndarray:
    """A deterministic pseudo-uniform number in [0, 1) per id (xxh64 of salt + id, seeded).

    ``salt`` keeps the draws for different purposes (mixing, splitting, ordering) independent.
    """
    prefix = f"{salt}\x00".encode()
    out = np.fromiter(
        (xxhash.xxh64_intdigest(prefix + str(i).encode(), seed=seed) for i in ids),
        dtype=np.float64,
    )
    return out / _U64


MAX_REPEATS = 255  # repeats are stored as uint8


class MixConfig(BaseModel):
    """Target mixture. Weights need not sum to 1 (they are normalised)."""

    model_config = ConfigDict(extra="forbid")
    weights: dict[str, float]  # "<domain>" or "<domain>/<lang>" -> weight
    total_tokens: int | None = Field(None, ge=1)  # None: largest budget with no key above 1 epoch
    max_epochs: float = Field(4.0, ge=1, le=MAX_REPEATS, allow_inf_nan=False)
    bytes_per_token: float = Field(4.0, gt=0, allow_inf_nan=False)  # when no n_tokens column
    seed: int = 0

    @field_validator("weights")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, w in v.items() if not math.isfinite(w) or w < 0]
        if bad:
            raise ValueError(f"weights of {', '.join(map(repr, bad))} must be finite and >= 0")
        if not v or sum(v.values()) <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        return v


class MixEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    weight: float  # normalised target weight
    available_tokens: int
    target_tokens: float
    ratio: float  # expected repeats per document (epochs), after the cap
    threshold: float  # one extra epoch for documents whose hash is below this
    capped: bool


class MixPlan(BaseModel):
    model_config = ConfigDict(extra="forbid")
    budget_tokens: float
    seed: int
    token_source: str  # "n_tokens" (real counts) or "bytes/<bytes_per_token>" (estimate)
    bytes_per_token: float
    keys: dict[str, MixEntry] = Field(default_factory=dict)
    ignored: dict[str, str] = Field(default_factory=dict)  # weighted key -> why it got no share

    @property
    def target_weights(self) -> dict[str, float]:
        return {k: e.weight for k, e in self.keys.items()}


def mix_keys(table: pa.Table, weighted: Iterable[str]) -> list[str | None]:
    """The mixture key of every row (None: the row's domain/language has no weight)."""
    weighted = set(weighted)
    domains = table.column("domain").to_pylist()
    langs = (
        table.column("lang").to_pylist() if "lang" in table.column_names else [None] * len(domains)
    )
    keys: list[str | None] = []
    for d, lang in zip(domains, langs, strict=True):
        if lang and f"{d}/{lang}" in weighted:
            keys.append(f"{d}/{lang}")
        elif d in weighted:
            keys.append(d)
        else:
            keys.append(None)
    return keys


def doc_tokens(table: pa.Table, bytes_per_token: float) -> np.ndarray:
    """Tokens per document: the ``n_tokens`` column if present, else bytes / bytes_per_token."""
    if "n_tokens" in table.column_names:
        return table.column("n_tokens").to_numpy(zero_copy_only=False).astype(np.float64)
    nbytes = pc.binary_length(table.column("text").cast(pa.large_binary()))
    return nbytes.to_numpy(zero_copy_only=False).astype(np.float64) / bytes_per_token


def token_source(table: pa.Table, bytes_per_token: float) -> str:
    return "n_tokens" if "n_tokens" in table.column_names else f"bytes/{bytes_per_token:g}"


def _sum_by_key(keys: list[str | None], values: np.ndarray) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in zip(keys, values.tolist(), strict=True):
        if k is not None:
            out[k] = out.get(k, 0.0) + v
    return out


UNWEIGHTED = "unweighted:"  # available_tokens' key prefix for the tokens of a domain with no weight


def available_tokens(table: pa.Table, cfg: MixConfig) -> dict[str, np.ndarray | float]:
    """Map: per mixture key, tokens histogrammed over the documents' hash (HASH_BINS bins);
    plus ``UNWEIGHTED + domain``: the total tokens of documents no weight selects (named when
    no weighted key has documents)."""
    keys = np.array(mix_keys(table, cfg.weights), dtype=object)
    tokens = doc_tokens(table, cfg.bytes_per_token)
    bins = np.minimum(
        (stable_uniform(table.column("id").to_pylist(), cfg.seed, "mix") * HASH_BINS).astype(int),
        HASH_BINS - 1,
    )
    out: dict[str, np.ndarray | float] = {}
    for k in sorted({k for k in keys if k is not None}):
        mask = keys == k
        out[k] = np.bincount(bins[mask], weights=tokens[mask], minlength=HASH_BINS)
    unweighted = keys == None  # noqa: E711 - elementwise over an object array
    if unweighted.any():
        domains = np.array(table.column("domain").to_pylist(), dtype=object)[unweighted]
        for d, t in _sum_by_key(list(domains), tokens[unweighted]).items():
            out[UNWEIGHTED + d] = t
    return out


def sum_counts(counts: Iterable[Mapping[str, float | np.ndarray]]) -> dict:
    """Reduce: add per-key counts (numbers or histograms) from many parts."""
    out: dict = {}
    for c in counts:
        for k, v in c.items():
            out[k] = out[k] + v if k in out else v
    return out


def _threshold(hist: np.ndarray, fraction: float) -> float:
    """The hash value below which ``fraction`` of the key's tokens lie (interpolated)."""
    total = float(hist.sum())
    if fraction <= 0 or total <= 0:
        return 0.0
    need = fraction * total
    cum = np.cumsum(hist)
    b = int(np.searchsorted(cum, need))
    if b >= len(hist):
        return 1.0
    before = cum[b - 1] if b else 0.0
    return float((b + (need - before) / hist[b]) / len(hist))


def plan_mixture(
    available: Mapping[str, np.ndarray | float], cfg: MixConfig, token_source: str = ""
) -> MixPlan:
    """Reduce: the sampling ratio per key that meets the weights and budget (see module doc)."""
    hists = {k: np.asarray(available.get(k, np.zeros(HASH_BINS)), float) for k in cfg.weights}
    avail = {k: float(h.sum()) for k, h in hists.items()}
    ignored = {
        k: "no documents at mix time" for k, w in sorted(cfg.weights.items()) if avail[k] <= 0
    }
    kept = {k: w for k, w in cfg.weights.items() if k not in ignored and w > 0}
    if not kept:
        found = sorted(
            k.removeprefix(UNWEIGHTED) for k, a in available.items() if float(np.sum(a)) > 0
        )
        raise ValueError(
            f"mix.weights: no weighted domain has documents ({', '.join(sorted(cfg.weights))}); "
            f"the documents' domains are: {', '.join(found) or 'none'}"
        )
    for k, why in ignored.items():
        _log.warning("mix: weight of %r ignored: %s (the others are renormalised)", k, why)
    total_w = sum(kept.values())
    weights = {k: kept.get(k, 0.0) / total_w for k in sorted(cfg.weights)}
    if cfg.total_tokens is None:
        limits = [avail[k] / w for k, w in weights.items() if w > 0]
        budget = min(limits) if limits else 0.0
    else:
        budget = float(cfg.total_tokens)
    # Water-filling: keys that cannot reach their share (epoch cap) are fixed at the cap and
    # the rest of the budget is shared by the others in proportion to their weights.
    capped: set[str] = set()
    target: dict[str, float] = {}
    while True:
        free = [k for k, w in weights.items() if w > 0 and k not in capped]
        left = budget - sum(cfg.max_epochs * avail[k] for k in capped)
        free_w = sum(weights[k] for k in free)
        newly = []
        for k in free:
            t = left * weights[k] / free_w if free_w > 0 else 0.0
            if t > cfg.max_epochs * avail[k] * (1 + 1e-12):
                newly.append(k)
            target[k] = t
        if not newly:
            break
        capped.update(newly)
    for k in capped:
        target[k] = cfg.max_epochs * avail[k]
    entries = {}
    for k, w in weights.items():
        t = target.get(k, 0.0) if w > 0 else 0.0
        ratio = min(t / avail[k] if avail[k] > 0 else 0.0, cfg.max_epochs)
        entries[k] = MixEntry(
            weight=w,
            available_tokens=round(avail[k]),
            target_tokens=t,
            ratio=ratio,
            threshold=_threshold(hists[k], ratio - np.floor(ratio)),
            capped=k in capped,
        )
    return MixPlan(
        budget_tokens=budget,
        seed=cfg.seed,
        token_source=token_source,
        bytes_per_token=cfg.bytes_per_token,
        keys=entries,
        ignored=ignored,
    )


def mixture_repeats(table: pa.Table, plan: MixPlan) -> np.ndarray:
    """Map: how many times each row goes into the mix (0 = dropped), uint8."""
    keys = mix_keys(table, plan.keys)
    whole = np.array([np.floor(plan.keys[k].ratio) if k else 0 for k in keys], dtype=np.int64)
    threshold = np.array([plan.keys[k].threshold if k else 0.0 for k in keys])
    u = stable_uniform(table.column("id").to_pylist(), plan.seed, "mix")
    repeats = whole + (u < threshold)
    if repeats.size and int(repeats.max()) > MAX_REPEATS:  # the config caps max_epochs first
        raise ValueError(f"repeats over {MAX_REPEATS} (mix.max_epochs too large for uint8)")
    return repeats.astype(np.uint8)


def apply_mixture(table: pa.Table, plan: MixPlan) -> pa.Table:
    """Map: the selected rows of one part with their ``repeats`` column."""
    repeats = mixture_repeats(table, plan)
    if "repeats" in table.column_names:
        table = table.drop_columns(["repeats"])
    table = table.append_column("repeats", pa.array(repeats, pa.uint8()))
    return table.filter(pa.array(repeats > 0))


def selected_tokens(table: pa.Table, plan: MixPlan) -> dict[str, float]:
    """Map: tokens per key after selection (× repeats) in one part; sum with ``sum_counts``."""
    repeats = (
        table.column("repeats").to_numpy(zero_copy_only=False)
        if "repeats" in table.column_names
        else mixture_repeats(table, plan)
    )
    tokens = doc_tokens(table, plan.bytes_per_token) * repeats
    return _sum_by_key(mix_keys(table, plan.keys), tokens)


def mixture_report(plan: MixPlan, achieved: Mapping[str, float]) -> dict:
    """Target next to achieved per key (tokens and shares) as a JSON-able dict."""
    total = sum(achieved.get(k, 0.0) for k in plan.keys) or 1.0
    rows = []
    for k, e in plan.keys.items():
        got = float(achieved.get(k, 0.0))
        rows.append(
            {
                "key": k,
                "target_weight": e.weight,
                "achieved_weight": got / total,
                "available_tokens": e.available_tokens,
                "target_tokens": round(e.target_tokens),
                "achieved_tokens": round(got),
                "epochs": got / e.available_tokens if e.available_tokens else 0.0,
                "capped": e.capped,
            }
        )
    return {
        "budget_tokens": round(plan.budget_tokens),
        "achieved_tokens": round(sum(achieved.get(k, 0.0) for k in plan.keys)),
        "token_source": plan.token_source,
        "seed": plan.seed,
        "rows": rows,
        "ignored": dict(plan.ignored),
    }


def mixture_markdown(report: dict) -> str:
    lines = [
        f"Mixture: budget {report['budget_tokens']:,} tokens, achieved "
        f"{report['achieved_tokens']:,} ({report['token_source'] or 'tokens'}, seed {report['seed']})",
        "",
        "| key | target | achieved | available tok | target tok | achieved tok | epochs | capped |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in report["rows"]:
        lines.append(
            f"| {r['key']} | {r['target_weight']:.2%} | {r['achieved_weight']:.2%} | "
            f"{r['available_tokens']:,} | {r['target_tokens']:,} | {r['achieved_tokens']:,} | "
            f"{r['epochs']:.2f} | {'yes' if r['capped'] else ''} |"
        )
    for key, why in report.get("ignored", {}).items():
        lines.append(f"\nWeight of `{key}` ignored: {why}.")
    return "\n".join(lines) + "\n"


def mixture_png(report: dict) -> bytes:
    """Grouped bars, target vs achieved share per key, as PNG bytes."""
    from curate.plots import vbar_png

    rows = report["rows"]
    return vbar_png(
        [r["key"] for r in rows],
        {
            "target": [r["target_weight"] for r in rows],
            "achieved": [r["achieved_weight"] for r in rows],
        },
        f"Mixture: {report['achieved_tokens']:,} tokens",
        "share of tokens",
    )
