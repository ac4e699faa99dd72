"""The tables punl publishes: one definition of each table's name and columns.

Every table is a pandas DataFrame written as ``<name>.parquet``. :class:`TableSpec` names its
columns (in order) and says what one row is; :func:`TableSpec.check` rejects a frame whose
columns differ. :class:`UnlearnTables` is the named bundle the unlearning stage produces.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Iterator

import pandas as pd


@dataclass(frozen=True)
class TableSpec:
    """A published table: its file stem, its columns in order, and what one row is."""

    name: str
    columns: tuple[str, ...]
    row: str

    @property
    def filename(self) -> str:
        return f"{self.name}.parquet"

    def check(self, frame: pd.DataFrame) -> pd.DataFrame:
        """``frame`` itself when its columns are exactly ``columns`` (in order), else ValueError."""
        if tuple(frame.columns) != self.columns:
            raise ValueError(f"table {self.name}: columns {list(frame.columns)} differ from "
                             f"{list(self.columns)}")
        return frame

    def frame(self, rows: list[dict]) -> pd.DataFrame:
        """A checked frame from row dicts (an empty list gives an empty frame with the columns)."""
        return self.check(pd.DataFrame(rows, columns=list(self.columns)))


# ------------------------------------------------------------------------------------ scores
METRIC_COLUMNS = ("avg_grad_norm", "avg_grad_norm_unclipped", "final_loss", "confidence", "el2n")
SHADOW_COLUMNS = ("memorisation", "lira_score")
POINT_COLUMNS = ("index", "label", "true_label", "flipped")


#: The per-instance privacy loss columns are this prefix and the order alpha.
PRIVACY_PREFIX = "privacy_loss_a"


def privacy_column(alpha: float) -> str:
    """``privacy_loss_a8`` for alpha = 8: the per-instance privacy loss column at that order."""
    return f"{PRIVACY_PREFIX}{alpha:g}"


def privacy_order(column: str) -> float | None:
    """The order alpha of a privacy loss column (8.0 for ``privacy_loss_a8``), else None."""
    if not column.startswith(PRIVACY_PREFIX):
        return None
    try:
        return float(column.removeprefix(PRIVACY_PREFIX))
    except ValueError:
        return None


def privacy_columns(columns) -> list[str]:
    """The privacy loss columns among ``columns``, in their order."""
    return [c for c in columns if privacy_order(c) is not None]


def score_columns_for(orders, shadow_models: int) -> tuple[str, ...]:
    """The difficulty-score columns a scoring stage with these settings produces."""
    return (*(privacy_column(a) for a in orders), "epsilon", *METRIC_COLUMNS,
            *(SHADOW_COLUMNS if shadow_models else ()))


def scores_spec(orders, shadow_models: int) -> TableSpec:
    """``scores``: one row per training point, its privacy losses and baseline metrics."""
    return TableSpec("scores", (*POINT_COLUMNS, *score_columns_for(orders, shadow_models)),
                     "one training point")


# --------------------------------------------------------------------------------- unlearning
GROUPS = TableSpec("groups", (
    "score", "group", "kind", "group_size", "group_score_median", "flipped", "classes",
    "largest_class_share"),
    "one forget group: how it was cut (kind: quantile, top, bottom, random, disagreement, or a "
    "held-out request: heldout_random, heldout_mixed, heldout_class), its median score and its "
    "composition")
UNLEARNING = TableSpec("unlearning", (
    "score", "group", "method", "model", "seed", "step", "forget_acc", "retain_acc", "test_acc"),
    "one model (unlearned, independent retrained or coupled retrained) of one group and method "
    "at one checkpoint: its accuracies")
ATTACK = TableSpec("attack", (
    "score", "group", "method", "design", "step", "n_unlearned", "n_reference", "mia_acc",
    "mia_ci_low", "mia_ci_high", "null_mean", "null_q95", "p_value", "adjusted_p", "divergence",
    "divergence_null_mean", "divergence_null_q95"),
    "the group attack of one group and method at one checkpoint, at one design (all models, or "
    "half of each kind), with its permutation null, its p-value adjusted over checkpoints, and "
    "the mean Gaussian-fit KL divergence with its null")
POINTS = TableSpec("points", (
    "index", "score", "group", "method", "step", "flipped", "welch_p", "kl"),
    "one point of one group and method at one checkpoint: Welch's p-value and the Gaussian-fit "
    "KL divergence between its phi under unlearned and reference retrained models")
POINT_NULL = TableSpec("point_null", (
    "score", "group", "method", "level", "step0_fraction", "censored_fraction"),
    "one group and method at one level: the share of its points at step 0 and censored that the "
    "per-point criterion gives under relabelled models (the floor of the per-point fractions)")
BARRIERS = TableSpec("barriers", (
    "score", "group", "method", "partner", "pair", "step", "subset", "barrier", "loss_gap",
    "distance"),
    "one pair (unlearned model, retrained partner) of one group and method at one checkpoint, on "
    "one subset (forget or class-matched control points, clean or flipped)")
BARRIER_POINTS = TableSpec("barrier_points", (
    "score", "group", "method", "partner", "pair", "subset", "slot", "lambda", "loss"),
    "one point (by its slot in the subset: forget point j and its class-matched control share "
    "slot j) on the path of one pair (unlearned model, retrained partner) of one group at step 0, "
    "primary method, at one lambda: its loss (claim 4's bootstrap over points)")
PATHS = TableSpec("paths", (
    "score", "group", "method", "partner", "step", "subset", "lambda", "loss"),
    "the loss along the linear path at one lambda, averaged over the pairs, at the first and last "
    "checkpoint")
STEPS = TableSpec("steps", (
    "score", "group", "kind", "method", "level", "design", "group_score_median", "status",
    "steps_to_unlearn", "censored", "mia_acc_step0", "adjusted_p_step0", "response_amplitude",
    "response_rate", "response_floor", "steps_to_null_q95"),
    "one group and method at one level and design: its status (never distinguishable, "
    "unlearned, censored), its steps to unlearn, and the fit D(k) = A exp(-c k) + floor of its "
    "divergence response")
CLAIMS = TableSpec("claims", ("id", "claim", "measure", "number", "value", "interval", "verdict",
                              "power", "neighbours", "fragile"),
                   "one claim of the study (``id``: ``2b``, or ``5 (finetune)`` for a claim "
                   "about one method): the number that tests it (``number``, and in words "
                   "with its context, ``value``), its interval, the verdict, its power at the "
                   "effect measured (NaN where no power model applies), the verdicts under "
                   "neighbouring analysis choices and whether any differs")

# --------------------------------------------------------------------------------- per point
POINT_TESTS = TableSpec("point_tests", (
    "set", "index", "method", "design", "step", "models", "mean_unlearned", "mean_retrained",
    "sd_unlearned", "sd_retrained", "t", "p_value", "effect", "kl"),
    "one point (set: train, or placebo for a test point never trained on) at one checkpoint of "
    "the per-point study, at one design (all models, or half): the models per side that tested "
    "it, the mean and sd of its phi under the unlearned and under the retrained models, Welch's "
    "t and two-sided p-value, the effect d (mean difference over the pooled sd) and the "
    "Gaussian-fit KL divergence")
POINT_UTILITY = TableSpec("point_utility", (
    "method", "model", "j", "step", "forget_acc", "retain_acc", "test_acc"),
    "one model of the per-point study (unlearned, or its retrained reference) at one checkpoint: "
    "its accuracy on its own forget set, its retain set and the test set")
POINT_STEPS = TableSpec("point_steps", (
    "set", "index", "method", "level", "design", "models", "status", "steps_to_unlearn",
    "censored", "p_step0", "adjusted_p_step0", "min_adjusted_p", "effect_step0", "kl_step0"),
    "one point of the per-point study at one level and design: its status (never "
    "distinguishable, unlearned, censored) and steps to unlearn under Welch's test with Bonferroni's "
    "adjustment over the checkpoints, its step-0 p-values and effect, and its smallest adjusted "
    "p-value over the checkpoints")

POINT_PREDICTIONS = TableSpec("point_predictions", (
    "predictor", "index", "predicted_steps", "steps_low", "steps_high", "measured_steps",
    "censored", "covered", "error"),
    "one held-out training point and one predictor (a score's fitted law, or a constant): the "
    "predicted steps with their 90% interval, the steps the point recorded (censored counted at "
    "K), whether the interval covers them and the absolute error")
POINT_PREDICTION_VALIDATION = TableSpec("point_prediction_validation", (
    "predictor", "points", "mae", "coverage", "width", "spearman"),
    "one predictor over the held-out points: mean absolute error in steps, coverage and mean "
    "width of its 90% intervals, Spearman's rho of predicted with recorded steps")

# --------------------------------------------------------------------------------- prediction
HELDOUT_PREDICTIONS = TableSpec("heldout_predictions", (
    "score", "aggregation", "group", "kind", "group_size", "x", "outside_range", "predicted_steps",
    "steps_low", "steps_high", "predicted_checkpoint", "checkpoint_low", "checkpoint_high",
    "status", "measured_steps", "censored", "steps_covered", "steps_error",
    "predicted_amplitude", "amplitude_low", "amplitude_high", "measured_amplitude",
    "amplitude_covered"),
    "one held-out request and one predictor (score and aggregate, fitted on the other groups): "
    "the predicted steps and amplitude with their intervals (checkpoint_high inf: more than the "
    "budget), what the request measured, and whether the intervals cover it")
PREDICTION_VALIDATION = TableSpec("prediction_validation", (
    "score", "aggregation", "requests", "n_requests", "steps_spearman", "steps_spearman_p",
    "steps_coverage", "steps_width", "steps_mae", "censored", "outside_range", "amplitude_spearman",
    "amplitude_coverage", "amplitude_requests"),
    "one predictor over the held-out requests (requests: all, or one kind): Spearman's rho of "
    "predicted and measured steps and amplitude, the coverage of the prediction intervals, their "
    "mean width within the budget and the mean absolute error in steps (censored values counted "
    "at the budget)")
ADAPTIVE = TableSpec("adaptive", (
    "score", "aggregation", "group", "kind", "first_look", "looks", "steps_used", "passed",
    "measured_steps", "censored", "success"),
    "one held-out request and one predictor: the adaptive rule on the recorded checkpoints (first "
    "look at the predicted steps plus a margin, then doubling), where it stopped and whether the "
    "request was unlearned there")


@dataclass(frozen=True)
class UnlearnTables:
    """The tables of the unlearning stage (see their specs above)."""

    groups: pd.DataFrame
    unlearning: pd.DataFrame
    attack: pd.DataFrame
    points: pd.DataFrame
    point_null: pd.DataFrame
    barriers: pd.DataFrame
    paths: pd.DataFrame
    barrier_points: pd.DataFrame

    SPECS = {"groups": GROUPS, "unlearning": UNLEARNING, "attack": ATTACK, "points": POINTS,
             "point_null": POINT_NULL, "barriers": BARRIERS, "paths": PATHS,
             "barrier_points": BARRIER_POINTS}

    def __post_init__(self):
        for name, spec in self.SPECS.items():
            spec.check(getattr(self, name))

    def items(self) -> Iterator[tuple[str, pd.DataFrame]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)

    @classmethod
    def concat(cls, parts: list["UnlearnTables"]) -> "UnlearnTables":
        """The tables of several groups, one after the other. Empty parts (a method without
        barrier points, say) are left out, so that their untyped columns never turn the
        others' into ``object``: the tables a stage computes have the dtypes of the tables it
        saves and reads back."""
        def joined(frames: list[pd.DataFrame]) -> pd.DataFrame:
            return pd.concat([f for f in frames if len(f)] or frames[:1], ignore_index=True)
        return cls(**{name: joined([getattr(p, name) for p in parts]) for name in cls.SPECS})
