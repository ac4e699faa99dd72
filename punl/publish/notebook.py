"""What a chapter notebook needs, in one call: the run's configuration, data, scores and tables.

Each notebook's second cell is ``run = open_run(config, overrides, out_dir)``. Stages are loaded
(or computed, when a notebook is run on its own) on first use, so the training chapter never
triggers unlearning. :func:`table` shows a table rounded for reading and :func:`glue_all`
hands a chapter's findings to its closing paragraph (myst-nb's ``{glue:text}`` role).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from ..core.config import Config, load_config
from ..engine.data import Dataset
from ..stages.pipeline import (TrainedRuns, claims, ensure_pointwise, ensure_scored, ensure_trained,
                               ensure_unlearned, load_data, run_folder, study)
from ..core.store import ArtifactStore
from ..core.tables import UnlearnTables


@dataclass
class RunView:
    """One configuration's run, its stages loaded lazily from the artifact store."""

    config: Config
    out_dir: Path

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.out_dir / "artifacts")

    @property
    def primary_score(self) -> str:
        return self.config.primary_score

    @property
    def primary_method(self) -> str:
        return self.config.primary_method

    @cached_property
    def data(self) -> Dataset:
        return load_data(self.config)

    @cached_property
    def trained(self) -> TrainedRuns:
        return ensure_trained(self.config, self.store, self.data, progress=False)

    @cached_property
    def scores(self) -> pd.DataFrame:
        return ensure_scored(self.config, self.store, self.data, progress=False)

    @cached_property
    def tables(self) -> UnlearnTables:
        return ensure_unlearned(self.config, self.store, self.data, progress=False)

    @cached_property
    def point_tables(self) -> dict[str, pd.DataFrame]:
        """The per-point study's ``point_tests`` and ``point_utility`` (empty without one)."""
        return ensure_pointwise(self.config, self.store, self.data, progress=False)

    @cached_property
    def study(self):
        """The tables, the derived ``steps`` and ``point_steps`` tables and the settings the
        claims read."""
        from ..analysis.pointclaims import point_steps
        return study(self.config, self.tables, self.scores, self.data.n_train,
                     point_steps(self.point_tables["point_tests"]))

    @property
    def steps(self) -> pd.DataFrame:
        return self.study.steps

    @cached_property
    def claims(self) -> pd.DataFrame:
        """The run's claims table, as the run computed and published it."""
        return claims(self.study, self.config, self.store)

    @cached_property
    def measured(self):
        """What a prediction reads (:class:`punl.analysis.predict.MeasuredRun`)."""
        from ..analysis.predict import MeasuredRun
        return MeasuredRun.of_study(self.study)

    @cached_property
    def point_predictions(self) -> dict[str, pd.DataFrame]:
        """The held-out points' predictions by every score and constant, and their validation."""
        from ..analysis.pointpredict import point_prediction_tables
        return point_prediction_tables(self.study)

    @cached_property
    def predictions(self) -> dict[str, pd.DataFrame]:
        """The held-out requests' predictions, their validation and the adaptive rule."""
        from ..analysis.heldout import prediction_tables
        return prediction_tables(self.measured)


def table(frame: pd.DataFrame, digits: int = 3, index: bool = False, **names: str):
    """``frame`` for reading: numbers through :func:`punl.analysis.measures.fmt` (``digits``
    significant digits), the index hidden unless ``index``, columns renamed by ``names``
    (``steps_to_unlearn="steps to unlearn"``)."""
    from ..analysis.measures import fmt
    frame = frame.rename(columns=names)
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
               and not pd.api.types.is_bool_dtype(frame[c])]
    styled = frame.style.format(lambda v: fmt(v, digits), subset=numeric)
    if not index:
        styled = styled.hide(axis="index")
    else:
        styled = styled.format_index(lambda v: fmt(v, digits))
    return styled


def note(*paragraphs: str) -> None:
    """Paragraphs of prose in the page (Markdown), where a chapter states what it is about to
    show or why something is missing: never raw printed output."""
    from IPython.display import Markdown, display
    display(Markdown("\n\n".join(paragraphs)))


def _escape(text: str) -> str:
    return str(text).replace("*", "\\*").replace("_", "\\_")


def claims_markdown(claims: pd.DataFrame) -> str:
    """Every claim of a claims table as a short markdown block: the claim and its verdict, then
    what measures it, the number with its context, the interval and the verdicts under the
    neighbouring analysis choices."""
    from ..analysis.measures import fmt
    blocks = []
    for row in claims.itertuples():
        fragile = " (fragile: a neighbouring choice changes it)" if row.fragile else ""
        blocks.append(
            f"**{_escape(row.claim)}**: *{row.verdict}*{fragile}\n\n"
            f"- measure: {_escape(row.measure)}\n"
            f"- number: {fmt(row.number)}; {_escape(row.value)}\n"
            f"- interval and context: {_escape(row.interval) or 'none'}\n"
            f"- verdicts under neighbouring choices: {_escape(row.neighbours) or 'none'}\n")
    return "\n".join(blocks)


def glue_all(findings: dict[str, str]) -> dict[str, str]:
    """Glue every finding under its name without showing it, for the ``{glue:text}`` roles of
    the notebook's closing paragraph; returns ``findings``."""
    from myst_nb import glue
    for name, text in findings.items():
        glue(name, str(text), display=False)
    return findings


def open_run(config: str, overrides: list[str] | None = None,
             out_dir: str | None = None) -> RunView:
    """Validate the configuration and set the book's plotting style; nothing is computed yet."""
    from .plots import set_style
    cfg = load_config(config, overrides)
    set_style()
    return RunView(cfg, run_folder(cfg, out_dir, load_config(config)))
