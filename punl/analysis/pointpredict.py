"""Predicting a point's steps to unlearn from its scores, judged on points the fit never saw.

The per-point study records every training point's steps. A random tenth of the points (at least
:data:`MIN_HELDOUT`) is held out; on the rest, each score's law is fitted as claim 2 fits it
(latent steps a log(b x) + N(0, sigma^2), recorded at the checkpoints with the placebo's chance
flags: :class:`punl.analysis.lawtest.FlaggedSteps`). For a held-out point with score x the fit gives the
probability of every recorded category (:func:`punl.analysis.lawtest.recorded_probabilities`): its
prediction is the median category, its 90% interval the categories from the 5% to the 95%
quantile. Two constant predictors stand beside the scores: ``0 steps`` (every point predicted
never distinguishable, interval [0, 0]) and ``median`` (the fitted points' median category, the
interval their 5% to 95% quantiles). Each is judged on the held-out points by its mean absolute
error in steps (a censored point counted at K), its interval's coverage of the recorded category
and its mean width in steps, and Spearman's rho of predicted with recorded steps.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import fits, lawtest
from .claims import Choice, Study
from .fits import COVERAGE
from ..study.groups import stream_seed
from .pointclaims import flag_distribution, intervals, select_points, with_scores
from .predict import RequestError, check_coverage, check_request, check_score
from ..core.tables import POINT_PREDICTIONS, POINT_PREDICTION_VALIDATION

#: The share of training points held out, and the fewest held out.
HELDOUT_SHARE, MIN_HELDOUT = 0.1, 50
CONSTANTS = ("0 steps", "median")


def heldout_mask(n: int, seed: int) -> np.ndarray:
    """Which of n points are held out: a random HELDOUT_SHARE of them, at least MIN_HELDOUT
    (all but 3 when n is smaller), from the run's own stream."""
    k = min(max(round(HELDOUT_SHARE * n), MIN_HELDOUT), max(n - 3, 0))
    pick = np.random.default_rng(stream_seed(seed, "heldout-points")).choice(n, k, replace=False)
    mask = np.zeros(n, bool)
    mask[pick] = True
    return mask


def category_steps(r: np.ndarray, checkpoints: np.ndarray) -> np.ndarray:
    """Steps of recorded categories: 0 never distinguishable, k_j, and K for censored."""
    values = np.concatenate([[0.0], np.asarray(checkpoints, float)[1:], [checkpoints[-1]]])
    return values[np.asarray(r)]


def _quantile_category(probs: np.ndarray, q: float) -> np.ndarray:
    """The first category whose cumulative probability reaches q, per row."""
    return np.argmax(np.cumsum(probs, axis=1) >= q - 1e-12, axis=1)


def _rows(predictor: str, index, measured, predicted, low, high, checkpoints) -> pd.DataFrame:
    steps = lambda r: category_steps(r, checkpoints)  # noqa: E731
    return pd.DataFrame({
        "predictor": predictor, "index": index, "predicted_steps": steps(predicted),
        "steps_low": steps(low), "steps_high": steps(high), "measured_steps": steps(measured),
        "censored": measured == len(checkpoints), "covered": (low <= measured) & (measured <= high),
        "error": np.abs(steps(predicted) - steps(measured))})


def point_predictions(rows: pd.DataFrame, columns: list[str], checkpoints: np.ndarray,
                      flags: np.ndarray | None, seed: int) -> pd.DataFrame:
    """The ``point_predictions`` table: every predictor's prediction of every held-out point
    (``rows``: the per-point study's training points with their score ``columns``)."""
    ck = np.asarray(checkpoints, float)
    r = lawtest.categories(intervals(rows, ck), ck)
    held = heldout_mask(len(rows), seed)
    index = rows["index"].to_numpy()[held]
    tail = (1 - COVERAGE) / 2
    frames = [_rows("0 steps", index, r[held], *(np.zeros(held.sum(), int),) * 3, ck)]
    fitted = np.sort(r[~held])
    constant = lambda q: np.full(held.sum(), fitted[int(q * (len(fitted) - 1))])  # noqa: E731
    frames.append(_rows("median", index, r[held], constant(0.5), constant(tail),
                        constant(1 - tail), ck))
    y = lawtest.category_intervals(r[~held], ck)
    likelihood = lawtest.FlaggedSteps(y, ck, flags) if flags is not None else None
    for column in columns:
        x = rows[column].to_numpy(float)
        law = fits.fit_log_censored(x[~held], y, likelihood=likelihood)
        probs = lawtest.recorded_probabilities(fits.log_model(x[held], law.a, law.b),
                                               law.sigma, ck, flags)
        frames.append(_rows(column, index, r[held], _quantile_category(probs, 0.5),
                            _quantile_category(probs, tail), _quantile_category(probs, 1 - tail),
                            ck))
    return POINT_PREDICTIONS.check(pd.concat(frames, ignore_index=True))


