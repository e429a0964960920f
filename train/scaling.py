"""Scaling laws: parameter/FLOP counting and the Chinchilla loss law L(N, D) = E + A/N^α + B/D^β.

Conventions (stated once, used everywhere in train/):

- ``N`` is the number of **non-embedding** parameters (Kaplan et al. 2020): token and position
  embeddings are left out; the LM head is left out when it is tied to the token embedding.
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
confidence intervals.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.special import huber, logsumexp

HUBER_DELTA = 1e-3


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
    theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Σ Huber(LSE − log L) and its gradient in (a, b, e, alpha, beta).

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
    value = float(np.where(abs_r <= delta, 0.5 * r * r, delta * (abs_r - 0.5 * delta)).sum())
    dr = np.clip(r, -delta, delta) / total  # Huber'(r) × softmax normaliser
    w_n, w_d = x_n * dr, x_d * dr
    grad = np.array([w_n.sum(), w_d.sum(), (x_e * dr).sum(), -(w_n @ log_n), -(w_d @ log_d)])
    return value, grad


def _grid_objective(
    grid: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray, delta: float
) -> np.ndarray:
    """Objective at every grid row (vectorised) for picking the starts worth optimising."""
    a, b, e, alpha, beta = (grid[:, i : i + 1] for i in range(5))
    e = np.broadcast_to(e, (grid.shape[0], log_n.size))
    terms = np.stack([a - alpha * log_n, b - beta * log_d, e])
    r = logsumexp(terms, axis=0) - log_l
    return huber(delta, r).sum(axis=1)


@dataclass
class Fit:
    """A fitted law with its bootstrap replicates (rows of E, A, B, alpha, beta)."""

    law: ScalingLaw
    objective: float
    n_points: int
    bootstrap: np.ndarray = field(default_factory=lambda: np.empty((0, 5)))
    residuals: np.ndarray = field(default_factory=lambda: np.empty(0))  # log L_obs − log L_fit

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

    def warnings(self) -> list[str]:
        """Signs that the points do not identify the law (the fit sits at a degenerate edge)."""
        law, out = self.law, []
        for name, value in (("alpha", law.alpha), ("beta", law.beta)):
            if not 0.0 < value < 3.0:
                out.append(f"{name} = {value:.3g} outside (0, 3): its term is not identified")
        if law.E < 1e-2:
            out.append(f"E = {law.E:.3g} ≈ 0: the irreducible loss is not identified")
        return out

    def as_dict(self, level: float = 0.9) -> dict:
        return {
            "warnings": self.warnings(),
            "law": self.law.as_dict(),
            "objective": self.objective,
            "n_points": self.n_points,
            "n_bootstrap": int(len(self.bootstrap)),
            "residual_rms_log": float(np.sqrt(np.mean(self.residuals**2)))
            if self.residuals.size
            else None,
            "level": level,
            "intervals": self.param_intervals(level),
        }


def _fit_once(log_n, log_d, log_l, starts: np.ndarray, delta: float) -> tuple[np.ndarray, float]:
    """Best L-BFGS optimum over the starts (objective in units of δ², so the quadratic zone
    reads 0.5·(r/δ)² and L-BFGS's tolerances are not swamped by a ~1e-6 objective)."""
    scale = 1.0 / delta**2

    def scaled(theta: np.ndarray, *args) -> tuple[float, np.ndarray]:
        value, grad = _objective(theta, *args)
        return value * scale, grad * scale

    best_theta, best_value = starts[0], np.inf
    for x0 in starts:
        res = minimize(
            scaled,
            x0,
            args=(log_n, log_d, log_l, delta),
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 1000, "ftol": 1e-10, "gtol": 1e-6},
        )
        if np.all(np.isfinite(res.x)) and res.fun < best_value:
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


def fit_scaling_law(
    n_params: Sequence[float] | np.ndarray,
    tokens: Sequence[float] | np.ndarray,
    losses: Sequence[float] | np.ndarray,
    *,
    delta: float = HUBER_DELTA,
    grid: dict[str, Sequence[float]] | None = None,
    n_starts: int = 16,
    n_bootstrap: int = 0,
    bootstrap_starts: int = 4,
    seed: int = 0,
) -> Fit:
    """Fit L(N, D) = E + A/N^α + B/D^β (Huber on log-loss, L-BFGS from a grid of starts).

    The whole grid (Hoffmann's 4,500 points by default) is scored in one vectorised pass and
    L-BFGS runs from the ``n_starts`` best of them (Hoffmann ran it from every point; the
    best few hold the optimum in practice and this keeps a fit to seconds). With
    ``n_bootstrap`` > 0 the points are resampled with replacement that many times and refitted
    (from the full-data optimum plus the ``bootstrap_starts`` best grid points of the sample).
    """
    arrays = [np.asarray(x, dtype=float) for x in (n_params, tokens, losses)]
    if len({a.shape for a in arrays}) != 1 or arrays[0].ndim != 1:
        raise ValueError("n_params, tokens and losses must be 1-D sequences of the same length")
    if arrays[0].size < 5:
        raise ValueError(f"need at least 5 points to fit 5 parameters, got {arrays[0].size}")
    if not all(np.all(np.isfinite(a) & (a > 0)) for a in arrays):
        raise ValueError("n_params, tokens and losses must be positive and finite")
    log_n, log_d, log_l = (np.log(a) for a in arrays)
    axes = grid or HOFFMANN_GRID
    full_grid = np.array(list(itertools.product(*(axes[k] for k in PARAM_NAMES))), dtype=float)

    def best_starts(ln, ld, ll, k: int) -> np.ndarray:
        scores = _grid_objective(full_grid, ln, ld, ll, delta)
        return full_grid[np.argsort(scores, kind="stable")[:k]]

    theta, value = _fit_once(log_n, log_d, log_l, best_starts(log_n, log_d, log_l, n_starts), delta)
    law = _theta_to_law(theta, note=f"fitted on {log_n.size} points")
    rows = []
    rng = np.random.default_rng(seed)
    for _ in range(n_bootstrap):
        idx = rng.integers(0, log_n.size, log_n.size)
        ln, ld, ll = log_n[idx], log_d[idx], log_l[idx]
        starts = np.vstack([theta[None], best_starts(ln, ld, ll, bootstrap_starts)])
        t, _ = _fit_once(ln, ld, ll, starts, delta)
        rows.append(_law_row(_theta_to_law(t)))
    boot = np.array(rows, dtype=float).reshape(-1, 5)
    residuals = log_l - np.log(law.loss(np.exp(log_n), np.exp(log_d)))
    return Fit(
        law=law, objective=value, n_points=int(log_n.size), bootstrap=boot, residuals=residuals
    )


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
    )
