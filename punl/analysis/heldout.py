"""Predictions judged on requests they never saw, and the adaptive rule on recorded checkpoints.

**Validation.** The held-out requests, predicted from the calibration groups alone
(:func:`heldout_predictions`, :func:`validation_table`): Spearman's rho of predicted against
measured steps (censored ones ranked above K) and amplitude; the coverage of the intervals (a
measured checkpoint m is covered when checkpoint(low) <= m <= checkpoint(high), so a censored
one when the upper end passes K and a never distinguishable one when the lower end is 0) and
their mean width min(high, K) - low; and the mean absolute error in steps: the distance from min(mu, K) to the measured interval
(0 for never distinguishable, [k_{j-1}, k_j] for unlearned at k_j, K for censored, so censored
values count at K), 0 when the prediction lies inside it.

**Adaptive unlearning, on the recorded checkpoints.** For each held-out request the rule looks
first at the checkpoint at or above (1 + margin) mu(x), then at the checkpoint at or above
``growth`` times the last look, until the group is not distinguishable there (adjusted p >
level) or the budget ends (:func:`adaptive_table`). It succeeds when it stops at or after the
request's measured steps (a stop during a momentary dip is a failure). A fixed budget k
succeeds on the requests whose measured steps are at most k; :func:`adaptive_comparison` sets
the adaptive rule's total steps against the smallest fixed budget with at least its success
rate. The live rule, which runs the method and the attack, is :mod:`punl.analysis.adaptive`.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import measures, fits
from .predict import (AGGREGATES, COVERAGE, CostModel, MeasuredRun, Prediction, fit_cost_model,
                      group_values, measured_checkpoint, measured_groups, on_grid)
from ..core.tables import ADAPTIVE, HELDOUT_PREDICTIONS, PREDICTION_VALIDATION

#: The adaptive rule's first look: (1 + margin) times the predicted steps; then growth x the last.
ADAPTIVE_MARGIN, ADAPTIVE_GROWTH = 0.25, 2.0


# ----------------------------------------------------------------------------- validation
def heldout_predictions(run: MeasuredRun, method: str | None = None, level: float | None = None,
                        coverage: float = COVERAGE) -> pd.DataFrame:
    """Every predictor (score x aggregate) fitted on the calibration groups and applied to every
    held-out request, beside what the request measured (the ``heldout_predictions`` table)."""
    method = method or run.primary_method
    level = run.level if level is None else level
    groups = measured_groups(run, method, level)
    held = groups[groups.heldout]
    if held.empty:
        return HELDOUT_PREDICTIONS.frame([])
    rows = []
    for score in run.predictors():
        for how in AGGREGATES:
            model = fit_cost_model(run, score, how, method, level, None, coverage, groups)
            x = group_values(held, run.scores, score, how)
            for xi, g in zip(x, held.itertuples()):
                rows.append(_heldout_row(model, model.at(xi, len(g.members)), g))
    return HELDOUT_PREDICTIONS.frame(rows)


def _heldout_row(model: CostModel, p: Prediction, g) -> dict:
    measured = measured_checkpoint(g.status, g.steps_to_unlearn)
    a = g.response_amplitude
    return {"score": p.score, "aggregation": p.aggregate, "group": g.group, "kind": g.kind,
            "group_size": p.size, "x": p.x, "outside_range": p.outside_range,
            "predicted_steps": p.steps, "steps_low": p.steps_low, "steps_high": p.steps_high,
            "predicted_checkpoint": p.checkpoint, "checkpoint_low": p.checkpoint_low,
            "checkpoint_high": p.checkpoint_high, "status": g.status,
            "measured_steps": int(g.steps_to_unlearn), "censored": bool(g.censored),
            "steps_covered": bool(p.checkpoint_low <= measured <= p.checkpoint_high),
            "steps_error": interval_distance(min(p.steps, model.budget), g.status,
                                             g.steps_to_unlearn, model.grid),
            "predicted_amplitude": p.amplitude, "amplitude_low": p.amplitude_low,
            "amplitude_high": p.amplitude_high, "measured_amplitude": a,
            "amplitude_covered": bool(p.amplitude_low <= a <= p.amplitude_high) if a > 0
            else False}


def interval_distance(k: float, status: str, steps: float, grid: np.ndarray | None) -> float:
    """The distance from k to a group's measured interval: [0, 0] never distinguishable,
    [k_{j-1}, k_j] unlearned at checkpoint k_j, [K, K] censored (counted at K)."""
    low = high = float(steps)
    if status == "unlearned" and grid is not None:
        j = int(np.searchsorted(grid, steps))
        low = float(grid[max(j - 1, 0)])
    return float(max(low - k, k - high, 0.0))


def _ranked_steps(rows: pd.DataFrame, budget: int) -> np.ndarray:
    """Measured steps with the censored ones ranked above every unlearned one."""
    return np.where(rows.censored, budget + 1, rows.measured_steps).astype(float)


def validation_table(heldout: pd.DataFrame, budget: int) -> pd.DataFrame:
    """Per predictor, over all held-out requests and over each kind of request: rank
    correlation, interval coverage, the intervals' mean width within the budget and the mean
    absolute error (the ``prediction_validation`` table)."""
    rows = []
    for (score, how), h in heldout.groupby(["score", "aggregation"], sort=False):
        parts = [("all", h), *((k, p) for k, p in h.groupby("kind", sort=False))]
        for requests, p in parts:
            rho, rho_p = fits.spearman(p.predicted_steps, _ranked_steps(p, budget))
            positive = p[p.measured_amplitude > 0]
            amp_rho = fits.spearman(p.predicted_amplitude, p.measured_amplitude)[0]
            rows.append({"score": score, "aggregation": how, "requests": requests,
                         "n_requests": len(p), "steps_spearman": rho, "steps_spearman_p": rho_p,
                         "steps_coverage": float(p.steps_covered.mean()),
                         "steps_mae": float(p.steps_error.mean()),
                         "steps_width": float((np.minimum(p.steps_high, budget)
                                               - np.minimum(p.steps_low, budget)).mean()),
                         "censored": int(p.censored.sum()),
                         "outside_range": int((p.outside_range != "").sum()),
                         "amplitude_spearman": amp_rho,
                         "amplitude_coverage": float(positive.amplitude_covered.mean())
                         if len(positive) else np.nan,
                         "amplitude_requests": len(positive)})
    return PREDICTION_VALIDATION.frame(rows)


# ------------------------------------------------------------------------------- adaptive
def look_steps(start: float, budget: int, growth: float = ADAPTIVE_GROWTH,
          grid: np.ndarray | None = None) -> list[int]:
    """The adaptive rule's looks on ``grid`` (sorted; every integer step without one): the
    first at or above ``start`` (the budget when start passes it), then each at or above
    ``growth`` times the last (and after it), ending at the budget."""
    k = on_grid(start, grid, budget)
    out = [int(k) if np.isfinite(k) else budget]
    while out[-1] < budget:
        nxt = on_grid(max(growth * out[-1], out[-1] + 1), grid, budget)
        out.append(int(nxt) if np.isfinite(nxt) else budget)
    return out


def recorded_looks(start: float, checkpoints: np.ndarray, growth: float = ADAPTIVE_GROWTH
                   ) -> list[int]:
    """:func:`look_steps` on recorded checkpoints, the last of which is the budget."""
    checkpoints = np.sort(np.asarray(checkpoints))
    return look_steps(start, int(checkpoints[-1]), growth, checkpoints)


def adaptive_table(run: MeasuredRun, heldout: pd.DataFrame, margin: float = ADAPTIVE_MARGIN,
                   growth: float = ADAPTIVE_GROWTH, method: str | None = None,
                   level: float | None = None) -> pd.DataFrame:
    """The adaptive rule on every held-out request and predictor, evaluated on the recorded
    checkpoints of that request (the same models at the same checkpoints): the ``adaptive``
    table."""
    method = method or run.primary_method
    level = run.level if level is None else level
    a = run.attack[(run.attack.method == method) & (run.attack.design == "all")]
    adjusted = {g: s.set_index("step").adjusted_p for g, s in a.groupby("group", sort=False)}
    rows = []
    for r in heldout.itertuples():
        p = adjusted[r.group]
        looks = recorded_looks((1 + margin) * r.predicted_steps, run.checkpoints, growth)
        stop = next((k for k in looks if p[k] > level), None)
        used = looks[-1] if stop is None else stop
        rows.append({"score": r.score, "aggregation": r.aggregation, "group": r.group,
                     "kind": r.kind, "first_look": looks[0],
                     "looks": looks.index(used) + 1, "steps_used": used,
                     "passed": stop is not None, "measured_steps": r.measured_steps,
                     "censored": r.censored,
                     "success": stop is not None and not r.censored and used >= r.measured_steps})
    return ADAPTIVE.frame(rows)


def fixed_success(adaptive: pd.DataFrame, budget: int) -> float:
    """The share of requests a fixed budget of ``budget`` steps unlearns (measured steps at
    most the budget, not censored)."""
    return float((~adaptive.censored & (adaptive.measured_steps <= budget)).mean())


def fixed_budget_curve(adaptive: pd.DataFrame, checkpoints: np.ndarray) -> pd.DataFrame:
    """Every fixed budget (a recorded checkpoint) over the held-out requests: its success rate
    and total steps."""
    requests = adaptive.drop_duplicates("group")
    return pd.DataFrame([{"budget": int(k), "success": fixed_success(requests, k),
                          "total_steps": int(k) * len(requests)} for k in np.sort(checkpoints)])


def adaptive_comparison(adaptive: pd.DataFrame, checkpoints: np.ndarray) -> pd.DataFrame:
    """Per predictor: the adaptive rule's success rate, total steps and mean looks, against the
    smallest fixed budget (a recorded checkpoint) with at least its success rate, and that
    budget's total steps over the same requests."""
    rows = []
    for (score, how), a in adaptive.groupby(["score", "aggregation"], sort=False):
        rate = float(a.success.mean())
        fixed = next((int(k) for k in np.sort(checkpoints)
                      if fixed_success(a, k) >= rate - 1e-12), None)
        rows.append({"score": score, "aggregation": how, "requests": len(a),
                     "adaptive_success": rate, "adaptive_total_steps": int(a.steps_used.sum()),
                     "mean_looks": float(a.looks.mean()),
                     "fixed_budget": fixed,
                     "fixed_success": fixed_success(a, fixed) if fixed is not None else np.nan,
                     "fixed_total_steps": fixed * len(a) if fixed is not None else np.nan})
    return pd.DataFrame(rows)