def point_validation(predictions: pd.DataFrame) -> pd.DataFrame:
    """The ``point_prediction_validation`` table: each predictor over the held-out points."""
    rows = []
    for predictor, p in predictions.groupby("predictor", sort=False):
        rho = fits.spearman(p.predicted_steps, p.measured_steps)[0]
        rows.append({"predictor": predictor, "points": len(p), "mae": float(p.error.mean()),
                     "coverage": float(p.covered.mean()),
                     "width": float((p.steps_high - p.steps_low).mean()),
                     "spearman": rho})
    return POINT_PREDICTION_VALIDATION.frame(rows)


# ------------------------------------------------------------------- a request, point by point
@dataclass(frozen=True)
class PointForecast:
    """The predicted steps to unlearn each point of a request, and the request as a whole,
    from the per-point study's law of one score (:func:`forecast_points`). Steps are read on
    the run's checkpoints; ``inf`` stands for more than the budget K."""

    score: str
    points: pd.DataFrame        # index, x, steps, steps_low, steps_high, measured, status
    steps: float                # the request: the median of its slowest point's steps
    steps_low: float
    steps_high: float
    budget: int
    coverage: float
    fitted_points: int
    law: fits.CensoredLogFit    # the law of the score fitted on the per-point study

    def summary(self) -> str:
        """A few lines a provider reads: the request, then one line per point."""
        def show(k: float) -> str:
            return f"more than {self.budget}" if not np.isfinite(k) else f"{k:.0f}"
        lines = [f"request of {len(self.points)} points; per point, from the law of "
                 f"{self.score} fitted on the {self.fitted_points} points of the per-point study "
                 f"(steps = {self.law.a:.3g} log({self.law.b:.3g} x) + N(0, "
                 f"{self.law.sigma:.3g}^2))",
                 f"the request (its slowest point): {show(self.steps)} steps; "
                 f"{self.coverage:.0%} interval {show(self.steps_low)} to "
                 f"{show(self.steps_high)} steps (budget K = {self.budget})",
                 "  index  score        predicted  interval            measured"]
        for p in self.points.itertuples():
            measured = show(p.measured) if p.status in ("unlearned", "censored") else p.status
            lines.append(f"  {p.index:>5}  {p.x:<11.4g}  {show(p.steps):>9}  "
                         f"{show(p.steps_low) + ' to ' + show(p.steps_high):<18}  {measured}")
        return "\n".join(lines)

    def as_dict(self) -> dict:
        """Plain JSON: null for more than the budget."""
        def plain(v):
            v = v.item() if hasattr(v, "item") else v
            return None if isinstance(v, float) and not np.isfinite(v) else v
        return {"score": self.score, "steps": plain(self.steps),
                "steps_low": plain(self.steps_low), "steps_high": plain(self.steps_high),
                "budget": self.budget, "coverage": self.coverage,
                "fitted_points": self.fitted_points,
                "law": {k: plain(float(getattr(self.law, k))) for k in ("a", "b", "sigma")},
                "points": [{k: plain(v) for k, v in row.items()}
                           for row in self.points.to_dict("records")]}


def latent_category_probabilities(x: np.ndarray, law: fits.CensoredLogFit,
                                  checkpoints: np.ndarray) -> np.ndarray:
    """P(c = r) for each point with score x: the category of its latent steps
    a log(b x) + N(0, sigma^2) on the checkpoints (no chance flags: what unlearning costs, not
    what the attack records)."""
    return lawtest.recorded_probabilities(fits.log_model(x, law.a, law.b), law.sigma,
                                          checkpoints)


