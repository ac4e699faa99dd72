"""The tables the book shows: fits, correlations, hardest-m comparisons, utility.

- log fit:    steps ~ a * log(b * P + 1), least squares over a > 0, b > 0 (b on a log scale)
- line fit:   steps ~ c + d * P
- both with R^2 = 1 - SS_res / SS_tot; Spearman rho between every metric and steps-to-unlearn.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats


def _r2(y: np.ndarray, pred: np.ndarray) -> float:
    ss_tot = np.sum((y - y.mean()) ** 2)
    return float(1 - np.sum((y - pred) ** 2) / ss_tot) if ss_tot > 0 else float("nan")


def log_model(p, a, b):
    return a * np.log1p(b * p)


def fit_log(p: np.ndarray, steps: np.ndarray) -> dict[str, float]:
    """Fit steps = a log(b P + 1); returns a, b, r2 (NaN when fewer than 3 points)."""
    p, steps = np.asarray(p, float), np.asarray(steps, float)
    if len(p) < 3 or np.ptp(p) == 0:
        return {"a": np.nan, "b": np.nan, "r2": np.nan}
    scale = 1.0 / np.median(p[p > 0]) if np.any(p > 0) else 1.0

    def sse(theta):
        return np.sum((steps - log_model(p, np.exp(theta[0]), np.exp(theta[1]))) ** 2)

    starts = [(np.log(max(steps.max(), 1e-3) / np.log1p(s * scale * p.max())), np.log(s * scale))
              for s in (0.01, 0.1, 1, 10, 100)]
    best = min((optimize.minimize(sse, x0, method="Nelder-Mead",
                                  options={"xatol": 1e-10, "fatol": 1e-12, "maxiter": 4000})
                for x0 in starts), key=lambda r: r.fun)
    a, b = np.exp(best.x)
    return {"a": float(a), "b": float(b), "r2": _r2(steps, log_model(p, a, b))}


def fit_line(p: np.ndarray, steps: np.ndarray) -> dict[str, float]:
    """Least-squares line steps = intercept + slope * P, with R^2."""
    p, steps = np.asarray(p, float), np.asarray(steps, float)
    if len(p) < 3 or np.ptp(p) == 0:
        return {"intercept": np.nan, "slope": np.nan, "r2": np.nan}
    res = stats.linregress(p, steps)
    return {"intercept": float(res.intercept), "slope": float(res.slope), "r2": float(res.rvalue ** 2)}


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    rho = stats.spearmanr(x, y).statistic
    return float(rho) if np.isfinite(rho) else float("nan")


def group_fits(steps: pd.DataFrame, score: str, method: str) -> dict[str, float]:
    """Log and line fits of steps-to-unlearn against the group's median score (quantile groups)."""
    rows = steps[(steps.score == score) & (steps.method == method) & steps.group.str.match(r"q\d")]
    x, y = rows.group_score_median.to_numpy(), rows.steps_to_unlearn.to_numpy()
    log, line = fit_log(x, y), fit_line(x, y)
    return {"score": score, "method": method, "log_a": log["a"], "log_b": log["b"],
            "log_r2": log["r2"], "line_slope": line["slope"], "line_r2": line["r2"],
            "spearman": spearman(x, y) if len(x) > 2 else np.nan, "groups": len(x)}


def point_correlations(steps_points: pd.DataFrame, scores: pd.DataFrame,
                       metrics: list[str]) -> pd.DataFrame:
    """Spearman rho between each metric and per-point steps-to-unlearn, per method."""
    merged = steps_points.merge(scores, on="index")
    return pd.DataFrame([{"method": m, "metric": c,
                          "spearman": spearman(g[c].to_numpy(), g.steps_to_unlearn.to_numpy()),
                          "points": len(g)}
                         for m, g in merged.groupby("method") for c in metrics])


def hardest_m(steps: pd.DataFrame) -> pd.DataFrame:
    """Steps-to-unlearn of the top-m group of every score, side by side (claim 3)."""
    top = steps[steps.group == "top"]
    return top.pivot_table(index="score", columns="method", values="steps_to_unlearn").sort_values(
        by=list(top.method.unique())[:1], ascending=False)


def utility(unlearning: pd.DataFrame) -> pd.DataFrame:
    """Mean forget / retain / test accuracy per method, model kind and step."""
    cols = ["forget_acc", "retain_acc", "test_acc"]
    return unlearning.groupby(["method", "model", "step"])[cols].mean().reset_index()
