"""The stages in order, each reusing its artifacts when they exist and are complete.

    config -> data -> train (ledger.npz, models.pt) -> score (scores.parquet) -> unlearn (tables)
           -> publish (the run's tables and claims in its output folder)
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import torch

from .config import Config, ConfigError
from .data import Dataset, load_dataset
from .ledger import Ledger
from .pergrad import Params
from .recipe import resolve_device
from .store import ArtifactStore, CorruptArtifact, StageDir
from .tables import CLAIMS, UnlearnTables


def run_folder(config: Config, out_dir: str | Path | None = None) -> Path:
    """Where a run's tables and artifacts go: ``out_dir``, or ``runs/<config.name>``."""
    return Path(out_dir) if out_dir else Path("runs") / config.name


def apply_runtime(config: Config) -> None:
    """Process-wide settings of ``config`` that do not change results' meaning (CPU threads)."""
    torch.set_num_threads(config.num_threads)


def load_data(config: Config) -> Dataset:
    """The dataset of ``config``, split, standardised, with its label noise applied, on the
    configuration's device."""
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, seed=config.data_seed, test_fraction=config.test_fraction,
                        label_noise=config.label_noise, data_root=config.data_root,
                        n_train=config.n_train, synthetic_outliers=config.synthetic_outliers)
    return data if device == "cpu" else data.to(device)


def check_feasible(config: Config, data: Dataset) -> None:
    """Checks that need the data's size, made before any training."""
    if config.batch_size > data.n_train:
        raise ConfigError(f"batch_size: {config.batch_size} exceeds the {data.n_train} "
                          f"training points (q = B / N must be <= 1)")


class TrainingSnapshots:
    """The training population's last snapshot, ``snapshot.pt`` in the training stage folder, so
    that a training stage interrupted midway resumes from it (with the same result)."""

    NAME = "snapshot.pt"

    def __init__(self, sd: StageDir):
        self.sd = sd

    def load(self) -> dict | None:
        if not self.sd.file(self.NAME).exists():
            return None
        try:
            return self.sd.load_torch(self.NAME)
        except CorruptArtifact as err:
            warnings.warn(f"train: snapshot unreadable ({err}); training from the start",
                          stacklevel=2)
            return None

    def save(self, state: dict) -> None:
        self.sd.save_torch(self.NAME, state)

    def clear(self) -> None:
        self.sd.file(self.NAME).unlink(missing_ok=True)


@dataclass(frozen=True)
class TrainedRuns:
    """The training stage's artifacts: initial and final parameters per run, and the ledger."""

    dir: StageDir
    init: list[Params]
    final: list[Params]
    ledger: Ledger

    @classmethod
    def load(cls, sd: StageDir) -> "TrainedRuns":
        models = sd.load_torch("models.pt")
        return cls(sd, models["init"], models["final"], Ledger.from_arrays(sd.load_npz("ledger.npz")))


def ensure_trained(config: Config, store: ArtifactStore, data: Dataset | None = None,
                   progress: bool = True) -> TrainedRuns:
    """Train the R runs of ``config`` unless a complete training artifact already exists."""
    apply_runtime(config)
    from .train import train
    sd = store.stage(config, "train")
    if sd.is_complete():  # every file present with its recorded SHA-256
        return TrainedRuns.load(sd)
    data = load_data(config) if data is None else data
    check_feasible(config, data)
    with store.producing(config, "train") as out:
        snapshots = TrainingSnapshots(out)
        runs, ledger = train(config, data, progress=progress, snapshots=snapshots)
        out.save_bytes("ledger.npz", ledger.to_bytes())
        out.save_torch("models.pt", {"init": [r.init for r in runs],
                                     "final": [r.final for r in runs]})
        snapshots.clear()
    return TrainedRuns.load(sd)


