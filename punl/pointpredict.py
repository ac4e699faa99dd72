"""Predicting a point's steps to unlearn from its scores, judged on points the fit never saw.

The per-point study records every training point's steps. A random tenth of the points (at least
:data:`MIN_HELDOUT`) is held out; on the rest, each score's law is fitted as claim 2 fits it
(latent steps a log(b x) + N(0, sigma^2), recorded at the checkpoints with the placebo's chance
flags: :class:`punl.lawtest.FlaggedSteps`). For a held-out point with score x the fit gives the
probability of every recorded category (:func:`punl.lawtest.recorded_probabilities`): its
prediction is the median category, its 90% interval the categories from the 5% to the 95%
quantile. Two constant predictors stand beside the scores: ``0 steps`` (every point predicted
never distinguishable, interval [0, 0]) and ``median`` (the fitted points' median category, the
interval their 5% to 95% quantiles). Each is judged on the held-out points by its mean absolute
error in steps (a censored point counted at K), its interval's coverage of the recorded category
and its mean width in steps, and Spearman's rho of predicted with recorded steps.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import fits, lawtest
from .groups import stream_seed
from .pointclaims import intervals
from .tables import POINT_PREDICTIONS, POINT_PREDICTION_VALIDATION

#: The share of training points held out, and the fewest held out.
HELDOUT_SHARE, MIN_HELDOUT = 0.1, 50
COVERAGE = 0.9
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
        probs = lawtest.recorded_probabilities(fits.log_model(x[held], law["a"], law["b"]),
                                            law["sigma"], ck, flags)
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
