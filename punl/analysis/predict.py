"""Predict what a deletion request will cost, from a finished run's tables, before running it.

A deletion request is a set of training indices. From the run's per-point scores and its
measured forget groups alone (nothing is trained or unlearned), :func:`predict` returns

- the **steps** until the request is indistinguishable from retraining at the run's criterion
  (the group attack against its permutation null: adjusted p above the level from then on), or
  with ``eps`` until the fitted excess divergence falls to eps, with a prediction interval;
- the **response amplitude** A of the excess divergence D(k) - D_null(k) = A exp(-ck) + floor,
  with a prediction interval;
- a flag when the request lies outside the range the run calibrated on.

**Calibration.** The groups measured for one method at one level (design ``all``), every kind
but the held-out requests (:func:`punl.study.groups.is_heldout`), which are kept for validation. A
*predictor* is a per-point score s (a column of the scores table) and an aggregate g (mean, max
or median): group G's predictor value is x_G = g({s(i) : i in G}), a request's the same over its
indices.

**Steps.** A group's measured steps are an interval (:class:`punl.analysis.fits.StepIntervals`):
unlearned at checkpoint k_j = (k_{j-1}, k_j], censored = (K, inf), and never distinguishable =
(-inf, 0], latent steps at or below 0 (a Tobit model: counting them as exactly 0 shrinks sigma
and the intervals). The censoring-aware maximum-likelihood fit
(:func:`punl.analysis.fits.fit_log_censored`) of

    latent steps ~ N(mu(x), sigma^2),   mu(x) = a log(b x)

gives the prediction max(0, mu(x)), and its (1 - gamma) prediction interval is

    mu(x) -+ t_{1-gamma/2, n-3} sqrt(s^2 + grad' Cov grad),   grad = d mu / d(log a, log b),

clipped at 0 as recorded steps are,

with s^2 = sigma^2 n / (n - 3) (the maximum-likelihood sigma is biased low), Cov the inverse
Hessian of the negative log-likelihood in (log a, log b, log sigma) (the delta method;
directions in which the likelihood is flat are left out) and n the number of calibration
groups; the lower end is clipped at 0. Under the attack criterion each end is read
on the run's checkpoints: the first checkpoint at or above it, where a group needing that many
steps is declared unlearned. An upper end above the budget K reads "more than K" (inf).

With ``eps``, a group's response is instead the step at which its fitted curve reaches eps,
log(A / (eps - floor)) / c (:meth:`punl.analysis.fits.DecayFit.steps_to`): at or below 0 when it starts
below eps, censored at K when the step lies beyond the budget or the floor stays above eps;
fitted and predicted the same way, on integer steps.

**Amplitude.** log A = u + v log x + N(0, s^2), least squares over the groups with A > 0 and
x > 0; the interval is exp(u + v log x -+ t_{1-gamma/2, n-2} s sqrt(1 + h(x))), h(x) = 1/n +
(log x - mean log x)^2 / S_xx the leverage.

**Range.** A request is outside the calibrated range when x lies below the smallest or above the
largest calibration group's x (an extrapolation). A request whose size differs from the
calibration groups' size is noted: the attack's power depends on the number of points.

Held-out requests judge these predictions (:mod:`punl.analysis.heldout`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from . import measures, fits
from ..core.config import ConfigError
from .fits import COVERAGE, DecayFit, LogLawFit, PowerLawFit, fit_amplitude, fit_steps
from ..study.groups import group_kind, is_heldout
from ..core.tables import POINT_COLUMNS

AGGREGATES = {"mean": np.mean, "max": np.max, "median": np.median}
#: The per-point scores compared as predictors (besides the run's primary score).
BASELINE_PREDICTORS = ("avg_grad_norm", "el2n", "final_loss")
#: The fewest calibration groups a steps fit takes (it has three parameters).
MIN_GROUPS = 4


class RequestError(ConfigError):
    """A deletion request or a run that cannot be predicted; the message says which and why."""


# ------------------------------------------------------------------------------- the run
@dataclass(frozen=True)
class MeasuredRun:
    """What a prediction reads from a finished run: its scores, ``steps``, ``points`` and
    ``attack`` tables and its settings."""

    scores: pd.DataFrame
    steps: pd.DataFrame
    points: pd.DataFrame
    attack: pd.DataFrame
    primary_score: str
    primary_method: str
    level: float
    training_steps: int

    @classmethod
    def of_study(cls, study) -> "MeasuredRun":
        """From a :class:`punl.analysis.claims.Study`."""
        return cls(study.scores, study.steps, study.tables.points, study.tables.attack,
                   study.primary_score, study.primary_method, study.level, study.training_steps)

    @property
    def checkpoints(self) -> np.ndarray:
        return np.sort(self.attack.step.unique())

    @property
    def budget(self) -> int:
        return int(self.checkpoints.max())

    @property
    def n_train(self) -> int:
        return len(self.scores)

    def predictors(self) -> list[str]:
        """The primary score and the baseline predictors the scores table holds."""
        names = [self.primary_score, *BASELINE_PREDICTORS]
        return [s for s in dict.fromkeys(names) if s in self.scores.columns]


def measured_groups(run: MeasuredRun, method: str, level: float,
                    design: str = "all") -> pd.DataFrame:
    """The ``steps`` rows of every group of ``method`` at ``level`` and ``design``, with
    ``members`` (its training indices, from the ``points`` table) and ``heldout``."""
    rows = measures.select(run.steps, method, level, design, kind=None)
    pts = run.points[(run.points.method == method) & (run.points.step == run.points.step.min())]
    members = {key: np.sort(g["index"].to_numpy())
               for key, g in pts.groupby(["score", "group"], sort=False)}
    rows = rows[[(s, g) in members for s, g in zip(rows.score, rows.group)]]
    return rows.assign(members=[members[(s, g)] for s, g in zip(rows.score, rows.group)],
                       heldout=[is_heldout(group_kind(g)) for g in rows.group]).reset_index(drop=True)


def aggregate(values: np.ndarray, how: str) -> float:
    """mean, max or median of a request's scores."""
    if how not in AGGREGATES:
        raise RequestError(f"--aggregate: {how!r} is unknown; choose one of "
                           f"{', '.join(AGGREGATES)}")
    return float(AGGREGATES[how](np.asarray(values, float)))