def ensure_scored(config: Config, store: ArtifactStore, data: Dataset | None = None,
                  progress: bool = True) -> pd.DataFrame:
    """The scores table of ``config`` (``scores.parquet``), training first when needed."""
    apply_runtime(config)
    from .scores import score_table
    sd = store.stage(config, "score")
    if sd.is_complete():
        return sd.load_parquet("scores.parquet")
    data = load_data(config) if data is None else data
    trained = ensure_trained(config, store, data, progress)
    with store.producing(config, "score") as out:
        out.save_parquet("scores.parquet", score_table(config, data, trained.ledger, trained.final))
    return sd.load_parquet("scores.parquet")


class GroupCache:
    """Each finished forget group's tables under ``groups/`` of the unlearning stage folder, so
    that a run interrupted midway resumes from the groups it had finished (files are written
    atomically: one that exists is whole)."""

    def __init__(self, sd: StageDir):
        self.sd = sd

    def _name(self, group, table: str) -> str:
        return f"groups/{group.score}__{group.label}__{table}.parquet"

    def load(self, group) -> UnlearnTables | None:
        names = {t: self._name(group, t) for t in UnlearnTables.SPECS}
        if not all(self.sd.file(n).exists() for n in names.values()):
            return None
        try:
            return UnlearnTables(**{t: self.sd.load_parquet(n) for t, n in names.items()})
        except (OSError, ValueError) as err:
            warnings.warn(f"unlearn: cached group {group.score}/{group.label} unreadable ({err}); "
                          "recomputing", stacklevel=2)
            return None

    def save(self, group, tables: UnlearnTables) -> None:
        for t, frame in tables.items():
            self.sd.save_parquet(self._name(group, t), frame)


def load_unlearned(sd: StageDir) -> UnlearnTables:
    return UnlearnTables(**{t: sd.load_parquet(spec.filename)
                            for t, spec in UnlearnTables.SPECS.items()})


def ensure_unlearned(config: Config, store: ArtifactStore, data: Dataset | None = None,
                     progress: bool = True) -> UnlearnTables:
    """The unlearning tables of ``config``, computing training and scores first when needed."""
    apply_runtime(config)
    from .unlearn import run_unlearning
    sd = store.stage(config, "unlearn")
    if sd.is_complete():
        return load_unlearned(sd)
    data = load_data(config) if data is None else data
    scores = ensure_scored(config, store, data, progress)
    trained = ensure_trained(config, store, data, progress)
    with store.producing(config, "unlearn") as out:
        tables = run_unlearning(config, data, trained.final, scores, progress, GroupCache(out))
        for t, frame in tables.items():
            out.save_parquet(UnlearnTables.SPECS[t].filename, frame)
    return tables


def study(config: Config, tables: UnlearnTables, scores: pd.DataFrame, n_train: int):
    """What the claims read: the tables, the derived ``steps`` table and the settings."""
    from .analysis import group_steps
    from .claims import Study
    from .recipe import total_steps
    return Study(tables, group_steps(tables), scores, config.primary_score,
                 config.primary_method, tuple(config.methods), tuple(config.baseline_scores),
                 config.unlearn_steps, total_steps(config, n_train), config.level, config.seed)


def claims(study_) -> pd.DataFrame:
    """The claims table of a run (see :func:`punl.claims.claims_table`)."""
    from .claims import claims_table
    return CLAIMS.check(claims_table(study_))


def publish(config: Config, store: ArtifactStore, out_dir: str | Path,
            progress: bool = True) -> dict[str, Path]:
    """Compute every stage (reusing what exists) and write the run's published tables into
    ``out_dir``: ``scores``, the unlearning tables, ``steps`` and ``claims``. Returns their
    paths."""
    from .store import atomic_write_parquet
    out = Path(out_dir)
    data = load_data(config)
    tables = ensure_unlearned(config, store, data, progress)
    scores = ensure_scored(config, store, data, progress)
    s = study(config, tables, scores, data.n_train)
    frames = {"scores": scores, **dict(tables.items()), "steps": s.steps, "claims": claims(s)}
    paths = {}
    for name, frame in frames.items():
        paths[name] = out / f"{name}.parquet"
        atomic_write_parquet(paths[name], frame)
    return paths
