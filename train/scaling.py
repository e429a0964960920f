"""Scaling laws: parameter/FLOP counting and the Chinchilla loss law L(N, D) = E + A/N^α + B/D^β.

Conventions (stated once, used everywhere in train/):

- ``N`` is the number of parameters the law is fitted on: a sweep's ``param_count``, by default
  **total** parameters (embeddings included; see ``DEFAULT_PARAM_COUNT``), or non-embedding
  parameters (Kaplan et al. 2020). A fit records which (``Fit.param_count``).
- ``D`` is the number of training tokens.
- Training compute is ``C = 6 N D`` FLOPs (2 per parameter per token forward, 4 backward).
  ``GPT.flops_per_token`` (train/model.py) adds the attention score/value matmuls for MFU
  (PaLM's convention, no causal discount); the law below is fitted and inverted with the plain
  ``6 N D``.

Fitting follows Hoffmann et al. 2022, approach 3, as redone by Besiroglu et al. 2024
("Chinchilla Scaling: A replication attempt"): minimise
``Σ Huber_δ(LSE(a − α log N, b − β log D, e) − log L)`` with δ = 1e-3 over
``(a, b, e, α, β)`` (``A = eᵃ, B = eᵇ, E = eᵉ``) with L-BFGS from a grid of starts, tight
tolerances (the original fit stopped early), and bootstrap resampling of the points for
confidence intervals. When replicated runs give the noise σ(D) of each point
(``replicate_noise``), the residuals are measured in units of it instead: ``Σ ρ_c(rᵢ/σᵢ)``
with Huber's c = 1.345 (``HUBER_C``), the M-estimator of known scale, rather than Hoffmann's
δ = 1e-3, which is far below this noise and makes the fit least absolute deviations. The fit
is **bounded** (α, β in [0.05, 2], 0 ≤ E < the smallest observed loss) and **checked**
(``identification``): spans of N and D, the condition number of the Gauss-Newton Hessian,
estimates at a bound, bootstrap interval widths. A fit that fails a
check is "not identified" and gives no prediction (``Fit.identified``, ``NOT_IDENTIFIED``).

Beside it (``analyse``): approach 2 (IsoFLOP profiles → parabolas in log N → N*(C), D*(C);
``isoflop_fit``) and a one-variable power law of the compute-optimal loss in C
(``compute_law_fit``), so a reader sees whether three views of the same points agree.
"""

from __future__ import annotations

import functools
import itertools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import digamma, huber, logsumexp
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from train.model import GPTConfig

HUBER_DELTA = 1e-3
# Huber's tuning constant in units of a point's noise σ when it is known: 95% of least squares'
# efficiency on Gaussian noise, residuals beyond c·σ count linearly (Huber 1981, §4.6)
HUBER_C = 1.345
NOT_IDENTIFIED = "not identified: no prediction"
EXPONENT_BOUNDS = (0.05, 2.0)  # α, β: outside this no language-model fit has been reported
LOG_E_MIN = -12.0  # E ≥ e^-12 ≈ 6e-6: "0 ≤ E" in a log parametrisation
# identification thresholds
MIN_DISTINCT = 3  # distinct N and distinct D values
MIN_SPAN = 4.0  # max/min of N and of D
MAX_CONDITION = 1e8  # condition number of the column-normalised Gauss-Newton Hessian
MAX_EXPONENT_WIDTH = 0.4  # 90% bootstrap interval width of α and of β
MAX_E_WIDTH = 0.5  # 90% bootstrap interval width of E, as a fraction of the smallest loss
MIN_TERM_CHANGE = 1e-3  # the N and D terms must each move the loss by ≥ this × min loss

# Which N the law is fitted on. "total" counts the token embedding (= the tied LM head) too.
# Pearce & Song 2024 ("Reconciling Kaplan and Chinchilla Scaling Laws") trace most of the gap
# between Kaplan's N* ∝ C^0.73 and Chinchilla's C^0.50 to Kaplan counting *non-embedding*
# parameters at small scale, where embeddings are a large share of the model: with total
# parameters the small-scale fits agree with Chinchilla. Porian et al. 2024 ("Resolving
# Discrepancies in Compute-Optimal Scaling of Language Models") find the same through FLOPs:
# leaving out the last layer's (LM head's) cost is the first of the three factors behind the
# discrepancy. Sweeps of models with 10⁴–10⁶ parameters are exactly that regime, so "total" is
# the default; "non_embedding" (Kaplan et al. 2020) stays available as a config choice.
ParamCount = Literal["total", "non_embedding"]
DEFAULT_PARAM_COUNT: ParamCount = "total"


