"""Scaling-law fit: recovers known parameters from noisy synthetic points; N*/D* are optimal."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from train.model import GPT, GPTConfig
from train.report import predict_run
from train.scaling import (
    CHINCHILLA,
    EPOCH_AI,
    EXPONENT_BOUNDS,
    HUBER_C,
    NOT_IDENTIFIED,
    ScalingLaw,
    analyse,
    compute_optimal_analysis,
    fit_scaling_law,
    gpt_params,
    load_fit,
    non_embedding_params,
    replicate_noise,
    save_fit,
    summary_lines,
    training_flops,
)
from train.scaling import _objective as scaling_objective


def _grid_points(law: ScalingLaw, noise: float, seed: int):
    rng = np.random.default_rng(seed)
    n = np.repeat(np.geomspace(1e6, 1e9, 6), 5)
    d = np.tile(np.geomspace(1e8, 1e11, 5), 6)
    loss = law.loss(n, d) * np.exp(rng.normal(0.0, noise, n.size))
    return n, d, loss


@pytest.mark.parametrize(
    "law", [EPOCH_AI, ScalingLaw(E=2.5, A=90.0, B=700.0, alpha=0.28, beta=0.4)]
)
def test_fit_recovers_known_parameters_with_noise(law):
    n, d, loss = _grid_points(law, noise=0.003, seed=7)
    fit = fit_scaling_law(n, d, loss)
    assert pytest.approx(law.E, rel=0.03) == fit.law.E
    assert fit.law.alpha == pytest.approx(law.alpha, abs=0.02)
    assert fit.law.beta == pytest.approx(law.beta, abs=0.02)
    # A and B trade off against their exponents; check the terms they produce instead
    mid_n, mid_d = 3e7, 3e9
    assert fit.law.A / mid_n**fit.law.alpha == pytest.approx(law.A / mid_n**law.alpha, rel=0.05)
    assert fit.law.B / mid_d**fit.law.beta == pytest.approx(law.B / mid_d**law.beta, rel=0.05)


def test_fit_is_robust_to_an_outlier():
    n, d, loss = _grid_points(EPOCH_AI, noise=0.002, seed=3)
    loss[4] *= 1.5  # one diverged run
    fit = fit_scaling_law(n, d, loss)
    assert fit.law.alpha == pytest.approx(EPOCH_AI.alpha, abs=0.02)
    assert fit.law.beta == pytest.approx(EPOCH_AI.beta, abs=0.02)


def test_fit_distinguishes_different_laws():
    # the same grid from two laws must not give the same fit (the test above can fail)
    n, d, loss = _grid_points(CHINCHILLA, noise=0.0, seed=0)
    fit = fit_scaling_law(n, d, loss)
    assert abs(fit.law.beta - EPOCH_AI.beta) > 0.05
    assert fit.law.beta == pytest.approx(CHINCHILLA.beta, abs=0.01)


def test_bootstrap_interval_covers_truth_and_extrapolation():
    n, d, loss = _grid_points(EPOCH_AI, noise=0.005, seed=11)
    fit = fit_scaling_law(n, d, loss, n_bootstrap=20, seed=1)
    iv = fit.param_intervals(level=0.95)
    assert iv["alpha"][0] < iv["alpha"][1]
    lo_e, hi_e = iv["E"]
    assert lo_e - 0.02 <= EPOCH_AI.E <= hi_e + 0.02
    point, lo, hi = fit.predict(1e10, 2e11, level=0.95)
    truth = EPOCH_AI.loss(1e10, 2e11)  # 10x beyond the largest N fitted
    assert lo <= point <= hi
    assert lo <= truth <= hi
    assert abs(point - truth) / truth < 0.03
    assert hi - lo < 0.1 * truth


def test_compute_optimal_lies_on_budget_and_minimises_loss():
    for law in (CHINCHILLA, EPOCH_AI):
        c = 5.76e23
        n_opt, d_opt = law.compute_optimal(c)
        assert training_flops(n_opt, d_opt) == pytest.approx(c, rel=1e-9)
        ns = n_opt * np.geomspace(0.5, 2.0, 41)
        losses = law.loss(ns, c / (6 * ns))
        assert np.argmin(losses) == 20  # the middle of the scan is n_opt
    # Epoch AI's refit puts ~20 tokens per parameter near Chinchilla's budget
    n_opt, d_opt = EPOCH_AI.compute_optimal(5.76e23)
    assert 10 < d_opt / n_opt < 40


def test_parameter_and_flop_counting():
    assert non_embedding_params(12, 768) == 12 * 12 * 768**2  # Kaplan's 12·L·d²
    gqa = non_embedding_params(2, 64, 172, n_head=4, n_kv_head=2, glu=True, norms=True)
    assert gqa == 2 * (2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 172 + 2 * 64) + 64


# a law of the size our CPU sweeps see (N 10⁴–10⁶ parameters, D 10⁵–10⁷ tokens)
SMALL = ScalingLaw(E=1.5, A=30.0, B=60.0, alpha=0.35, beta=0.3)


def _small_grid(law: ScalingLaw, noise: float, seed: int, ns=None, ds=None):
    rng = np.random.default_rng(seed)
    ns = np.geomspace(1e4, 1e6, 6) if ns is None else np.asarray(ns, dtype=float)
    ds = np.geomspace(1e5, 3e7, 8) if ds is None else np.asarray(ds, dtype=float)
    n, d = np.repeat(ns, ds.size), np.tile(ds, ns.size)
    return n, d, law.loss(n, d) * np.exp(rng.normal(0.0, noise, n.size))


def test_noisy_law_is_identified_and_recovered_within_its_intervals():
    n, d, loss = _small_grid(SMALL, noise=0.005, seed=4)
    fit = fit_scaling_law(n, d, loss, n_bootstrap=24, seed=2)
    assert fit.identified, fit.reasons
    iv = fit.param_intervals(0.9)
    for name, truth in (("E", SMALL.E), ("alpha", SMALL.alpha), ("beta", SMALL.beta)):
        assert iv[name][0] <= truth <= iv[name][1], (name, iv[name], truth)
    assert iv["alpha"][1] - iv["alpha"][0] < 0.2
    assert fit.diagnostics["condition"] < 1e8
    # the law's own prediction at 4x the largest compute lies inside the prediction interval
    point, lo, hi = fit.predict(2e6, 6e7)
    assert lo <= SMALL.loss(2e6, 6e7) <= hi
    # save/load keeps the verdict
    fit2 = load_fit(save_fit(fit, Path(__import__("tempfile").mkdtemp()) / "fit.json"))
    assert fit2.identified and fit2.param_count == fit.param_count


def _replicated_grid(seed: int, n_ds: int, seeds: int, sigma0: float, slope: float):
    """SMALL's losses on 5 N × ``n_ds`` D, each point trained ``seeds`` times, with log-normal
    noise σ(D) = sigma0·(D/1e5)^slope: (the N values, the D values, n, d, loss)."""
    rng = np.random.default_rng(seed)
    ns, ds = np.geomspace(1e4, 1e6, 5), np.geomspace(1e5, 3e7, n_ds)
    n, d = np.tile(np.repeat(ns, ds.size), seeds), np.tile(np.tile(ds, ns.size), seeds)
    sigma = sigma0 * (d / 1e5) ** slope
    return ns, ds, n, d, SMALL.loss(n, d) * np.exp(rng.normal(0.0, 1.0, n.size) * sigma)


def test_replicate_noise_weights_a_noisier_short_run_less():
    """Two seeds per point, noise falling with D as in the CPU study (σ ∝ D^-0.6): the noise
    model is recovered from the replicates, and the fit weighted by it holds the truth with a
    narrower β interval than the unweighted fit of the same points."""
    ns, ds, n, d, loss = _replicated_grid(seed=11, n_ds=7, seeds=2, sigma0=0.02, slope=-0.6)
    noise = replicate_noise(n, d, loss)
    assert noise is not None and noise.groups == ns.size * ds.size and noise.runs == n.size
    assert -0.85 < noise.exponent < -0.35, noise
    assert 0.5 < noise.sigma(1e5) / 0.02 < 2.0
    w = noise.weights(d)
    assert w.mean() == pytest.approx(1.0) and w[np.argmax(d)] > 10 * w[np.argmin(d)]
    plain = fit_scaling_law(n, d, loss, n_bootstrap=24, seed=3)
    weighted = fit_scaling_law(n, d, loss, n_bootstrap=24, seed=3, noise=noise)
    assert weighted.identified, weighted.reasons
    iv, iv_plain = weighted.param_intervals(), plain.param_intervals()
    for name, truth in (("alpha", SMALL.alpha), ("beta", SMALL.beta)):
        assert iv[name][0] <= truth <= iv[name][1], (name, iv[name], truth)
    assert iv["beta"][1] - iv["beta"][0] < iv_plain["beta"][1] - iv_plain["beta"][0]
    assert "in units of the noise (Huber c = 1.345)" in weighted.weights_text()
    assert plain.noise is None and plain.huber_c is None
    again = load_fit(save_fit(weighted, Path(__import__("tempfile").mkdtemp()) / "fit.json"))
    assert again.noise == noise and again.huber_c == HUBER_C
    # one replicated point, or replicates at one D only: no noise model
    assert replicate_noise(n[:36], d[:36], loss[:36]) is None
    same_d = d == d[0]
    assert replicate_noise(n[same_d], d[same_d], loss[same_d]) is None


def test_noise_scaled_objective_is_huber_of_the_standardised_residuals():
    """With a noise model the fit minimises Σ ρ_c(rᵢ/σᵢ) (Huber's M-estimator of known scale):
    δᵢ = c·σᵢ and weights 1/σᵢ² give exactly that, up to the weights' normalisation, with the
    gradient to match."""
    from scipy.special import huber

    rng = np.random.default_rng(5)
    n, d = np.repeat(np.geomspace(1e4, 1e6, 4), 5), np.tile(np.geomspace(1e5, 1e7, 5), 4)
    sigma = 0.02 * (d / 1e5) ** -0.5
    log_l = np.log(SMALL.loss(n, d)) + rng.standard_t(3, n.size) * sigma  # heavy tails
    theta = np.array([np.log(SMALL.A), np.log(SMALL.B), np.log(SMALL.E), 0.3, 0.35])
    weights = (1 / sigma**2) / np.mean(1 / sigma**2)
    value, grad = scaling_objective(theta, np.log(n), np.log(d), log_l, HUBER_C * sigma, weights)
    law = ScalingLaw(E=SMALL.E, A=SMALL.A, B=SMALL.B, alpha=0.3, beta=0.35)
    r = (np.log(law.loss(n, d)) - log_l) / sigma
    assert np.abs(r).max() > HUBER_C and np.abs(r).min() < HUBER_C  # both zones in play
    assert value == pytest.approx(huber(HUBER_C, r).sum() / np.mean(1 / sigma**2), rel=1e-9)
    for k in range(5):  # the gradient is the objective's
        step = np.zeros(5)
        step[k] = 1e-6
        up = scaling_objective(theta + step, np.log(n), np.log(d), log_l, HUBER_C * sigma, weights)
        down = scaling_objective(
            theta - step, np.log(n), np.log(d), log_l, HUBER_C * sigma, weights
        )
        assert grad[k] == pytest.approx((up[0] - down[0]) / 2e-6, rel=1e-4, abs=1e-6)


def test_noise_scaled_fit_shrugs_off_a_diverged_replicate():
    """Three seeds per point, σ(D) known from them; one run diverged (+30%). The noise-scaled
    Huber fit keeps α and β near the truth, where least squares in σ units (c → ∞) is pulled."""
    ns, ds, n, d, loss = _replicated_grid(seed=2, n_ds=6, seeds=3, sigma0=0.01, slope=-0.3)
    noise = replicate_noise(n, d, loss)
    loss[np.argmax(d * (n == ns[2]))] *= 1.3
    robust = fit_scaling_law(n, d, loss, noise=noise)
    squares = fit_scaling_law(n, d, loss, noise=noise, huber_c=1e3)
    err = {k: abs(getattr(robust.law, k) - getattr(SMALL, k)) for k in ("alpha", "beta")}
    err_sq = {k: abs(getattr(squares.law, k) - getattr(SMALL, k)) for k in ("alpha", "beta")}
    assert err["alpha"] < 0.03 and err["beta"] < 0.03, robust.law
    assert err_sq["beta"] > 2 * err["beta"], (squares.law, robust.law)


def test_fit_stays_in_bounds():
    n, d, loss = _small_grid(SMALL, noise=0.02, seed=9, ns=[1e4, 2e4, 4e4], ds=[1e5, 2e5, 4e5])
    law = fit_scaling_law(n, d, loss).law
    assert EXPONENT_BOUNDS[0] <= law.alpha <= EXPONENT_BOUNDS[1]
    assert EXPONENT_BOUNDS[0] <= law.beta <= EXPONENT_BOUNDS[1]
    assert 0.0 <= law.E < loss.min()


def test_one_model_size_is_not_identified_and_predicts_nothing():
    n, d, loss = _small_grid(SMALL, noise=0.003, seed=1, ns=[1e5])
    fit = fit_scaling_law(n, d, loss, n_bootstrap=10)
    assert not fit.identified
    assert any("distinct N" in r for r in fit.reasons)
    assert fit.describe().startswith(NOT_IDENTIFIED)
    pred = predict_run(fit, 1e5, 1e7)
    assert pred.loss is None and not pred.identified and "distinct N" in pred.reason
    lines = summary_lines(analyse(n, d, loss, fit=fit, reference_flops=1e13, n_bootstrap=10))
    assert NOT_IDENTIFIED in lines[1] and "N^" not in lines[1]


def test_summary_never_prints_an_exponent_above_two():
    # the losses fall with N faster than any sensible law: the fit hits the α bound
    steep = ScalingLaw(E=2.0, A=1e15, B=60.0, alpha=3.0, beta=0.3)
    n, d, loss = _small_grid(steep, noise=0.003, seed=5, ns=np.geomspace(1e4, 1e5, 4))
    fit = fit_scaling_law(n, d, loss, n_bootstrap=10)
    assert fit.law.alpha <= 2.0
    assert not fit.identified and any("alpha" in r for r in fit.reasons)
    text = "\n".join(
        summary_lines(analyse(n, d, loss, fit=fit, reference_flops=1e13, n_bootstrap=10))
    )
    assert NOT_IDENTIFIED in text
    exponents = [float(x) for x in __import__("re").findall(r"N\^([0-9.]+)", text)]
    assert all(x <= 2.0 for x in exponents)


def test_approach_2_recovers_the_compute_optimal_model_size():
    n, d, loss = _small_grid(SMALL, noise=0.003, seed=3, ns=np.geomspace(1e4, 1e6, 7),
                             ds=np.geomspace(1e5, 3e7, 9))  # fmt: skip
    c_ref = 1e12
    out = compute_optimal_analysis(n, d, loss, reference_flops=c_ref, noise=0.003, n_bootstrap=30)
    a2 = out["approach2"]
    assert a2["identified"], a2["reasons"]
    true_n, true_d = SMALL.compute_optimal(c_ref)
    true_a = SMALL.beta / (SMALL.alpha + SMALL.beta)
    assert a2["a"] == pytest.approx(true_a, abs=0.03)
    assert a2["n_opt"] == pytest.approx(true_n, rel=0.1)
    lo, hi = a2["intervals"]["n_opt"]
    assert lo <= true_n <= hi
    for p in a2["profiles"]:  # each IsoFLOP vertex is the law's own N*(C)
        assert p["n_opt"] == pytest.approx(SMALL.compute_optimal(p["flops"])[0], rel=0.1)
    assert out["compute_law"]["identified"] and 0 < out["compute_law"]["gamma"] < 1


def test_approach_2_without_bracketed_minima_is_not_identified():
    # every model far past its optimum size for the budgets: the minimum is at the edge
    n, d, loss = _small_grid(SMALL, noise=0.003, seed=3, ns=[1e6, 2e6, 4e6], ds=[1e5, 2e5, 4e5])
    out = compute_optimal_analysis(n, d, loss, reference_flops=1e13, noise=0.003, n_bootstrap=5)
    assert not out["approach2"]["identified"]


# (N, D, val loss): the CPU study's ≥ 512-step points (bench/RESULTS.md, 2026-12-02)
STUDY_POINTS = [
    (16464, 524288, 3.8615), (16464, 1048576, 3.6681), (49312, 524288, 3.5105),
    (16464, 2097152, 3.5204), (49312, 1048576, 3.2316), (107856, 524288, 3.4814),
    (16464, 4194304, 3.4179), (180672, 524288, 3.1723), (49312, 2097152, 3.0514),
    (107856, 1048576, 3.0451), (16464, 8388608, 3.3582), (180672, 1048576, 2.8487),
    (49312, 4194304, 2.9418), (107856, 2097152, 2.7997), (455520, 524288, 3.0579),
    (180672, 2097152, 2.6520), (853120, 524288, 2.9131), (107856, 4194304, 2.6652),
    (455520, 1048576, 2.7323),
]  # fmt: skip


def test_approach_2_with_an_exponent_interval_past_one_is_not_identified():
    """Measured points whose IsoFLOP vertices give N* ∝ C^a with a's interval reaching past 1
    (D* might shrink as C grows): no tokens-per-parameter number."""
    n, d, loss = np.array(STUDY_POINTS, dtype=float).T
    out = compute_optimal_analysis(n, d, loss, reference_flops=1.18e13, noise=0.0175)
    a2 = out["approach2"]
    assert len(a2["profiles"]) >= 3 and 0 < a2["a"] < 1  # a point estimate exists ...
    lo, hi = a2["intervals"]["a"]
    assert hi - lo <= 0.8 and hi >= 1.0  # ... its interval is not too wide, but reaches past 1
    assert not a2["identified"]
    assert any("outside (0, 1)" in r for r in a2["reasons"])


@pytest.mark.parametrize("tie", [True, False])
def test_gpt_params_counts_like_the_model(tie):
    cfg = GPTConfig(vocab_size=512, seq_len=64, n_layer=2, n_head=4, n_kv_head=2, d_model=32,
                    tie_embeddings=tie)  # fmt: skip
    model = GPT(cfg)
    assert gpt_params(cfg, "total") == model.num_params(non_embedding=False)
    assert gpt_params(cfg, "non_embedding") == model.num_params(non_embedding=True)


def test_degenerate_fit_is_flagged():
    n, d, loss = _grid_points(EPOCH_AI, noise=0.003, seed=7)
    assert fit_scaling_law(n, d, loss).warnings() == []
    # losses that do not depend on N at all: the N term cannot be identified
    flat = EPOCH_AI.E + EPOCH_AI.B / d**EPOCH_AI.beta
    warnings = fit_scaling_law(n, d, flat).warnings()
    assert warnings and any("alpha" in w or "E =" in w for w in warnings)


def test_bad_input_gives_a_reason():
    with pytest.raises(ValueError, match="at least 5"):
        fit_scaling_law([1e6, 2e6], [1e8, 1e8], [3.0, 2.9])
    with pytest.raises(ValueError, match="positive"):
        fit_scaling_law([1e6] * 5, [1e8] * 5, [3.0, 2.9, 0.0, 2.8, 2.7])


def test_a_flat_frontier_law_is_not_identified():
    # losses that barely fall with compute under 1% noise: the fitted exponent is positive
    # (0.0007) but its interval holds 0, so L*(C) is no law
    rng = np.random.default_rng(3)
    n = np.repeat(np.geomspace(1e4, 1e6, 5), 5)
    d = np.tile(np.geomspace(1e5, 1e7, 5), 5)
    loss = 4.0 * (6 * n * d / 1e9) ** -0.003 * np.exp(rng.normal(0, 0.01, n.size))
    out = compute_optimal_analysis(n, d, loss, reference_flops=1e13, noise=0.01, n_bootstrap=40)
    cl = out["compute_law"]
    assert not cl["identified"]
    assert any("exponent" in r for r in cl["reasons"]), cl["reasons"]
