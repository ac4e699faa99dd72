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


def privacy_column(alpha: float) -> str:
    """``privacy_loss_a8`` for alpha = 8: the per-instance privacy loss column at that order."""
    return f"privacy_loss_a{alpha:g}"


def score_columns_for(orders, shadow_models: int) -> tuple[str, ...]:
    """The difficulty-score columns a scoring stage with these settings produces."""
    return (*(privacy_column(a) for a in orders), "epsilon", *METRIC_COLUMNS,
            *(SHADOW_COLUMNS if shadow_models else ()))


def scores_spec(orders, shadow_models: int) -> TableSpec:
    """``scores``: one row per training point, its privacy losses and baseline metrics."""
    return TableSpec("scores", (*POINT_COLUMNS, *score_columns_for(orders, shadow_models)),
                     "one training point")


# --------------------------------------------------------------------------------- unlearning
UNLEARNING = TableSpec("unlearning", (
    "score", "group", "method", "model", "seed", "step", "forget_acc", "retain_acc", "test_acc",
    "mia_acc", "mia_ci_low", "mia_ci_high", "mia_null"),
    "one model (unlearned or age-matched retrained) of one group and method at one checkpoint, "
    "with the group attack at that checkpoint")
STEPS = TableSpec("steps", (
    "score", "group", "method", "group_score_median", "group_size", "steps_to_unlearn",
    "censored", "mia_acc_step0", "mia_null_step0", "mean_mia_acc", "mean_mia_ci_halfwidth"),
    "one forget group and method: its steps to unlearn at the group level")
STEPS_POINTS = TableSpec("steps_points", (
    "index", "score", "group", "method", "steps_to_unlearn", "censored",
    "distinguishability_step0", "distinguishability_final"),
    "one point of one forget group and method: its steps to unlearn at the example level")
BARRIERS = TableSpec("barriers", (
    "score", "group", "method", "pair", "partner", "step", "barrier", "loss_gap", "distance",
    "lambda", "loss"),
    "one point of the linear path between an unlearned (or original) model and a retrained one")
CLAIMS = TableSpec("claims", ("claim", "measure", "value", "verdict"),
                   "one claim of the study, the number that tests it and the verdict")


@dataclass(frozen=True)
class UnlearnTables:
    """The four tables of the unlearning stage (see their specs above)."""

    unlearning: pd.DataFrame
    steps: pd.DataFrame
    steps_points: pd.DataFrame
    barriers: pd.DataFrame

    SPECS = {"unlearning": UNLEARNING, "steps": STEPS, "steps_points": STEPS_POINTS,
             "barriers": BARRIERS}

    def __post_init__(self):
        for name, spec in self.SPECS.items():
            spec.check(getattr(self, name))

    def items(self) -> Iterator[tuple[str, pd.DataFrame]]:
        for f in fields(self):
            yield f.name, getattr(self, f.name)

    @classmethod
    def concat(cls, parts: list["UnlearnTables"]) -> "UnlearnTables":
        """The tables of several groups, one after the other."""
        return cls(**{name: pd.concat([getattr(p, name) for p in parts], ignore_index=True)
                      for name in cls.SPECS})