@dataclass(frozen=True)
class ScalingLaw:
    """L(N, D) = E + A / N^alpha + B / D^beta (N non-embedding parameters, D tokens)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    note: str = ""

    def loss(self, n_params: float | np.ndarray, tokens: float | np.ndarray) -> np.ndarray:
        n = np.asarray(n_params, dtype=float)
        d = np.asarray(tokens, dtype=float)
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    def compute_optimal(self, compute: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """N*, D* minimising L under C = 6 N D (Hoffmann et al. 2022, eq. 4)."""
        c = np.asarray(compute, dtype=float) / 6.0
        a, b = self.beta / (self.alpha + self.beta), self.alpha / (self.alpha + self.beta)
        g = (self.alpha * self.A / (self.beta * self.B)) ** (1.0 / (self.alpha + self.beta))
        return g * c**a, c**b / g

    def as_dict(self) -> dict[str, float | str]:
        return {
            "E": self.E,
            "A": self.A,
            "B": self.B,
            "alpha": self.alpha,
            "beta": self.beta,
            "note": self.note,
        }


# Published fits. Both were fitted on other tokenizers and data (MassiveText with a
# SentencePiece 32k vocabulary), so their E and scale do not transfer to our losses in nats
# per token of another vocabulary; use them for exponents and N*/D* ratios, not loss values.
CHINCHILLA = ScalingLaw(
    E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, note="Hoffmann et al. 2022, approach 3"
)
EPOCH_AI = ScalingLaw(
    E=1.8172,
    A=482.01,
    B=2085.43,
    alpha=0.3478,
    beta=0.3658,
    note="Besiroglu et al. 2024 (Epoch AI), refit of Chinchilla's approach-3 data",
)


# ---------------------------------------------------------------- parameter and FLOP counting
def non_embedding_params(
    n_layer: int,
    d_model: int,
    d_ff: int | None = None,
    *,
    n_head: int = 1,
    n_kv_head: int | None = None,
    glu: bool = False,
    norms: bool = False,
) -> int:
    """Non-embedding parameter count of a decoder-only transformer (no biases).

    Attention: Q and O are d×d, K and V are d×(d·n_kv_head/n_head) (grouped-query attention);
    MLP: two d×d_ff matrices, three with a gated unit (SwiGLU). With ``d_ff = 4d``, no GQA and
    no GLU this is Kaplan's ``12 · n_layer · d²``. ``norms`` adds the 2 per-layer norm gains and
    the final norm (d each), which Kaplan leaves out.
    """
    d_ff = 4 * d_model if d_ff is None else d_ff
    kv = d_model if n_kv_head is None else d_model * n_kv_head // n_head
    attention = 2 * d_model * d_model + 2 * d_model * kv
    mlp = (3 if glu else 2) * d_model * d_ff
    per_layer = attention + mlp + (2 * d_model if norms else 0)
    return n_layer * per_layer + (d_model if norms else 0)


def gpt_params(model: GPTConfig, count: ParamCount = DEFAULT_PARAM_COUNT) -> int:
    """N of a ``train.model`` GPT from its config (= ``GPT(cfg).num_params(...)``, no model
    built): SwiGLU blocks with their norms, plus the token embedding (and an untied head) when
    ``count == "total"``."""
    n = non_embedding_params(
        model.n_layer, model.d_model, model.hidden, n_head=model.n_head,
        n_kv_head=model.kv_heads, glu=True, norms=True,
    )  # fmt: skip
    if count == "total":
        n += model.vocab_size * model.d_model * (1 if model.tie_embeddings else 2)
    return n


def training_flops(n_params: float, tokens: float) -> float:
    """C = 6 N D."""
    return 6.0 * float(n_params) * float(tokens)


# ---------------------------------------------------------------- fitting
# Hoffmann et al.'s initialisation grid (a, b, e, alpha, beta), in the log-parameter space.
HOFFMANN_GRID: dict[str, tuple[float, ...]] = {
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0, 1.5),
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
}
PARAM_NAMES = ("a", "b", "e", "alpha", "beta")


def _objective(
    theta: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    delta: float | np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[float, np.ndarray]:
    """Σ wᵢ·Huber_δᵢ(LSE − log L) and its gradient in (a, b, e, alpha, beta) (w = 1:
    unweighted; δ one number or one per point).

    The log-sum-exp of the three terms is written out (max-shifted) rather than calling
    scipy's ``logsumexp``: this runs ~10⁵ times per fit and is 4× faster so.
    """
    a, b, e, alpha, beta = theta
    t_n, t_d = a - alpha * log_n, b - beta * log_d
    m = np.maximum(np.maximum(t_n, t_d), e)
    x_n, x_d, x_e = np.exp(t_n - m), np.exp(t_d - m), np.exp(e - m)
    total = x_n + x_d + x_e
    r = m + np.log(total) - log_l
    abs_r = np.abs(r)
    point = np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta))
    dr = np.clip(r, -delta, delta) / total  # Huber'(r) × softmax normaliser
    if weights is not None:
        point, dr = point * weights, dr * weights
    value = float(point.sum())
    w_n, w_d = x_n * dr, x_d * dr
    grad = np.array([w_n.sum(), w_d.sum(), (x_e * dr).sum(), -(w_n @ log_n), -(w_d @ log_d)])
    return value, grad


def _grid_objective(
    grid: np.ndarray,
    log_n: np.ndarray,
    log_d: np.ndarray,
    log_l: np.ndarray,
    delta: float | np.ndarray,
    weights: np.ndarray | None = None,
) -> np.ndarray:
    """Objective at every grid row (vectorised) for picking the starts worth optimising."""
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    e = np.broadcast_to(e, (grid.shape[0], log_n.size))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, e])
    r = logsumexp(terms, axis=0) - log_l
    values = huber(delta, r)
    return (values if weights is None else values * weights).sum(axis=1)


@dataclass(frozen=True)
class ReplicateNoise:
    """Run-to-run noise of the log-loss as a power of the tokens trained, σ(D) = σ₀·(D/D₀)^k,
    fitted to points trained more than once (same N and D, other seeds): a run's loss is noisier
    the fewer steps it took (bench/RESULTS.md, CPU study: seeds 0.3–4.6% apart at 512 steps,
    ≤ 0.7% at 2,048)."""

    sigma0: float  # σ at D0
    d0: float
    exponent: float
    groups: int  # (N, D) points with ≥ 2 runs
    runs: int

    def sigma(self, tokens: float | np.ndarray) -> np.ndarray:
        return self.sigma0 * (np.asarray(tokens, dtype=float) / self.d0) ** self.exponent

    def weights(self, tokens: float | np.ndarray) -> np.ndarray:
        """1/σ(D)² per point, scaled to mean 1: with δᵢ = c·σᵢ, Σ wᵢ·Huber_δᵢ(rᵢ) is
        Σ ρ_c(rᵢ/σᵢ) up to a constant factor (Huber_cσ(r) = σ²·ρ_c(r/σ))."""
        w = 1.0 / self.sigma(tokens) ** 2
        return w / w.mean()

    def as_dict(self) -> dict[str, float | int]:
        return {"sigma0": self.sigma0, "d0": self.d0, "exponent": self.exponent,
                "groups": self.groups, "runs": self.runs}  # fmt: skip

    def describe(self) -> str:
        return (
            f"σ(D) = {self.sigma0:.4f}·(D/{self.d0:.3g})^{self.exponent:.2f} from "
            f"{self.groups} points trained {self.runs} times in all"
        )


# how a sweep's fit weighs its points: all alike, or in units of σ(D), the replicates' noise
FitWeights = Literal["none", "replicate_noise"]
MIN_NOISE_GROUPS = 4  # replicated (N, D) points a noise model needs ...
MIN_NOISE_SPAN = 2.0  # ... over at least this ratio of D


def replicated_points(
    n_params: Sequence[float] | np.ndarray, tokens: Sequence[float] | np.ndarray
) -> dict[tuple[float, float], list[int]]:
    """Row indices of every (N, D) point trained more than once (other seeds), by (N, D)."""
    groups: dict[tuple[float, float], list[int]] = {}
    for i, (n, d) in enumerate(zip(n_params, tokens, strict=True)):
        groups.setdefault((float(n), float(d)), []).append(i)
    return {key: rows for key, rows in sorted(groups.items()) if len(rows) >= 2}


def replicate_noise(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
) -> ReplicateNoise | None:
    """σ(D) of the log-loss from the replicated points (same N and D): a least-squares line of
    log σ̂ against log D over them (σ̂: each point's sample standard deviation, its log freed of
    the bias a few runs give: E[log s] = log σ + ½(ψ((k−1)/2) + log 2 − log(k−1)) for k normal
    runs, −0.64 for two); None when fewer than MIN_NOISE_GROUPS points are replicated, their D
    span less than MIN_NOISE_SPAN, or a point's runs are identical."""
    log_l = np.log(np.asarray(losses, dtype=float))
    groups = replicated_points(n_params, tokens)
    reps = [(d, np.std(log_l[rows], ddof=1), len(rows)) for (_, d), rows in groups.items()]
    if len(reps) < MIN_NOISE_GROUPS:
        return None
    d = np.array([r[0] for r in reps])
    sd = np.array([r[1] for r in reps])
    k = np.array([r[2] for r in reps], dtype=float)
    if d.max() / d.min() < MIN_NOISE_SPAN or np.any(sd <= 0):
        return None
    bias = 0.5 * (digamma((k - 1) / 2) + math.log(2) - np.log(k - 1))
    d0 = float(np.exp(np.log(d).mean()))
    exponent, log_sigma0 = np.polyfit(np.log(d / d0), np.log(sd) - bias, 1)
    return ReplicateNoise(
        sigma0=float(np.exp(log_sigma0)), d0=d0, exponent=float(exponent),
        groups=len(reps), runs=int(sum(r[2] for r in reps)),
    )  # fmt: skip