def forecast_points(rows: pd.DataFrame, scores: pd.DataFrame, score: str, indices: np.ndarray,
                    checkpoints: np.ndarray, flags: np.ndarray | None,
                    coverage: float = COVERAGE) -> PointForecast:
    """Predict each requested point's steps, and the request's.

    The law of ``score`` is fitted on every training point of the per-point study (``rows``,
    with the score column) as claim 2 fits it, the placebo's chance ``flags`` in its likelihood;
    the requested points' scores are read from ``scores`` (every training point).
    Point i's latent category c_i has probabilities :func:`latent_category_probabilities`; its
    prediction is their median, its interval the (1 - coverage)/2 and (1 + coverage)/2
    quantiles. The request is unlearned when its slowest point is; taking the points as
    independent given their scores,

        P(max_i c_i <= r) = prod_i P(c_i <= r),

    whose median and quantiles give the request's steps and interval. A point's measured steps
    in the study stand beside its prediction."""
    ck = np.asarray(checkpoints, float)
    r = lawtest.categories(intervals(rows, ck), ck)
    y = lawtest.category_intervals(r, ck)
    likelihood = lawtest.FlaggedSteps(y, ck, flags) if flags is not None else None
    law = fits.fit_log_censored(rows[score].to_numpy(float), y, likelihood=likelihood)
    x = scores.set_index("index")[score].reindex(indices).to_numpy(float)
    probs = latent_category_probabilities(x, law, ck)
    tail = (1 - coverage) / 2
    steps = lambda r: np.where(np.asarray(r) == len(ck), np.inf,  # noqa: E731
                               category_steps(r, ck))
    request = np.cumprod(np.cumsum(probs, axis=1), axis=0)[-1:]     # P(max <= r), 1 x (C+1)
    request = np.diff(np.concatenate([[[0.0]], request], axis=1), axis=1)
    measured = rows.set_index("index").reindex(indices)
    points = pd.DataFrame({
        "index": np.asarray(indices, np.int64), "x": x,
        "steps": steps(_quantile_category(probs, 0.5)),
        "steps_low": steps(_quantile_category(probs, tail)),
        "steps_high": steps(_quantile_category(probs, 1 - tail)),
        "measured": np.where(measured.censored.fillna(False).to_numpy(bool), np.inf,
                             measured.steps_to_unlearn.to_numpy(float)),
        "status": measured.status.fillna("not in the study").to_numpy(object)})
    low, mid, high = (float(steps(_quantile_category(request, q))[0])
                      for q in (tail, 0.5, 1 - tail))
    return PointForecast(score=score, points=points, steps=mid, steps_low=low, steps_high=high,
                         budget=int(ck[-1]), coverage=coverage, fitted_points=len(rows), law=law)


def predict_request(point_steps: pd.DataFrame, scores: pd.DataFrame, indices, score: str,
                    level: float, checkpoints: np.ndarray,
                    coverage: float = COVERAGE) -> PointForecast:
    """:func:`forecast_points` from a run's published ``point_steps`` and ``scores`` at
    ``level`` (all models), every choice checked first: one
    :class:`punl.analysis.predict.RequestError` naming the option otherwise."""
    idx = check_request(indices, len(scores))
    check_score(scores, score)
    levels = sorted(set(point_steps.level))
    if not np.isclose(levels, level).any():
        raise RequestError(f"--level: the per-point steps are at levels {levels}, not {level:g}")
    check_coverage(coverage)
    rows = with_scores(select_points(point_steps, level), scores, [score])
    placebo = select_points(point_steps, level, kind="placebo")
    flags = flag_distribution(placebo, checkpoints) if len(placebo) else None
    return forecast_points(rows, scores, score, idx, checkpoints, flags, coverage)


def point_prediction_tables(study: Study) -> dict[str, pd.DataFrame]:
    """Every score's and constant's prediction of the held-out points of the per-point study and
    their validation (module docstring; empty without a per-point study)."""
    if not study.has_points:
        return {"point_predictions": POINT_PREDICTIONS.frame([]),
                "point_prediction_validation": POINT_PREDICTION_VALIDATION.frame([])}
    main = Choice(study.level, "all", study.primary_score)
    columns = list(dict.fromkeys([study.primary_score, *study.baselines]))
    flags = flag_distribution(study.points(main, "placebo"), study.checkpoints)
    predicted = point_predictions(study.points(main), columns, study.checkpoints, flags,
                                  study.seed)
    return {"point_predictions": predicted,
            "point_prediction_validation": point_validation(predicted)}