def prediction_tables(run: MeasuredRun, coverage: float = COVERAGE) -> dict[str, pd.DataFrame]:
    """The run's published prediction tables: ``heldout_predictions``,
    ``prediction_validation`` and ``adaptive`` (empty without held-out requests)."""
    held = heldout_predictions(run, coverage=coverage)
    return {"heldout_predictions": held,
            "prediction_validation": validation_table(held, run.budget),
            "adaptive": adaptive_table(run, held)}


def coverage_sentence(validation: pd.DataFrame) -> str:
    """The range over predictors of the share of held-out requests their 90% intervals
    covered, as a sentence; or why there is none."""
    covered = validation.steps_coverage.dropna() if len(validation) else validation
    if not len(covered):
        return ("No predictor's 90% interval was judged on a held-out request, so their "
                "coverage is not known.")
    percent = measures.percent
    return (f"The 90% intervals covered {percent(covered.min())} to {percent(covered.max())} of "
            "the requests across predictors, so read the coverage with the intervals' width "
            "above: a wide interval covers easily.")


def prediction_findings(validation: pd.DataFrame, comparison: pd.DataFrame,
                        primary: str) -> dict[str, str]:
    """The numbers of the prediction chapter's closing paragraph, as text: over all held-out
    requests, the best predictor by Spearman's rho of predicted with measured steps (its rho, p,
    coverage of the 90% intervals and mean absolute error), the primary score's best
    aggregate, the range of coverage over predictors, and the adaptive rule with the primary
    score's best aggregate against the smallest fixed budget with its success rate."""
    fmt, percent = measures.fmt, measures.percent
    v = validation[validation.requests == "all"]
    ranked = v[v.steps_spearman.notna()]
    if ranked.empty:
        return {"requests": fmt(int(v.n_requests.max())) if len(v) else "0",
                "best": "no predictor (too few requests with distinct measured steps to rank)",
                "primary_clause": "nothing can be said of the privacy loss",
                "coverage_sentence": coverage_sentence(v),
                "adaptive_clause": "the adaptive rule was not compared"}
    best = ranked.loc[ranked.steps_spearman.idxmax()]
    p = ranked[ranked.score == primary]
    own = p.loc[p.steps_spearman.idxmax()] if len(p) else None

    def describe(row) -> str:
        return (f"the {row.aggregation} of {row.score} (Spearman ρ = {fmt(row.steps_spearman)}, "
                f"p = {fmt(row.steps_spearman_p)}; coverage {percent(row.steps_coverage)}; "
                f"mean absolute error {fmt(row.steps_mae)} steps)")

    primary_clause = ("the privacy loss itself ranks best" if own is not None
                      and own.name == best.name else
                      f"the privacy loss does best as {describe(own)}" if own is not None
                      else f"{primary} is not among the predictors")
    out = {"requests": fmt(int(best.n_requests)), "best": describe(best),
           "primary_clause": primary_clause,
           "coverage_sentence": coverage_sentence(v)}
    c = comparison[(comparison.score == primary)] if len(comparison) else comparison
    if own is not None and len(c):
        row = c[c.aggregation == own.aggregation].iloc[0]
        fixed = ("no recorded budget reached its success rate" if pd.isna(row.fixed_budget)
                 else f"the smallest fixed budget with at least that rate, K = "
                      f"{fmt(int(row.fixed_budget))}, takes {fmt(int(row.fixed_total_steps))}")
        out["adaptive_clause"] = (
            f"the adaptive rule with the {own.aggregation} of {primary} unlearned "
            f"{percent(row.adaptive_success)} of the requests in {fmt(int(row.adaptive_total_steps))} "
            f"steps in all ({fmt(row.mean_looks)} looks on average); {fixed}")
    else:
        out["adaptive_clause"] = "the adaptive rule was not evaluated"
    return out
