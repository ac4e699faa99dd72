"""What a chapter notebook needs, in one call: the run's configuration, data, scores and tables.

Each notebook's second cell is ``run = open_run(config, overrides, out_dir)``. Stages are loaded
(or computed, when a notebook is run on its own) on first use, so the training chapter never
triggers unlearning.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import pandas as pd

from .config import Config, load_config
from .data import Dataset
from .pipeline import (TrainedRuns, claims, ensure_scored, ensure_trained, ensure_unlearned,
                       load_data, predictions, run_folder, study)
from .store import ArtifactStore
from .tables import UnlearnTables


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
    def study(self):
        """The tables, the derived ``steps`` table and the settings the claims read."""
        return study(self.config, self.tables, self.scores, self.data.n_train)

    @property
    def steps(self) -> pd.DataFrame:
        return self.study.steps

    @cached_property
    def claims(self) -> pd.DataFrame:
        return claims(self.study)

    @cached_property
    def measured(self):
        """What a prediction reads (:class:`punl.predict.MeasuredRun`)."""
        from .predict import MeasuredRun
        return MeasuredRun.of_study(self.study)

    @cached_property
    def predictions(self) -> dict[str, pd.DataFrame]:
        """The held-out requests' predictions, their validation and the adaptive rule."""
        return predictions(self.study)


def open_run(config: str, overrides: list[str] | None = None,
             out_dir: str | None = None) -> RunView:
    """Validate the configuration and set the book's plotting style; nothing is computed yet."""
    from .plots import set_style
    cfg = load_config(config, overrides)
    set_style()
    return RunView(cfg, run_folder(cfg, out_dir, load_config(config)))