@dataclass
class Fit:
    """A fitted law with its bootstrap replicates (rows of E, A, B, alpha, beta) and the
    identification check's reasons (empty: identified)."""

    law: ScalingLaw
    objective: float
    n_points: int
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    residuals: np.ndarray = field(default_factory=lambda: np.empty(0))  # log L_obs − log L_fit
    reasons: list[str] = field(default_factory=list)  # why the points do not identify the law
    diagnostics: dict[str, float] = field(default_factory=dict)  # spans, condition number
    param_count: str = DEFAULT_PARAM_COUNT
    noise: ReplicateNoise | None = None  # the weights' noise model (None: unweighted)
    huber_c: float | None = None  # with ``noise``: Huber's c in units of σ(D)

    @property
    def identified(self) -> bool:
        return not self.reasons

    def laws(self) -> list[ScalingLaw]:
        return [ScalingLaw(*map(float, row)) for row in self.bootstrap]

    def param_intervals(self, level: float = 0.9) -> dict[str, tuple[float, float]]:
        """Percentile bootstrap intervals of E, A, B, alpha, beta."""
        if not len(self.bootstrap):
            return {}
        lo, hi = np.percentile(self.bootstrap, [50 * (1 - level), 50 * (1 + level)], axis=0)
        names = ("E", "A", "B", "alpha", "beta")
        return {k: (float(lo[i]), float(hi[i])) for i, k in enumerate(names)}

    def predict(
        self, n_params: float | np.ndarray, tokens: float | np.ndarray, level: float = 0.9
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point prediction and a bootstrap prediction interval for one new run.

        Each bootstrap law's prediction is multiplied by the exponential of a residual drawn
        from the fit's log-space residuals (run-to-run noise), then the percentiles are taken.
        Callers that show the number must check ``identified`` first (``summary_lines``).
        """
        point = self.law.loss(n_params, tokens)
        if not len(self.bootstrap):
            return point, point, point
        b = self.bootstrap
        n = np.asarray(n_params, dtype=float)[..., None]
        d = np.asarray(tokens, dtype=float)[..., None]
        preds = b[:, 0] + b[:, 1] / n ** b[:, 3] + b[:, 2] / d ** b[:, 4]
        if self.residuals.size:
            rng = np.random.default_rng(0)
            preds = preds * np.exp(rng.choice(self.residuals, size=len(b)))
        lo, hi = np.percentile(preds, [50 * (1 - level), 50 * (1 + level)], axis=-1)
        return point, lo, hi

    def weights_text(self) -> str:
        """How the points were weighted, in words."""
        if self.noise is None:
            return "points unweighted"
        return (
            f"residuals in units of the noise (Huber c = {self.huber_c}), {self.noise.describe()}"
        )

    def warnings(self) -> list[str]:
        """The identification check's reasons (kept under its old name)."""
        return list(self.reasons)

    def describe(self) -> str:
        """One line: the law with its 90% intervals, or NOT_IDENTIFIED with the reasons."""
        if not self.identified:
            return f"{NOT_IDENTIFIED} ({'; '.join(self.reasons)})"
        law, iv = self.law, self.param_intervals()

        def ci(k: str) -> str:
            return f" [{iv[k][0]:.3g}, {iv[k][1]:.3g}]" if k in iv else ""

        return (
            f"L = {law.E:.3f}{ci('E')} + {law.A:.4g}/N^{law.alpha:.3f}{ci('alpha')}"
            f" + {law.B:.4g}/D^{law.beta:.3f}{ci('beta')}"
        )

    def as_dict(self, level: float = 0.9) -> dict:
        return {
            "identified": self.identified,
            "reasons": list(self.reasons),
            "warnings": self.warnings(),
            "diagnostics": dict(self.diagnostics),
            "param_count": self.param_count,
            "law": self.law.as_dict(),
            "objective": self.objective,
            "n_points": self.n_points,
            "n_bootstrap": int(len(self.bootstrap)),
            "residual_rms_log": float(np.sqrt(np.mean(self.residuals**2)))
            if self.residuals.size
            else None,
            "level": level,
            "intervals": self.param_intervals(level),
            "weights": self.noise.as_dict() if self.noise else None,
            "huber_c": self.huber_c,
        }


def _bounds(log_l: np.ndarray) -> list[tuple[float | None, float | None]]:
    """(a, b, e, α, β) bounds: α, β in EXPONENT_BOUNDS, 0 ≤ E < the smallest observed loss."""
    e_max = float(np.min(log_l)) - 1e-6
    return [(None, None), (None, None), (LOG_E_MIN, e_max), EXPONENT_BOUNDS, EXPONENT_BOUNDS]


# L-BFGS-B iteration caps: an identified law converges in well under 100 iterations; on points
# that do not identify it (a flat valley) the optimiser can wander for thousands, which the
# identification check then rejects anyway, so the cap bounds the fit's time, not its answer.
MAXITER = 300
BOOTSTRAP_MAXITER = 100


def _one_blas_thread(fn):
    """Run ``fn`` with one BLAS thread: L-BFGS-B (scipy ≥ 1.15) calls LAPACK on 5×5 matrices
    ~10⁴ times per fit, and OpenBLAS's thread hand-off made each call ~1 ms on a loaded 2-core
    machine (a fit 10-40× slower than single-threaded)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with threadpool_limits(limits=1, user_api="blas"):
            return fn(*args, **kwargs)

    return wrapper


def _fit_once(
    log_n,
    log_d,
    log_l,
    starts: np.ndarray,
    delta: float | np.ndarray,
    maxiter: int = MAXITER,
    weights=None,
) -> tuple[np.ndarray, float]:
    """Best bounded L-BFGS-B optimum over the starts (objective in units of the mean w·δ², so
    the quadratic zone reads 0.5·(r/δ)² and the tolerances are not swamped by a ~1e-6
    objective)."""
    scale = 1.0 / float(np.mean(np.square(delta) * (1.0 if weights is None else weights)))
    bounds = _bounds(log_l)
    lower = np.array([-np.inf if lo is None else lo for lo, _ in bounds])
    upper = np.array([np.inf if hi is None else hi for _, hi in bounds])

    def scaled(theta: np.ndarray, *args) -> tuple[float, np.ndarray]:
        value, grad = _objective(theta, *args)
        return value * scale, grad * scale

    best_theta, best_value = starts[0], np.inf
    for x0 in starts:
        res = minimize(
            scaled,
            np.clip(x0, lower, upper),
            args=(log_n, log_d, log_l, delta, weights),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"maxiter": maxiter, "ftol": 1e-10, "gtol": 1e-6},
        )
        if np.all(np.isfinite(res.x)) and res.fun / scale < best_value:  # both unscaled
            best_theta, best_value = res.x, float(res.fun) / scale
    return best_theta, best_value


def _theta_to_law(theta: np.ndarray, note: str = "") -> ScalingLaw:
    a, b, e, alpha, beta = map(float, theta)
    return ScalingLaw(
        E=float(np.exp(e)),
        A=float(np.exp(a)),
        B=float(np.exp(b)),
        alpha=alpha,
        beta=beta,
        note=note,
    )


def _law_row(law: ScalingLaw) -> list[float]:
    return [law.E, law.A, law.B, law.alpha, law.beta]


@_one_blas_thread
def fit_scaling_law(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    delta: float = HUBER_DELTA,
    huber_c: float = HUBER_C,
    grid: dict[str, Sequence[float]] | None = None,
    n_starts: int = 16,
    n_bootstrap: int = 0,
    bootstrap_starts: int = 1,
    seed: int = 0,
    param_count: str = DEFAULT_PARAM_COUNT,
    noise: ReplicateNoise | None = None,
) -> Fit:
    """Fit L(N, D) = E + A/N^α + B/D^β (Huber on log-loss, L-BFGS from a grid of starts).

    With ``noise`` (:func:`replicate_noise`) each residual is measured in units of its point's
    run-to-run noise σ(D): ``Σ ρ_c(rᵢ/σᵢ)`` with c = ``huber_c`` (δᵢ = c·σᵢ, weights 1/σᵢ²),
    so short runs, noisier, count less, a residual within c·σ counts as in least squares and a
    larger one linearly. As c → 0 this becomes least absolute deviations weighted by 1/σ
    (what ``delta`` = 1e-3 amounts to at this noise). Without ``noise`` every point counts the
    same, with Hoffmann's ``delta``.

    The whole grid (Hoffmann's 4,500 points by default) is scored in one vectorised pass and
    L-BFGS runs from the ``n_starts`` best of them (Hoffmann ran it from every point; the
    best few hold the optimum in practice and this keeps a fit to seconds). With
    ``n_bootstrap`` > 0 the points are resampled with replacement that many times and refitted
    (from the full-data optimum plus the ``bootstrap_starts`` best grid points of the sample,
    at most ``BOOTSTRAP_MAXITER`` iterations each: a resample's optimum lies near the full one).
    The result carries the identification check (``Fit.reasons``; see ``identification``).
    """
    arrays = [np.asarray(x, dtype=float) for x in (n_params, tokens, losses)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError("n_params, tokens and losses must be 1-D sequences of the same length")
    if arrays[0].size < 5:
        raise ValueError(f"need at least 5 points to fit 5 parameters, got {arrays[0].size}")
    if not all(np.all(np.isfinite(a) & (a > 0)) for a in arrays):
        raise ValueError("n_params, tokens and losses must be positive and finite")
    log_n, log_d, log_l = (np.log(a) for a in arrays)
    weights = None if noise is None else noise.weights(arrays[1])
    # δ per point in units of its noise (see above), or Hoffmann's one δ
    deltas = delta if noise is None else huber_c * noise.sigma(arrays[1])
    axes = grid or HOFFMANN_GRID
    full_grid = np.array(list(itertools.product(*(axes[k] for k in PARAM_NAMES))), dtype=float)
    full_grid[:, 3:] = np.clip(full_grid[:, 3:], *EXPONENT_BOUNDS)  # starts inside the bounds
    # E starts at ≤ 0.74 × the smallest loss: from E at its upper bound L-BFGS-B can stall
    full_grid[:, 2] = np.clip(full_grid[:, 2], LOG_E_MIN, float(np.min(log_l)) - 0.3)
    full_grid = np.unique(full_grid, axis=0)

    def best_starts(ln, ld, ll, k: int, per_e: bool = False, w=None, dl=deltas) -> np.ndarray:
        """The k best grid points; with ``per_e`` also the best one at every E of the grid:
        the best-scoring starts often share one E, and from a high E L-BFGS-B can slide into
        the E → 0 basin (a worse optimum) that a start at a lower E avoids."""
        scores = _grid_objective(full_grid, ln, ld, ll, dl, w)
        order = np.argsort(scores, kind="stable")
        if not per_e:
            return full_grid[order[:k]]
        levels = [order[full_grid[order, 2] == e][0] for e in np.unique(full_grid[:, 2])]
        return full_grid[np.concatenate([order[:k], levels])]

    starts = best_starts(log_n, log_d, log_l, n_starts, per_e=True, w=weights)
    theta, value = _fit_once(log_n, log_d, log_l, starts, deltas, weights=weights)
    law = _theta_to_law(theta, note=f"fitted on {log_n.size} points")
    rows = []
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap):
        idx = rng.integers(0, log_n.size, log_n.size)  # a resampled point keeps its weight
        ln, ld, ll = log_n[idx], log_d[idx], log_l[idx]
        w = None if weights is None else weights[idx]
        dl = deltas[idx] if np.ndim(deltas) else deltas
        starts = np.vstack([theta[None], best_starts(ln, ld, ll, bootstrap_starts, w=w, dl=dl)])
        t, _ = _fit_once(ln, ld, ll, starts, dl, BOOTSTRAP_MAXITER, weights=w)
        rows.append(_law_row(_theta_to_law(t)))
    boot = np.array(rows, dtype=float).reshape(-1, 5)
    residuals = log_l - np.log(law.loss(np.exp(log_n), np.exp(log_d)))
    fit = Fit(
        law=law,
        objective=value,
        n_points=int(log_n.size),
        bootstrap=boot,
        residuals=residuals,
        param_count=param_count,
        noise=noise,
        huber_c=None if noise is None else huber_c,
    )
    fit.reasons, fit.diagnostics = identification(fit, np.exp(log_n), np.exp(log_d), arrays[2])
    return fit


def _condition_number(law: ScalingLaw, log_n: np.ndarray, log_d: np.ndarray) -> float:
    """Condition number of JᵀJ, J = ∂ log L̂ / ∂(a, b, e, α, β) at the fit (the Gauss-Newton
    Hessian of the log-loss residuals), with log N and log D centred and J's columns scaled to
    unit length: invariant to units, large when two directions of the law explain the points
    equally well (e.g. one N: the A/N^α term cannot be told apart from E)."""
    t_n = np.log(law.A) - law.alpha * log_n
    t_d = np.log(law.B) - law.beta * log_d
    terms = np.stack([t_n, t_d, np.full_like(t_n, np.log(law.E))])
    p = np.exp(terms - logsumexp(terms, axis=0))  # each term's share of L̂
    jac = np.stack(
        [p[0], p[1], p[2], -p[0] * (log_n - log_n.mean()), -p[1] * (log_d - log_d.mean())], 1
    )
    norms = np.linalg.norm(jac, axis=0)
    if np.any(norms < 1e-12):
        return math.inf
    sv = np.linalg.svd(jac / norms, compute_uv=False)
    return math.inf if sv[-1] <= 0 else float((sv[0] / sv[-1]) ** 2)


def identification(
    fit: Fit, n_params: np.ndarray, tokens: np.ndarray, losses: np.ndarray, level: float = 0.9
) -> tuple[list[str], dict[str, float]]:
    """Reasons the points do not identify L(N, D) (empty: identified) and the diagnostics.

    Checks: ≥ MIN_DISTINCT distinct N and D spanning ≥ MIN_SPAN×; no estimate at a bound; the N
    and D terms each move the loss by ≥ MIN_TERM_CHANGE × min loss over the points; the
    Gauss-Newton Hessian's condition number ≤ MAX_CONDITION; with a bootstrap, 90% intervals
    of α and β no wider than MAX_EXPONENT_WIDTH and E's no wider than MAX_E_WIDTH × min loss.
    """
    law, reasons = fit.law, []
    diag: dict[str, float] = {}
    for name, x in (("N", n_params), ("D", tokens)):
        distinct, span = np.unique(x).size, float(np.max(x) / np.min(x))
        diag[f"{name}_distinct"], diag[f"{name}_span"] = float(distinct), span
        if distinct < MIN_DISTINCT or span < MIN_SPAN:
            reasons.append(
                f"{distinct} distinct {name} spanning {span:.3g}× (need ≥ {MIN_DISTINCT} over"
                f" ≥ {MIN_SPAN:g}×)"
            )
    lo_b, hi_b = EXPONENT_BOUNDS
    for name, value in (("alpha", law.alpha), ("beta", law.beta)):
        if not lo_b + 1e-3 < value < hi_b - 1e-3:
            reasons.append(f"{name} = {value:.3g} at its bound [{lo_b}, {hi_b}]")
    l_min = float(np.min(losses))
    if math.exp(LOG_E_MIN) * 1.01 >= law.E or l_min * (1 - 1e-4) <= law.E:
        reasons.append(f"E = {law.E:.3g} at its bound [0, {l_min:.4g}) (the smallest loss)")
    for name, var, term in (
        ("alpha", "N", law.A / np.asarray(n_params, dtype=float) ** law.alpha),
        ("beta", "D", law.B / np.asarray(tokens, dtype=float) ** law.beta),
    ):
        change = float(np.max(term) - np.min(term))
        diag[f"{var}_term_change"] = change
        if change < MIN_TERM_CHANGE * l_min:
            reasons.append(
                f"{name} not identified: the {var} term moves the loss by only {change:.2g}"
                f" over the sweep's {var} (< {MIN_TERM_CHANGE:g} × the smallest loss)"
            )
    cond = _condition_number(law, np.log(n_params), np.log(tokens))
    diag["condition"] = cond
    if not cond <= MAX_CONDITION:
        reasons.append(f"Hessian condition number {cond:.3g} > {MAX_CONDITION:.0e}")
    iv = fit.param_intervals(level)
    if iv:
        for name in ("alpha", "beta"):
            width = iv[name][1] - iv[name][0]
            diag[f"{name}_width"] = width
            if width > MAX_EXPONENT_WIDTH:
                reasons.append(
                    f"{name}'s {level:.0%} interval [{iv[name][0]:.3g}, {iv[name][1]:.3g}] is"
                    f" wider than {MAX_EXPONENT_WIDTH}"
                )
        e_width = (iv["E"][1] - iv["E"][0]) / l_min
        diag["E_width_rel"] = e_width
        if e_width > MAX_E_WIDTH:
            reasons.append(
                f"E's {level:.0%} interval [{iv['E'][0]:.3g}, {iv['E'][1]:.3g}] spans"
                f" {e_width:.0%} of the smallest loss"
            )
    return reasons, diag


def save_fit(fit: Fit, path: str | Path) -> Path:
    """The fit as JSON (law, bootstrap replicates, residuals), for ``load_fit``."""
    path = Path(path)
    data = {
        **fit.as_dict(),
        "bootstrap": fit.bootstrap.tolist(),
        "residuals": fit.residuals.tolist(),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def load_fit(path: str | Path) -> Fit:
    data = json.loads(Path(path).read_text())
    law = data["law"]
    return Fit(
        law=ScalingLaw(**law),
        objective=float(data["objective"]),
        n_points=int(data["n_points"]),
        bootstrap=np.asarray(data.get("bootstrap") or np.empty((0, 5)), dtype=float).reshape(-1, 5),
        residuals=np.asarray(data.get("residuals") or [], dtype=float),
        reasons=list(data.get("reasons", ["fitted before the identification check: refit"])),
        diagnostics=dict(data.get("diagnostics", {})),
        param_count=data.get("param_count", "non_embedding"),  # older fits: Kaplan's N
        noise=ReplicateNoise(**data["weights"]) if data.get("weights") else None,
        huber_c=data.get("huber_c"),
    )


# ---------------------------------------------------------------- approach 2 and L(C)
MIN_PROFILES = 3  # IsoFLOP profiles (approach 2) / frontier points (L(C)) needed for a fit


def _profiles(
    n: np.ndarray, d: np.ndarray, log_l: np.ndarray, budgets: np.ndarray
) -> list[dict[str, Any]]:
    """IsoFLOP profiles: at every budget C, each model's log-loss at D = C/(6N), interpolated
    (log-log, linear) between that model's own D points — never extrapolated — then a parabola
    in log N; kept when ≥ 3 models are on it, its minimum is bracketed by them (not the first or
    last) and it curves upwards."""
    models = np.unique(n)
    per_model = []
    for m in models:
        sel = n == m
        order = np.argsort(d[sel])
        per_model.append((np.log(m), np.log(d[sel][order]), log_l[sel][order]))
    out = []
    for c in budgets:
        xs, ys = [], []
        for log_m, ld, ll in per_model:
            ld_need = math.log(c / 6.0) - log_m
            if ld.size >= 2 and ld[0] - 1e-9 <= ld_need <= ld[-1] + 1e-9:
                xs.append(log_m)
                ys.append(float(np.interp(ld_need, ld, ll)))
        if len(xs) < 3:
            continue
        x, y = np.array(xs), np.array(ys)
        k = int(np.argmin(y))
        curv, slope, icpt = np.polyfit(x, y, 2)
        if not (0 < k < x.size - 1) or curv <= 0:
            continue
        log_n_opt = -slope / (2 * curv)
        if not x[0] <= log_n_opt <= x[-1]:
            continue
        out.append(
            {
                "flops": float(c),
                "n_opt": float(np.exp(log_n_opt)),
                "tokens_opt": float(c / (6 * np.exp(log_n_opt))),
                "loss_opt": float(np.exp(icpt - slope**2 / (4 * curv))),
                "models": int(x.size),
                "envelope_loss": float(np.exp(y.min())),
            }
        )
    return out


def _envelope(n: np.ndarray, d: np.ndarray, log_l: np.ndarray, budgets: np.ndarray) -> np.ndarray:
    """(C, lowest interpolated loss over ≥ 2 models at that C): the compute frontier."""
    rows = []
    models = np.unique(n)
    for c in budgets:
        best = []
        for m in models:
            sel = n == m
            order = np.argsort(d[sel])
            ld, ll = np.log(d[sel][order]), log_l[sel][order]
            need = math.log(c / 6.0 / m)
            if ld.size >= 2 and ld[0] - 1e-9 <= need <= ld[-1] + 1e-9:
                best.append(float(np.interp(need, ld, ll)))
        if len(best) >= 2:
            rows.append((c, math.exp(min(best))))
    return np.array(rows, dtype=float).reshape(-1, 2)


def _power_fit(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(exponent, coefficient) of y = k · x^exponent by least squares in log-log."""
    slope, icpt = np.polyfit(np.log(x), np.log(y), 1)
    return float(slope), float(np.exp(icpt))


def _interval(values: Sequence[float], level: float) -> list[float] | None:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size < 5:
        return None
    lo, hi = np.percentile(v, [50 * (1 - level), 50 * (1 + level)])
    return [float(lo), float(hi)]


@_one_blas_thread
def compute_optimal_analysis(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    reference_flops: float,
    noise: float = 0.0,
    n_budgets: int = 16,
    n_bootstrap: int = 200,
    level: float = 0.9,
    seed: int = 0,
) -> dict[str, Any]:
    """Approach 2 (IsoFLOP parabolas → N*(C) = k·C^a, D*(C) = C/(6N*)) and the one-variable
    frontier law L*(C) = K·C^−γ on the same points, with intervals from a parametric bootstrap
    (the log-losses perturbed by N(0, ``noise``), typically approach 3's residual RMS).

    Returns ``{"approach2": {...}, "compute_law": {...}}``; each has ``identified`` and
    ``reasons`` and, when identified, the prediction at ``reference_flops``."""
    n, d = np.asarray(n_params, dtype=float), np.asarray(tokens, dtype=float)
    log_l = np.log(np.asarray(losses, dtype=float))
    c = 6.0 * n * d
    budgets = np.geomspace(c.min(), c.max(), n_budgets)

    def solve(ll: np.ndarray) -> tuple[dict | None, dict | None, list, np.ndarray]:
        prof = _profiles(n, d, ll, budgets)
        env = _envelope(n, d, ll, budgets)
        a2 = None
        if len(prof) >= MIN_PROFILES:
            a, k = _power_fit(
                np.array([p["flops"] for p in prof]), np.array([p["n_opt"] for p in prof])
            )
            n_ref = k * reference_flops**a
            a2 = {"a": a, "b": 1.0 - a, "k": k, "n_opt": n_ref,
                  "tokens_opt": reference_flops / (6 * n_ref),
                  "tokens_per_param": reference_flops / (6 * n_ref**2)}  # fmt: skip
        cl = None
        if len(env) >= MIN_PROFILES:
            g, kk = _power_fit(env[:, 0], env[:, 1])
            cl = {"gamma": -g, "K": kk, "loss": kk * reference_flops**g}
        return a2, cl, prof, env

    a2, cl, prof, env = solve(log_l)
    rng = np.random.default_rng(seed)
    boots_a2, boots_cl = [], []
    for _ in range(n_bootstrap if noise > 0 else 0):
        b2, bc, _, _ = solve(log_l + rng.normal(0.0, noise, log_l.size))
        boots_a2.append(b2)
        boots_cl.append(bc)

    def intervals(point: dict | None, boots: list, keys: tuple[str, ...]) -> dict:
        ok = [b for b in boots if b is not None]
        out: dict[str, Any] = {"n_bootstrap": len(boots), "n_bootstrap_ok": len(ok)}
        if point is not None:
            out["intervals"] = {k: _interval([b[k] for b in ok], level) for k in keys}
        return out

    span = budgets[-1] / budgets[0]
    approach2: dict[str, Any] = {
        "profiles": prof,
        "reference_flops": reference_flops,
        **intervals(a2, boots_a2, ("a", "n_opt", "tokens_opt", "tokens_per_param")),
    }
    reasons2 = []
    if a2 is None:
        reasons2.append(
            f"{len(prof)} IsoFLOP profiles with a bracketed minimum (need ≥ {MIN_PROFILES}:"
            " ≥ 3 models on a profile, the best one not at its edge)"
        )
    else:
        approach2.update(a2)
        iv = approach2["intervals"]["a"]
        if not 0.0 < a2["a"] < 1.0:
            reasons2.append(f"N* ∝ C^{a2['a']:.3g}: exponent outside (0, 1)")
        if iv is None or iv[1] - iv[0] > 2 * MAX_EXPONENT_WIDTH:
            reasons2.append(f"the {level:.0%} interval of N*'s exponent is {iv} (too wide)")
        elif not 0.0 < iv[0] <= iv[1] < 1.0:  # N* or D* might not grow with C
            reasons2.append(
                f"the {level:.0%} interval of N*'s exponent [{iv[0]:.3g}, {iv[1]:.3g}] reaches"
                " outside (0, 1)"
            )
        c_prof = [p["flops"] for p in prof]
        if max(c_prof) / min(c_prof) < MIN_SPAN:
            reasons2.append(
                f"profiles span {max(c_prof) / min(c_prof):.3g}× in C (< {MIN_SPAN:g}×)"
            )
    approach2.update(identified=not reasons2, reasons=reasons2, budgets_span=float(span))

    compute_law: dict[str, Any] = {
        "frontier": env.tolist(),
        "reference_flops": reference_flops,
        **intervals(cl, boots_cl, ("gamma", "loss")),
    }
    reasons_c = []
    if cl is None:
        reasons_c.append(f"{len(env)} frontier points (need ≥ {MIN_PROFILES})")
    else:
        compute_law.update(cl)
        if not 0.0 < cl["gamma"] < 1.0:
            reasons_c.append(f"L* ∝ C^-{cl['gamma']:.3g}: exponent outside (0, 1)")
        if env[:, 0].max() / env[:, 0].min() < MIN_SPAN:
            reasons_c.append("frontier spans < 4× in C")
        gamma_iv = compute_law.get("intervals", {}).get("gamma")
        if gamma_iv and gamma_iv[0] is not None and gamma_iv[0] <= 0.0:
            reasons_c.append(
                f"the exponent's interval [{gamma_iv[0]:.3g}, {gamma_iv[1]:.3g}] includes 0"
            )
    compute_law.update(identified=not reasons_c, reasons=reasons_c)
    return {"approach2": approach2, "compute_law": compute_law}


def tokens_per_param_approach3(fit: Fit, flops: float, level: float = 0.9) -> dict[str, Any]:
    """D*/N* of the approach-3 law at ``flops`` (C = 6ND) with its bootstrap interval."""
    n_opt, d_opt = fit.law.compute_optimal(flops)
    ratios = [float(np.divide(*law.compute_optimal(flops)[::-1])) for law in fit.laws()]
    return {
        "flops": flops,
        "n_opt": float(n_opt),
        "tokens_opt": float(d_opt),
        "tokens_per_param": float(d_opt / n_opt),
        "interval": _interval(ratios, level),
    }


def analyse(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    fit: Fit,
    reference_flops: float,
    n_bootstrap: int = 200,
    level: float = 0.9,
) -> dict[str, Any]:
    """Approach 3 (``fit``), approach 2 and L*(C) on the same points, side by side, at
    ``reference_flops``: N*, D*, D*/N* and the compute-optimal loss from each, with intervals,
    and the published laws' tokens per parameter for reference."""
    rms = float(np.sqrt(np.mean(fit.residuals**2))) if fit.residuals.size else 0.0
    out = compute_optimal_analysis(
        n_params, tokens, losses, reference_flops=reference_flops,
        noise=max(rms, 1e-3), n_bootstrap=n_bootstrap, level=level,
    )  # fmt: skip
    a3 = {"identified": fit.identified, "reasons": list(fit.reasons), "describe": fit.describe()}
    if fit.identified:
        a3.update(tokens_per_param_approach3(fit, reference_flops, level))
        n_opt, d_opt = a3["n_opt"], a3["tokens_opt"]
        a3["loss_opt"] = float(fit.law.loss(n_opt, d_opt))
    out["approach3"] = a3
    out["references"] = {
        "chinchilla_rule_of_thumb": 20.0,
        "epoch_ai_at_reference": float(np.divide(*EPOCH_AI.compute_optimal(reference_flops)[::-1])),
        "epoch_ai_at_chinchilla": float(np.divide(*EPOCH_AI.compute_optimal(5.76e23)[::-1])),
    }
    out["reference_flops"] = reference_flops
    out["param_count"] = fit.param_count
    return out


def describe_fit_dict(fit: dict[str, Any]) -> str:
    """``Fit.describe()`` from its ``as_dict()`` form (what sweep_summary.json stores)."""
    if not fit.get("identified", False):
        reasons = fit.get("reasons") or ["no identification check recorded: refit"]
        return f"{NOT_IDENTIFIED} ({'; '.join(reasons)})"
    law, iv = fit["law"], fit.get("intervals") or {}

    def ci(k: str) -> str:
        return f" [{iv[k][0]:.3g}, {iv[k][1]:.3g}]" if k in iv else ""

    return (
        f"L = {law['E']:.3f}{ci('E')} + {law['A']:.4g}/N^{law['alpha']:.3f}{ci('alpha')}"
        f" + {law['B']:.4g}/D^{law['beta']:.3f}{ci('beta')}"
    )


def _fmt_iv(iv: Sequence[float] | None, fmt: str = ".3g") -> str:
    return f" [{iv[0]:{fmt}}, {iv[1]:{fmt}}]" if iv else ""


def summary_lines(analysis: dict[str, Any], level: float = 0.9) -> list[str]:
    """The three fits as text lines (console, sweep.md, reports): each either its numbers with
    intervals or NOT_IDENTIFIED with the reason — never an unidentified number."""
    c = analysis["reference_flops"]
    a3, a2, cl = analysis["approach3"], analysis["approach2"], analysis["compute_law"]
    pct = f"{level:.0%}"
    lines = [f"Compute-optimal at C = 6ND = {c:.3g} FLOPs (N = {analysis['param_count']} params;"
             f" {pct} intervals):"]  # fmt: skip
    if a3["identified"]:
        lines.append(
            f"- approach 3 (L(N, D) fit): {a3['describe']}; N* = {a3['n_opt']:,.0f}, D* ="
            f" {a3['tokens_opt']:,.0f}, D*/N* = {a3['tokens_per_param']:.3g}"
            f"{_fmt_iv(a3['interval'])}, L* = {a3['loss_opt']:.4f}"
        )
    else:
        lines.append(f"- approach 3 (L(N, D) fit): {NOT_IDENTIFIED} ({'; '.join(a3['reasons'])})")
    if a2["identified"]:
        iv = a2["intervals"]
        lines.append(
            f"- approach 2 (IsoFLOP, {len(a2['profiles'])} profiles): N* ∝ C^{a2['a']:.3f}"
            f"{_fmt_iv(iv['a'])}, D* ∝ C^{a2['b']:.3f}; N* = {a2['n_opt']:,.0f}"
            f"{_fmt_iv(iv['n_opt'], ',.0f')}, D* = {a2['tokens_opt']:,.0f}, D*/N* ="
            f" {a2['tokens_per_param']:.3g}{_fmt_iv(iv['tokens_per_param'])}"
        )
    else:
        lines.append(f"- approach 2 (IsoFLOP): {NOT_IDENTIFIED} ({'; '.join(a2['reasons'])})")
    if cl["identified"]:
        iv = cl["intervals"]
        lines.append(
            f"- L*(C) = {cl['K']:.4g}·C^-{cl['gamma']:.4f}{_fmt_iv(iv['gamma'], '.4f')} on"
            f" {len(cl['frontier'])} frontier points: L* = {cl['loss']:.4f}{_fmt_iv(iv['loss'], '.4f')}"
        )
    else:
        lines.append(f"- L*(C) power law: {NOT_IDENTIFIED} ({'; '.join(cl['reasons'])})")
    ref = analysis["references"]
    lines.append(
        f"- references: Chinchilla ≈ 20 tokens/param; Epoch AI's refit of Chinchilla's law gives"
        f" {ref['epoch_ai_at_chinchilla']:.1f} at Chinchilla's 5.76e23 FLOPs and"
        f" {ref['epoch_ai_at_reference']:.3g} at this C (other data and tokenizer)"
    )
    if a3["identified"] and a2["identified"]:
        ratio = a2["n_opt"] / a3["n_opt"]
        lines.append(f"- agreement: N* from approach 2 is {ratio:.2f}× approach 3's")
    return lines