def group_values(groups: pd.DataFrame, scores: pd.DataFrame, score: str, how: str) -> np.ndarray:
    """Each group's predictor value: ``how`` of ``score`` over its members."""
    values = scores.set_index("index")[score]
    return np.array([aggregate(values.loc[m].to_numpy(), how) for m in groups.members])


# ------------------------------------------------------------------------------ responses
def step_intervals(groups: pd.DataFrame, checkpoints: np.ndarray) -> fits.StepIntervals:
    """The attack criterion's steps of each group as intervals on the checkpoints, a never
    distinguishable group's as (-inf, 0]: the latent Gaussian steps of the fit at or below 0
    (a Tobit model; counting them as exactly 0 would shrink sigma and the intervals)."""
    return fits.StepIntervals.from_steps(groups.steps_to_unlearn, groups.censored,
                                         groups.status == "never distinguishable", checkpoints)


def divergence_steps(groups: pd.DataFrame, eps: float, budget: int) -> fits.StepIntervals:
    """The step at which each group's fitted excess divergence reaches ``eps``: exact; at or
    below 0 when it starts below eps (as never distinguishable groups); censored at K beyond
    the budget or when the floor stays at or above eps."""
    k = np.array([DecayFit(a, c, f, 0.0).steps_to(eps) for a, c, f in
                  zip(groups.response_amplitude, groups.response_rate, groups.response_floor)])
    late = ~(k <= budget)
    lo = np.where(late, budget, np.where(k <= 0, -np.inf, k))
    return fits.StepIntervals(lo, np.where(late, np.inf, k))


def measured_checkpoint(status: str, steps: float) -> float:
    """A group's measured steps as a checkpoint value: inf when censored."""
    return np.inf if status == "censored" else float(steps)


