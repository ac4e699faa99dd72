"""The tables the book shows: fits, correlations, hardest-m comparisons, utility.

- log fit:    steps ~ a * log(b * P + 1), least squares over a > 0, b > 0 (b on a log scale)
- line fit:   steps ~ c + d * P
- both with R^2 = 1 - SS_res / SS_tot; Spearman rho between every metric and steps-to-unlearn.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .groups import class_composition
from .ledger import Ledger
from .tables import CLAIMS, UnlearnTables


# ---------------------------------------------------------------------------------- training
def final_accuracy(ledger: Ledger) -> pd.DataFrame:
    """Mean, sd, min and max over runs of the train and test accuracy at the last record."""
    return pd.DataFrame({split: pd.Series(getattr(ledger, f"{split}_acc")[:, -1]).agg(
        ["mean", "std", "min", "max"]) for split in ("train", "test")}).T


def clipping_summary(ledger: Ledger, clip: float) -> pd.Series:
    """How often clipping binds: over (run, record, point) entries, over points at least once,
    and over points clipped at more than half of their entries."""
    over = ledger.grad_norm > clip
    per_point = over.mean(axis=(0, 1))
    return pd.Series({"fraction of (run, record, point) norms clipped": float(over.mean()),
                      "points clipped at least once": float((per_point > 0).mean()),
                      "points clipped at more than half of their entries":
                          float((per_point > 0.5).mean())})


def extreme_norm_summary(ledger: Ledger, flipped: np.ndarray, n: int = 5) -> pd.DataFrame:
    """The n points with the lowest and highest average unclipped norm (mean over runs and
    records): their mean average norm and how many are flipped."""
    avg = ledger.grad_norm.mean(axis=(0, 1))
    order = np.argsort(avg)
    chosen = {f"lowest {n}": order[:n], f"highest {n}": order[-n:]}
    return pd.DataFrame({"average norm": [avg[idx].mean() for idx in chosen.values()],
                         "flipped among them": [int(flipped[idx].sum()) for idx in chosen.values()]},
                        index=list(chosen))


def distribution_summary(values: pd.Series) -> pd.Series:
    """Zero values, range, 10/50/90% quantiles and ties at the maximum of a score column."""
    q = values.quantile([0.1, 0.5, 0.9])
    return pd.Series({"points with zero loss": int((values == 0).sum()), "minimum": values.min(),
                      "10%": q[0.1], "median": q[0.5], "90%": q[0.9], "maximum": values.max(),
                      "points tied at the maximum": int((values == values.max()).sum())})


# ---------------------------------------------------------------------------------- unlearning
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


def hardest_m(steps: pd.DataFrame, main: str) -> pd.DataFrame:
    """Steps-to-unlearn and mean MIA accuracy over the checkpoints of the top-m group of every
    score, side by side per method (claim 3); columns (measure, method), rows sorted by the
    method ``main``."""
    top = steps[steps.group == "top"]
    table = top.pivot_table(index="score", columns="method",
                            values=["steps_to_unlearn", "mean_mia_acc"])
    return table.sort_values(by=[("steps_to_unlearn", main), ("mean_mia_acc", main)],
                             ascending=False)


def method_fits(steps: pd.DataFrame, score: str, methods: list[str]) -> pd.DataFrame:
    """:func:`group_fits` for every method, one row each."""
    return pd.DataFrame([group_fits(steps, score, m) for m in methods])


def point_summary(steps_points: pd.DataFrame, score: str) -> pd.DataFrame:
    """Per method and group of ``score``: points, median steps to unlearn, censored fraction and
    the mean Gaussian-fit test accuracy at the first and last checkpoint."""
    return steps_points[steps_points.score == score].groupby(["method", "group"]).agg(
        points=("index", "size"), median_steps=("steps_to_unlearn", "median"),
        censored_fraction=("censored", "mean"),
        gaussian_fit_accuracy_step0=("distinguishability_step0", "mean"),
        gaussian_fit_accuracy_final=("distinguishability_final", "mean"))


def label_noise_control(scores: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Flipped against clean points for each score column: the two means and a one-sided
    Mann-Whitney U test of 'flipped points score higher' (empty without both kinds)."""
    flipped = scores.flipped.astype(bool)
    if not flipped.any() or flipped.all():
        return pd.DataFrame(columns=["score", "mean flipped", "mean clean", "U", "p-value"])
    rows = []
    for column in columns:
        test = stats.mannwhitneyu(scores.loc[flipped, column], scores.loc[~flipped, column],
                                  alternative="greater")
        rows.append({"score": column, "mean flipped": scores.loc[flipped, column].mean(),
                     "mean clean": scores.loc[~flipped, column].mean(),
                     "U": float(test.statistic), "p-value": float(test.pvalue)})
    return pd.DataFrame(rows)


def flipped_share_of_top(scores: pd.DataFrame, column: str, fraction: float = 0.1) -> float:
    """Share of flipped points among the ``fraction`` of points with the highest ``column``."""
    top = scores[column] >= scores[column].quantile(1 - fraction)
    return float(scores.flipped.astype(bool)[top].mean())


