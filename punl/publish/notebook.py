"""What a chapter notebook needs, in one call: the run's configuration, data, scores and tables.

Each notebook's second cell is ``run = open_run(config, overrides, out_dir)``. Stages are loaded
(or computed, when a notebook is run on its own) on first use, so the training chapter never
triggers unlearning. :func:`note` states in prose what a chapter shows or why something is
missing, and :func:`glue_all` hands a chapter's findings to its closing paragraph (myst-nb's
``{glue:text}`` role). Tables are shown by :func:`punl.publish.reading.table`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from ..core.config import Config, ConfigError, load_config
from ..engine.data import Dataset
from ..stages.pipeline import (TrainedRuns, claims, ensure_pointwise, ensure_scored, ensure_trained,
                               ensure_unlearned, load_data, run_folder, study)
from ..core.store import ArtifactStore
from ..core.tables import UnlearnTables
from .markdown import claim_anchor


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


def note(*paragraphs: str) -> None:
    """Paragraphs of prose in the page (Markdown), where a chapter states what it is about to
    show or why something is missing: never raw printed output."""
    from IPython.display import Markdown, display
    display(Markdown("\n\n".join(paragraphs)))


def _escape(text: str) -> str:
    return str(text).replace("*", "\\*").replace("_", "\\_")


def _number_text(number, fmt) -> str:
    """The claim's number as the page prints it, or "none measured" where the run has none."""
    try:
        missing = number is None or not np.isfinite(float(number))
    except (TypeError, ValueError):
        missing = False
    return "none measured" if missing else fmt(number)


def claims_markdown(claims: pd.DataFrame) -> str:
    """Every claim of a claims table as a short markdown block: the claim and its verdict, then
    what measures it, the number with its context, the interval and the verdicts under the
    neighbouring analysis choices. Each block starts with an anchor (:func:`claim_anchor`)
    where the table has claim ids."""
    from ..analysis.measures import fmt
    blocks = []
    for row in claims.itertuples():
        fragile = " (fragile: a neighbouring choice changes it)" if row.fragile else ""
        anchor = (f'<span id="{claim_anchor(row.id)}"></span>'
                  if "id" in claims.columns else "")
        blocks.append(
            f"{anchor}**{_escape(row.claim)}**: *{row.verdict}*{fragile}\n\n"
            f"- measure: {_escape(row.measure)}\n"
            f"- number: {_number_text(row.number, fmt)}; {_escape(row.value)}\n"
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
    folder = run_folder(cfg, out_dir, load_config(config))
    check_same_run(cfg, folder)
    set_style()
    return RunView(cfg, folder)


def check_same_run(config: Config, folder: Path) -> None:
    """Refuse to open ``folder`` for ``config`` when it holds a published run of other
    settings (a notebook re-run by hand without the run's overrides would otherwise compute
    another configuration into it): ConfigError naming the fields that differ and the
    overrides to pass. The settings of a run in progress (its staging record, trusted only
    while a run holds the folder's lock) count as the folder's too."""
    from ..core.config import RUNTIME, STAGES, stage_fields
    from ..core.outputs import RUN_RECORD, STAGING, lock_in_use, published_record
    staged = None
    if lock_in_use(folder):      # a run in progress (punl run) records its settings here first
        try:
            staged = json.loads((Path(folder) / STAGING / RUN_RECORD).read_text())
        except (OSError, ValueError):
            staged = None
    keys = {s: config.stage_key(s) for s in STAGES}
    records = [r for r in (staged, published_record(folder))
               if isinstance(r, dict) and isinstance(r.get("config"), dict)]
    analysis = config.analysis_settings()          # in no stage key
    if not records or any(r.get("stage_keys") == keys and all(
            r["config"].get(n, v) == v for n, v in analysis.items()) for r in records):
        return
    record, given = records[-1], config.to_dict()
    runtime = set(stage_fields(RUNTIME))
    differ = sorted(k for k, v in record["config"].items()
                    if k in given and k not in runtime and given[k] != v)
    if not differ:               # the same settings, stored by another version of punl
        return
    plan = record.get("plan") if isinstance(record.get("plan"), dict) else {}
    wanted = plan.get("overrides") if isinstance(plan.get("overrides"), list) else [
        f"{k}={json.dumps(record['config'][k])}" for k in differ]
    raise ConfigError(f"out_dir: {folder} holds a run of other settings ({', '.join(differ)} "
                      f"differ); open it with its overrides, e.g. papermill -y "
                      f"'overrides: {json.dumps(wanted)}'")