def on_grid(k: float, grid: np.ndarray | None, budget: int) -> float:
    """The first value of ``grid`` at or above k (the next integer without a grid); inf above
    the budget, 0 at or below 0."""
    if not np.isfinite(k) or k > budget:
        return np.inf
    if k <= 0:
        return 0.0
    if grid is None:
        return float(np.ceil(k - 1e-9))
    return float(grid[np.searchsorted(grid, k - 1e-9)])


# --------------------------------------------------------------------------- predictions
@dataclass(frozen=True)
class Prediction:
    """The predicted cost of one request (steps in the unlearning method's steps; inf: more
    than the budget)."""

    score: str
    aggregate: str
    method: str
    criterion: str
    size: int
    x: float
    steps: float
    steps_low: float
    steps_high: float
    checkpoint: float
    checkpoint_low: float
    checkpoint_high: float
    amplitude: float
    amplitude_low: float
    amplitude_high: float
    budget: int
    training_steps: int
    coverage: float
    outside_range: str        # "", "below" or "above" the calibration groups' x
    calibrated_low: float
    calibrated_high: float
    calibration_size: int
    calibration_groups: int

    def _steps(self, k: float) -> str:
        return f"more than {self.budget}" if not np.isfinite(k) else f"{k:.0f}"

    @property
    def on_checkpoints(self) -> bool:
        """Whether the steps are read on the run's checkpoints (the attack's criterion)."""
        return self.criterion.startswith("attack")

    def notes(self) -> list[str]:
        """The reasons to read this prediction with care."""
        out = []
        if self.outside_range:
            out.append(f"outside the calibrated range: {self.aggregate} {self.score} = "
                       f"{self.x:.4g} lies {self.outside_range} the calibration groups' "
                       f"{self.calibrated_low:.4g} to {self.calibrated_high:.4g}; the "
                       "prediction extrapolates")
        if self.size != self.calibration_size:
            out.append(f"the request has {self.size} points, the calibration groups "
                       f"{self.calibration_size}: the attack's power, and so the steps, depend "
                       "on the number of points")
        return out

    def summary(self) -> str:
        """A few lines a provider reads."""
        within = np.isfinite(self.steps) and self.steps <= self.budget
        share = (f" ({self.steps / self.training_steps:.0%} of the {self.training_steps} "
                 f"training steps)" if self.training_steps and within else "")
        about = f"about {self.steps:.1f}" if within else f"more than {self.budget}"
        lines = [
            f"request of {self.size} points; predictor: {self.aggregate} of {self.score} = "
            f"{self.x:.4g}, fitted on {self.calibration_groups} measured groups",
            f"{self.method}, {self.criterion}: {about} steps{share}"
            + (f", checkpoint {self._steps(self.checkpoint)}" if self.on_checkpoints else "")
            + f"; {self.coverage:.0%} interval {self._steps(self.checkpoint_low)} to "
            f"{self._steps(self.checkpoint_high)} steps (budget K = {self.budget})"]
        if np.isfinite(self.amplitude):
            lines.append(f"response amplitude A = {self.amplitude:.3g}; {self.coverage:.0%} "
                         f"interval {self.amplitude_low:.3g} to {self.amplitude_high:.3g}")
        return "\n".join(lines + [f"note: {n}" for n in self.notes()])

    def as_dict(self) -> dict:
        """The fields and notes, with null for a value that is not finite (an upper end of
        more than the budget, or no amplitude fit), so that it is plain JSON."""
        def plain(v):
            return None if isinstance(v, float) and not np.isfinite(v) else v
        return {**{k: plain(getattr(self, k)) for k in self.__dataclass_fields__},
                "notes": self.notes()}


