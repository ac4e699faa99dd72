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
    """Steps-to-unlearn and mean MIA accuracy over the checkpoints of the top-m group of every
    score, side by side per method (claim 3); columns (measure, method)."""
    top = steps[steps.group == "top"]
    table = top.pivot_table(index="score", columns="method",
                            values=["steps_to_unlearn", "mean_mia_acc"])
    first = top.method.iloc[0]
    return table.sort_values(by=[("steps_to_unlearn", first), ("mean_mia_acc", first)],
                             ascending=False)


def utility(unlearning: pd.DataFrame) -> pd.DataFrame:
    """Mean forget / retain / test accuracy per method, model kind and step."""
    cols = ["forget_acc", "retain_acc", "test_acc"]
    return unlearning.groupby(["method", "model", "step"])[cols].mean().reset_index()


def barrier_summary(barriers: pd.DataFrame) -> pd.DataFrame:
    """One row per (score, group, method, partner, step): barrier, loss gap, distance."""
    keys = ["score", "group", "method", "partner", "pair", "step"]
    return barriers.groupby(keys)[["barrier", "loss_gap", "distance"]].first().reset_index()


def _verdict(ok: bool | None) -> str:
    return "inconclusive" if ok is None else ("supported" if ok else "not supported")


def _hardest_claim(top: pd.DataFrame, primary: str) -> dict:
    """Claim 3: steps of the top-m by privacy loss against the top-m of every baseline. A tie
    (for instance all censored at K) is decided by the mean MIA accuracy over the checkpoints,
    and stays inconclusive when the difference is within the groups' mean bootstrap
    half-width."""
    others = top.drop(primary, errors="ignore")
    row = {"claim": "3. the hardest-m by privacy loss take longer than the hardest-m by any baseline",
           "measure": "top-m by privacy loss vs best baseline: steps; mean MIA accuracy",
           "value": "n/a", "verdict": _verdict(None)}
    if primary not in top.index or others.empty:
        return row
    p, best = top.loc[primary], others.loc[others.steps_to_unlearn.idxmax()]
    row["value"] = (f"{p.steps_to_unlearn} vs {best.steps_to_unlearn} ({best.name}); "
                    f"{p.mean_mia_acc:.3f} vs {others.mean_mia_acc.max():.3f}")
    if p.steps_to_unlearn != best.steps_to_unlearn:
        row["verdict"] = _verdict(bool(p.steps_to_unlearn > others.steps_to_unlearn.max()))
        return row
    rival = others.loc[others.mean_mia_acc.idxmax()]
    tolerance = max(p.mean_mia_ci_halfwidth, rival.mean_mia_ci_halfwidth)
    gap = p.mean_mia_acc - rival.mean_mia_acc
    row["verdict"] = _verdict(None if abs(gap) <= tolerance else bool(gap > 0))
    return row


def claims_table(steps: pd.DataFrame, steps_points: pd.DataFrame, barriers: pd.DataFrame,
                 primary: str, budget: int, methods: list[str]) -> pd.DataFrame:
    """Each claim of the study, the number that tests it and a plain verdict."""
    main = methods[0]
    rows = []
    pts = steps_points[(steps_points.method == main) & (steps_points.score == primary)]
    quick = float((pts.steps_to_unlearn <= budget / 10).mean()) if len(pts) else np.nan
    never = float(pts.censored.mean()) if len(pts) else np.nan
    rows.append({"claim": "1. most points unlearn in few steps, a few need ~retraining effort",
                 "measure": f"fraction of points unlearned within K/10 steps; censored at K ({main})",
                 "value": f"{quick:.2f}; {never:.2f}",
                 "verdict": _verdict(None if np.isnan(quick) else bool(quick >= 0.5 and never > 0))})
    fit = group_fits(steps, primary, main)
    ok2 = None if np.isnan(fit["log_r2"]) else bool(fit["spearman"] > 0 and fit["log_r2"] >= fit["line_r2"])
    rows.append({"claim": "2. steps grow like a*log(b*P + 1) in the privacy loss P",
                 "measure": "Spearman rho (group median P vs steps); R^2 log fit vs line fit",
                 "value": f"{fit['spearman']:.2f}; {fit['log_r2']:.2f} vs {fit['line_r2']:.2f}",
                 "verdict": _verdict(ok2)})
    top = steps[(steps.group == "top") & (steps.method == main)].set_index("score")
    rows.append(_hardest_claim(top, primary))
    b = barrier_summary(barriers)
    b = b[(b.score == primary) & (b.step == 0) & (b.method == main) & (b.partner == "independent")]
    b = b.merge(steps[(steps.method == main) & (steps.score == primary)][["group", "group_score_median"]],
                on="group")
    rho4 = spearman(b.group_score_median, b.barrier) if len(b) > 2 else np.nan
    rows.append({"claim": "4. harder points sit behind higher loss barriers",
                 "measure": "Spearman rho (group median P vs barrier, independent retrained partner)",
                 "value": f"{rho4:.2f}", "verdict": _verdict(None if np.isnan(rho4) else bool(rho4 > 0))})
    for other in methods[1:]:
        f = group_fits(steps, primary, other)
        rows.append({"claim": f"5. the trend holds for {other}",
                     "measure": "Spearman rho (group median P vs steps)",
                     "value": f"{f['spearman']:.2f}",
                     "verdict": _verdict(None if np.isnan(f["spearman"]) else bool(f["spearman"] > 0))})
    return pd.DataFrame(rows)
