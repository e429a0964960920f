"""Domain mixing on real sample documents (rst, fortunes in 4 languages, code, prose)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate import mix
from tests.shards_sample import sample_docs, split_parts


@pytest.fixture(scope="module")
def docs() -> pa.Table:
    return sample_docs()


def _plan(parts: list[pa.Table], cfg: mix.MixConfig) -> mix.MixPlan:
    available = mix.sum_counts(mix.available_tokens(p, cfg) for p in parts)
    return mix.plan_mixture(available, cfg, mix.token_source(parts[0], cfg.bytes_per_token))


def _selection(parts: list[pa.Table], plan: mix.MixPlan) -> dict[str, int]:
    out: dict[str, int] = {}
    for p in parts:
        sel = mix.apply_mixture(p, plan)
        out.update(
            zip(sel.column("id").to_pylist(), sel.column("repeats").to_pylist(), strict=True)
        )
    return out


def test_budget_weights_and_epoch_cap(docs):
    cfg = mix.MixConfig(
        weights={"rst": 4, "fortune": 3, "code": 2, "prose": 1},
        total_tokens=1_200_000,
        max_epochs=3,
        bytes_per_token=3.5,
    )
    parts = split_parts(docs, 4)
    plan = _plan(parts, cfg)
    # code is far too small for 20% of the budget: capped at exactly 3 whole epochs
    assert plan.keys["code"].capped and plan.keys["code"].ratio == 3
    code = docs.filter(pa.compute.equal(docs.column("domain"), "code"))
    assert set(mix.mixture_repeats(code, plan).tolist()) == {3}
    # the shortfall goes to the others in proportion to their weights
    free = {k: e for k, e in plan.keys.items() if not e.capped}
    shares = {k: e.target_tokens / e.weight for k, e in free.items()}
    assert max(shares.values()) == pytest.approx(min(shares.values()))
    assert sum(e.target_tokens for e in plan.keys.values()) == pytest.approx(1_200_000)

    achieved = mix.sum_counts(mix.selected_tokens(mix.apply_mixture(p, plan), plan) for p in parts)
    report = mix.mixture_report(plan, achieved)
    assert report["achieved_tokens"] == pytest.approx(1_200_000, rel=0.01)
    for row in report["rows"]:
        e = plan.keys[row["key"]]
        assert row["achieved_tokens"] == pytest.approx(e.target_tokens, rel=0.03), row
    assert report["rows"][0]["key"] == "code"
    md = mix.mixture_markdown(report)
    assert "| code | 20.00% |" in md and "yes" in md
    png = mix.mixture_png(report)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_selection_is_stable_across_partitioning(docs):
    cfg = mix.MixConfig(weights={"rst": 1, "fortune": 1, "prose": 1}, total_tokens=600_000)
    plan_a = _plan(split_parts(docs, 2), cfg)
    plan_b = _plan(split_parts(docs, 7)[::-1], cfg)
    assert plan_a == plan_b
    sel_a = _selection(split_parts(docs, 2), plan_a)
    sel_b = _selection(split_parts(docs, 7)[::-1], plan_b)
    assert sel_a == sel_b
    assert set(sel_a.values()) <= {1, 2, 3, 4}
    # another seed draws another subsample of the down-sampled domains
    other = _selection([docs], _plan([docs], cfg.model_copy(update={"seed": 1})))
    assert other != sel_a


def test_downsampling_and_fractional_upsampling(docs):
    cfg = mix.MixConfig(weights={"fortune": 1}, total_tokens=100_000)
    plan = _plan([docs], cfg)
    r = plan.keys["fortune"].ratio
    assert 0 < r < 1
    rep = mix.mixture_repeats(docs, plan)
    fortune = np.array(docs.column("domain").to_pylist()) == "fortune"
    assert set(rep[fortune].tolist()) == {0, 1} and rep[~fortune].sum() == 0
    assert rep[fortune].mean() == pytest.approx(r, abs=0.03)

    plan_up = _plan([docs], cfg.model_copy(update={"total_tokens": int(2.5 / r * 100_000)}))
    rep_up = mix.mixture_repeats(docs, plan_up)[fortune]
    assert set(rep_up.tolist()) == {2, 3}
    assert rep_up.mean() == pytest.approx(2.5, abs=0.05)


def test_language_keys_and_default_budget(docs):
    cfg = mix.MixConfig(weights={"fortune/de": 1, "fortune/es": 1, "rst": 2})
    plan = _plan([docs], cfg)
    # no budget: the scarcest key (by weight) is taken whole, the others down-sampled
    assert max(e.ratio for e in plan.keys.values()) == pytest.approx(1.0)
    sel = mix.apply_mixture(docs, plan)
    keys = set(zip(sel.column("domain").to_pylist(), sel.column("lang").to_pylist(), strict=True))
    assert keys == {("fortune", "de"), ("fortune", "es"), ("rst", "en")}
    achieved = mix.selected_tokens(sel, plan)
    total = sum(achieved.values())
    assert achieved["rst"] / total == pytest.approx(0.5, abs=0.05)


def test_real_token_counts_are_used_when_present(docs):
    cfg = mix.MixConfig(weights={"code": 1}, bytes_per_token=1.0)
    code = docs.filter(pa.compute.equal(docs.column("domain"), "code"))
    estimated = mix.available_tokens(code, cfg)["code"].sum()
    counted = code.append_column("n_tokens", pa.array(np.full(code.num_rows, 7), pa.int64()))
    assert mix.available_tokens(counted, cfg)["code"].sum() == 7 * code.num_rows != estimated
    assert mix.token_source(counted, 1.0) == "n_tokens"


def test_config_rejects_bad_weights():
    with pytest.raises(ValueError):
        mix.MixConfig(weights={"code": -1, "rst": 2})
    with pytest.raises(ValueError):
        mix.MixConfig(weights={})


def test_weight_of_a_key_without_documents_is_ignored_not_an_empty_mix(docs):
    """A weighted domain with no documents (all filtered away) used to make the budget 0 and
    empty the whole mix; now its weight is ignored, recorded, and the rest renormalised."""
    cfg = mix.MixConfig(weights={"rst": 1, "code": 1, "web": 1})
    parts = split_parts(docs, 3)
    plan = _plan(parts, cfg)
    assert plan.ignored == {"web": "no documents at mix time"}
    assert plan.keys["rst"].weight == pytest.approx(0.5)
    achieved = mix.sum_counts(mix.selected_tokens(mix.apply_mixture(p, plan), plan) for p in parts)
    assert achieved["rst"] > 0 and achieved["code"] > 0
    assert achieved["rst"] / (achieved["rst"] + achieved["code"]) == pytest.approx(0.5, abs=0.05)
    report = mix.mixture_report(plan, achieved)
    assert report["ignored"] == {"web": "no documents at mix time"}
    assert "Weight of `web` ignored" in mix.mixture_markdown(report)


def test_no_weighted_key_with_documents_names_the_domains_that_exist(docs):
    cfg = mix.MixConfig(weights={"web": 1, "pdf": 2})
    with pytest.raises(ValueError) as e:
        _plan([docs], cfg)
    msg = str(e.value)
    assert "mix.weights: no weighted domain has documents (pdf, web)" in msg
    assert "code" in msg and "rst" in msg and "\n" not in msg


def test_config_rejects_unsafe_epochs_and_weights():
    for bad in (-1, 0, 0.5, 256, 300, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="max_epochs"):
            mix.MixConfig(weights={"rst": 1}, max_epochs=bad)
    for w in (float("nan"), float("inf"), -1.0):
        with pytest.raises(ValueError, match="weights"):
            mix.MixConfig(weights={"rst": 1, "web": w})
    with pytest.raises(ValueError, match="bytes_per_token"):
        mix.MixConfig(weights={"rst": 1}, bytes_per_token=0)


def test_repeats_never_wrap_around_uint8(docs):
    """A plan asking for more than 255 repeats (only by hand: the config caps max_epochs) is an
    error, not 300 % 256 = 44 repeats."""
    entry = mix.MixEntry(
        weight=1.0, available_tokens=1, target_tokens=1.0, ratio=300.0, threshold=0.0, capped=True
    )
    plan = mix.MixPlan(budget_tokens=1.0, seed=0, token_source="", bytes_per_token=4.0)
    plan.keys["rst"] = entry
    with pytest.raises(ValueError, match="repeats over 255"):
        mix.mixture_repeats(docs, plan)
    plan.keys["rst"] = entry.model_copy(update={"ratio": 255.0})
    assert mix.mixture_repeats(docs, plan).max() == 255