@dataclass(frozen=True)
class CostModel:
    """A predictor fitted on a run's calibration groups: steps (and amplitude) against x."""

    score: str
    aggregate: str
    method: str
    criterion: str
    steps_fit: LogLawFit
    amplitude_fit: PowerLawFit | None
    grid: np.ndarray | None           # the checkpoints the steps are read on (None: integers)
    budget: int
    training_steps: int
    calibrated_low: float
    calibrated_high: float
    calibration_size: int
    coverage: float = COVERAGE

    def at(self, x: float, size: int | None = None) -> Prediction:
        """The prediction for a request whose predictor value is x."""
        mu = self.steps_fit.mean(x)
        low, high = self.steps_fit.interval(x, self.coverage)
        amp = self.amplitude_fit
        a_low, a_high = amp.interval(x, self.coverage) if amp else (np.nan, np.nan)
        outside = "below" if x < self.calibrated_low else "above" if x > self.calibrated_high \
            else ""
        checkpoint, checkpoint_low, checkpoint_high = (on_grid(k, self.grid, self.budget)
                                                       for k in (mu, low, high))
        return Prediction(
            score=self.score, aggregate=self.aggregate, method=self.method,
            criterion=self.criterion, size=self.calibration_size if size is None else size,
            x=float(x), steps=mu, steps_low=low, steps_high=high, checkpoint=checkpoint,
            checkpoint_low=checkpoint_low, checkpoint_high=checkpoint_high,
            amplitude=amp.mean(x) if amp else np.nan, amplitude_low=a_low,
            amplitude_high=a_high, budget=self.budget, training_steps=self.training_steps,
            coverage=self.coverage, outside_range=outside,
            calibrated_low=self.calibrated_low, calibrated_high=self.calibrated_high,
            calibration_size=self.calibration_size, calibration_groups=self.steps_fit.groups)

    def predict(self, scores: pd.DataFrame, indices) -> Prediction:
        """The prediction for a request: its indices checked (:func:`check_request`)."""
        idx = check_request(indices, len(scores))
        values = scores.set_index("index")[self.score].loc[idx].to_numpy()
        return self.at(aggregate(values, self.aggregate), len(idx))


def fit_cost_model(run: MeasuredRun, score: str | None = None, aggregate: str = "mean",
                   method: str | None = None, level: float | None = None,
                   eps: float | None = None, coverage: float = COVERAGE,
                   groups: pd.DataFrame | None = None) -> CostModel:
    """Fit a predictor on ``run``'s calibration groups of ``method`` (default the run's main
    method) at ``level`` (default the run's): steps at the attack criterion, or until the
    fitted excess divergence reaches ``eps``; and the amplitude."""
    score, method = score or run.primary_score, method or run.primary_method
    level = run.level if level is None else level
    check_choices(run, score, aggregate, method, level, eps, coverage)
    groups = measured_groups(run, method, level) if groups is None else groups
    calib = groups[~groups.heldout]
    if len(calib) < MIN_GROUPS:
        raise RequestError(f"the run has {len(calib)} measured groups of {method} at level "
                           f"{level:g}; a prediction needs at least {MIN_GROUPS}")
    x = group_values(calib, run.scores, score, aggregate)
    if eps is None:
        y, grid, criterion = step_intervals(calib, run.checkpoints), run.checkpoints, \
            f"attack at level {level:g}"
    else:
        y, grid, criterion = divergence_steps(calib, eps, run.budget), None, \
            f"excess divergence down to {eps:g}"
    sizes = [len(m) for m in calib.members]
    return CostModel(score, aggregate, method, criterion, fit_steps(x, y),
                     fit_amplitude(x, calib.response_amplitude.to_numpy()), grid, run.budget,
                     run.training_steps, float(x.min()), float(x.max()),
                     int(np.median(sizes)), coverage)


def check_choices(run: MeasuredRun, score: str, how: str, method: str, level: float,
                  eps: float | None, coverage: float) -> None:
    """Each choice of a prediction names something the run has."""
    check_score(run.scores, score)
    aggregate([0.0], how)
    if method not in set(run.steps.method):
        raise RequestError(f"--method: the run did not unlearn with {method!r}; choose from "
                           f"{sorted(set(run.steps.method))}")
    levels = sorted(set(run.steps.level))
    if not np.isclose(levels, level).any():
        raise RequestError(f"--level: the run's steps are at levels {levels}, not {level:g}")
    if eps is not None and not (np.isfinite(eps) and eps > 0):
        raise RequestError(f"--eps: must be a finite number > 0 (got {eps})")
    check_coverage(coverage)


def check_coverage(coverage: float) -> None:
    """The prediction intervals' coverage lies in (0, 1)."""
    if not 0 < coverage < 1:
        raise RequestError(f"--coverage: must lie in (0, 1) (got {coverage})")