def group_composition(groups, scores: pd.DataFrame) -> pd.DataFrame:
    """Per forget group: its median score, number of classes, largest class share and how many
    of its points are flipped."""
    labels, flipped = scores["label"].to_numpy(), scores["flipped"].to_numpy()
    rows = []
    for g in groups:
        counts = class_composition(g, labels).values()
        rows.append({"score": g.score, "group": g.label, "median score": g.score_median,
                     "classes": len(counts), "largest class share": max(counts) / len(g.indices),
                     "flipped": int(flipped[g.indices].sum())})
    return pd.DataFrame(rows)


def step0_barriers(barriers: pd.DataFrame, steps: pd.DataFrame, score: str,
                   main: str) -> pd.DataFrame:
    """Step-0 barrier, loss gap and distance per group and partner of ``score`` with the group's
    median score and steps to unlearn (method ``main``)."""
    summary = barrier_summary(barriers)
    s0 = summary[(summary.step == 0) & (summary.score == score) & (summary.method == main)]
    cols = ["group", "group_score_median", "steps_to_unlearn"]
    return s0.merge(steps[(steps.score == score) & (steps.method == main)][cols], on="group")


def barrier_correlations(step0: pd.DataFrame) -> pd.DataFrame:
    """Spearman rho of barrier, loss gap and distance with the group median score, per partner."""
    cols = ["barrier", "loss_gap", "distance"]
    return pd.DataFrame({partner: {c: spearman(g.group_score_median, g[c]) for c in cols}
                         for partner, g in step0.groupby("partner")}).T


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


def claims_table(tables: UnlearnTables, primary: str, budget: int, main: str,
                 methods: list[str]) -> pd.DataFrame:
    """Each claim of the study, the number that tests it and a plain verdict; claims 1-4 use
    the method ``main``, claim 5 every other method."""
    steps, steps_points, barriers = tables.steps, tables.steps_points, tables.barriers
    rows = [_quick_claim(steps_points, primary, main, budget)]
    rows.append(_log_claim(group_fits(steps, primary, main)))
    top = steps[(steps.group == "top") & (steps.method == main)].set_index("score")
    rows.append(_hardest_claim(top, primary))
    rows.append(_barrier_claim(barriers, steps, primary, main))
    rows += [_method_claim(group_fits(steps, primary, other), other)
             for other in methods if other != main]
    return CLAIMS.frame(rows)


def _quick_claim(steps_points: pd.DataFrame, primary: str, main: str, budget: int) -> dict:
    """Claim 1: supported when at least half of the points are unlearned within K/10 steps and
    some are censored at K."""
    pts = steps_points[(steps_points.method == main) & (steps_points.score == primary)]
    quick = float((pts.steps_to_unlearn <= budget / 10).mean()) if len(pts) else np.nan
    never = float(pts.censored.mean()) if len(pts) else np.nan
    return {"claim": "1. most points unlearn in few steps, a few need ~retraining effort",
            "measure": f"fraction of points unlearned within K/10 steps; censored at K ({main})",
            "value": f"{quick:.2f}; {never:.2f}",
            "verdict": _verdict(None if np.isnan(quick) else bool(quick >= 0.5 and never > 0))}


def _log_claim(fit: dict) -> dict:
    """Claim 2: supported when steps rise with P (Spearman > 0) and the log fit explains at
    least as much variance as a line."""
    ok = None if np.isnan(fit["log_r2"]) else \
        bool(fit["spearman"] > 0 and fit["log_r2"] >= fit["line_r2"])
    return {"claim": "2. steps grow like a*log(b*P + 1) in the privacy loss P",
            "measure": "Spearman rho (group median P vs steps); R^2 log fit vs line fit",
            "value": f"{fit['spearman']:.2f}; {fit['log_r2']:.2f} vs {fit['line_r2']:.2f}",
            "verdict": _verdict(ok)}


def _barrier_claim(barriers: pd.DataFrame, steps: pd.DataFrame, primary: str, main: str) -> dict:
    """Claim 4: supported when the step-0 barrier to the independent partner rises with the
    group's median P (Spearman > 0 over at least three groups)."""
    b = barrier_summary(barriers)
    b = b[(b.score == primary) & (b.step == 0) & (b.method == main) & (b.partner == "independent")]
    b = b.merge(steps[(steps.method == main) & (steps.score == primary)][["group", "group_score_median"]],
                on="group")
    rho = spearman(b.group_score_median, b.barrier) if len(b) > 2 else np.nan
    return {"claim": "4. harder points sit behind higher loss barriers",
            "measure": "Spearman rho (group median P vs barrier, independent retrained partner)",
            "value": f"{rho:.2f}", "verdict": _verdict(None if np.isnan(rho) else bool(rho > 0))}


def _method_claim(fit: dict, method: str) -> dict:
    """Claim 5 for one method: supported when its steps rise with P (Spearman > 0)."""
    return {"claim": f"5. the trend holds for {method}",
            "measure": "Spearman rho (group median P vs steps)",
            "value": f"{fit['spearman']:.2f}",
            "verdict": _verdict(None if np.isnan(fit["spearman"]) else bool(fit["spearman"] > 0))}
