"""Do the scaling-law fit's 90% bootstrap intervals hold the truth 90% of the time?

    python bench/fit_coverage.py --sweep /tmp/l21/study/sweep --huber-c 1.345 --datasets 80

Takes a finished sweep's fitted points (``sweep_table.json``, role ``fit``), fits the law with
the replicates' noise model σ(D) (``train.scaling.replicate_noise``) and Huber's ``c`` in
units of σ, then draws ``--datasets`` synthetic sweeps at the same (N, D) points from that law:
each point's log-loss gets one of the real fit's standardised residuals rᵢ/σᵢ (drawn with
replacement, random sign) × its own σ(D), so the noise has the real points' tails and misfit,
not a Gaussian's. Every synthetic sweep is fitted the same way (its own noise model, the same
number of bootstrap refits) and we count how often each 90% interval holds the true α and β,
how wide it is, and how far the estimates spread. One process, one BLAS thread (the fit's).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from train.scaling import fit_scaling_law, replicate_noise  # noqa: E402


def fit_points(sweep: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rows = [r for r in json.loads((sweep / "sweep_table.json").read_text()) if r["role"] == "fit"]
    return tuple(
        np.array([r[k] for r in rows], dtype=float) for k in ("n_params", "tokens", "val_loss")
    )


def coverage(
    n: np.ndarray,
    d: np.ndarray,
    loss: np.ndarray,
    *,
    huber_c: float,
    datasets: int,
    n_bootstrap: int,
    seed: int,
    log=print,
) -> dict:
    """Coverage, median width and spread of the α and β intervals over synthetic sweeps."""
    noise = replicate_noise(n, d, loss)
    if noise is None:
        raise SystemExit("the sweep has too few replicated points for a noise model")
    fitted = fit_scaling_law(n, d, loss, noise=noise, huber_c=huber_c)
    truth, sigma = fitted.law, noise.sigma(d)
    standardised = fitted.residuals / sigma  # log L_obs − log L_fit, in units of σ(D)
    rng = np.random.default_rng(seed)
    rows = []
    start = time.perf_counter()
    for k in range(datasets):
        z = rng.choice(standardised, size=n.size) * rng.choice([-1.0, 1.0], size=n.size)
        synthetic = truth.loss(n, d) * np.exp(z * sigma)
        fit = fit_scaling_law(
            n, d, synthetic, noise=replicate_noise(n, d, synthetic), huber_c=huber_c,
            n_bootstrap=n_bootstrap, seed=1000 + k,
        )  # fmt: skip
        iv = fit.param_intervals()
        rows.append({p: (*iv[p], getattr(fit.law, p)) for p in ("alpha", "beta")})
        log(f"c = {huber_c}: dataset {k + 1}/{datasets}, {time.perf_counter() - start:.0f} s")
    out: dict = {"huber_c": huber_c, "datasets": datasets, "n_bootstrap": n_bootstrap,
                 "truth": {"alpha": truth.alpha, "beta": truth.beta}}  # fmt: skip
    for p in ("alpha", "beta"):
        lo, hi, est = (np.array([r[p][i] for r in rows]) for i in range(3))
        true = getattr(truth, p)
        out[p] = {
            "coverage": float(np.mean((lo <= true) & (true <= hi))),
            "below": float(np.mean(true < lo)),  # the truth below the interval
            "above": float(np.mean(true > hi)),
            "median_width": float(np.median(hi - lo)),
            "estimate_bias": float(np.mean(est) - true),
            "estimate_sd": float(np.std(est, ddof=1)),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sweep", required=True, help="a finished sweep's directory (sweep_table.json)")
    p.add_argument("--huber-c", type=float, default=1.345, help="Huber's c in units of σ(D)")
    p.add_argument("--datasets", type=int, default=80)
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap refits per fit")
    p.add_argument("--seed", type=int, default=456)
    args = p.parse_args(argv)
    n, d, loss = fit_points(Path(args.sweep))
    result = coverage(
        n, d, loss, huber_c=args.huber_c, datasets=args.datasets, n_bootstrap=args.bootstrap,
        seed=args.seed, log=lambda line: print(line, file=sys.stderr, flush=True),
    )  # fmt: skip
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