def check_score(scores: pd.DataFrame, score: str) -> None:
    """``score`` names a score column of the run's scores table."""
    if score not in scores.columns or score in POINT_COLUMNS:
        raise RequestError(f"--score: {score!r} is not a score column of the run; choose from "
                           f"{[c for c in scores.columns if c not in POINT_COLUMNS]}")


def check_request(indices, n: int) -> np.ndarray:
    """The request's indices as integers, or one :class:`RequestError` naming the problem: an
    empty request, an index out of range, or an index listed twice."""
    idx = np.asarray(list(indices) if not isinstance(indices, np.ndarray) else indices)
    if idx.size == 0:
        raise RequestError("--indices: the request is empty; give at least one training index")
    if idx.dtype.kind == "f" and np.all(np.isfinite(idx)) and np.all(idx == np.round(idx)):
        idx = idx.astype(np.int64)
    if idx.dtype.kind not in "iu" or idx.ndim != 1:
        raise RequestError("--indices: a request is a list of integer training indices")
    bad = idx[(idx < 0) | (idx >= n)]
    if len(bad):
        raise RequestError(f"--indices: index {bad[0]} is out of range: the run has {n} training "
                           f"points (indices 0 to {n - 1})")
    values, counts = np.unique(idx, return_counts=True)
    if (counts > 1).any():
        i = int(np.argmax(counts > 1))
        raise RequestError(f"--indices: index {values[i]} is listed {counts[i]} times; list each "
                           "point once")
    return idx.astype(np.int64)


def predict(run: MeasuredRun, indices, score: str | None = None, aggregate: str = "mean",
            method: str | None = None, level: float | None = None, eps: float | None = None,
            coverage: float = COVERAGE) -> Prediction:
    """The predicted cost of deleting ``indices`` (module docstring)."""
    check_request(indices, run.n_train)
    return fit_cost_model(run, score, aggregate, method, level, eps, coverage).predict(
        run.scores, indices)


def calibration_points(run: MeasuredRun, score: str, how: str, method: str | None = None,
                       level: float | None = None, groups: pd.DataFrame | None = None
                       ) -> pd.DataFrame:
    """Each calibration group's predictor value ``x`` beside its status and steps (``groups``:
    :func:`measured_groups` of the method and level, when the caller has them)."""
    if groups is None:
        groups = measured_groups(run, method or run.primary_method,
                                 run.level if level is None else level)
    calib = groups[~groups.heldout]
    return calib[["score", "group", "kind", "status", "steps_to_unlearn", "censored",
                  "response_amplitude"]].assign(
        aggregation=how, x=group_values(calib, run.scores, score, how)).reset_index(drop=True)


def example_request(run: MeasuredRun, method: str | None = None,
                    groups: pd.DataFrame | None = None) -> pd.Series:
    """A worked example: the held-out mixed request with the highest mean primary score (the
    most hard points among easy ones); else another held-out request; else a calibration
    group. Its ``steps`` row with ``members`` (``groups``: :func:`measured_groups` of the method
    at the run's level, when the caller has them)."""
    if groups is None:
        groups = measured_groups(run, method or run.primary_method, run.level)
    for pool in (groups[groups.kind == "heldout_mixed"], groups[groups.heldout], groups):
        if len(pool):
            means = group_values(pool, run.scores, run.primary_score, "mean")
            return pool.iloc[int(np.argmax(means))]
    raise RequestError("the run has no measured groups")


def prediction_curve(model: CostModel, low: float, high: float, n: int = 120) -> pd.DataFrame:
    """The prediction and its interval on a log grid of x in [low, high]."""
    rows = []
    for x in np.geomspace(max(low, 1e-12), max(high, low * 1.0001, 1e-12), n):
        p = model.at(x)
        rows.append({"aggregation": model.aggregate, "x": x, "steps": p.steps,
                     "steps_low": p.steps_low, "steps_high": p.steps_high,
                     "amplitude": p.amplitude, "amplitude_low": p.amplitude_low,
                     "amplitude_high": p.amplitude_high})
    return pd.DataFrame(rows)
