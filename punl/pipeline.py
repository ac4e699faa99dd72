"""The stages in order, each reusing its artifacts when they exist and are complete.

    config -> data -> train (ledger.npz, models.pt) -> score (scores.parquet) -> unlearn (tables)
"""
from __future__ import annotations

import warnings

import numpy as np
import torch

from .config import Config
from .data import Dataset, load_dataset
from .store import ArtifactStore, CorruptArtifact, StageDir


def apply_runtime(config: Config) -> None:
    """Process-wide settings of ``config`` that do not change results' meaning (CPU threads)."""
    torch.set_num_threads(config.num_threads)


def load_data(config: Config) -> Dataset:
    """The dataset of ``config``, split, standardised, with its label noise applied, on the
    configuration's device."""
    from .config import resolve_device
    device = resolve_device(config.device)
    data = load_dataset(config.dataset, seed=config.data_seed, test_fraction=config.test_fraction,
                        label_noise=config.label_noise, data_root=config.data_root,
                        n_train=config.n_train, synthetic_outliers=config.synthetic_outliers)
    return data if device == "cpu" else data.to(device)


def check_feasible(config: Config, data: Dataset) -> None:
    """Checks that need the data's size, made before any training."""
    from .config import ConfigError
    if config.batch_size > data.n_train:
        raise ConfigError(f"batch_size: {config.batch_size} exceeds the {data.n_train} "
                          f"training points (q = B / N must be <= 1)")


class RunCache:
    """Each finished training run under ``runs/run<r>.pt`` of the training stage folder, so that
    a training stage interrupted midway resumes from the runs it had finished."""

    def __init__(self, sd: StageDir):
        self.sd = sd

    def load(self, run: int):
        from .train import RunResult
        name = f"runs/run{run}.pt"
        if not self.sd.file(name).exists():
            return None
        try:
            return RunResult.from_state(self.sd.load_torch(name))
        except (CorruptArtifact, KeyError) as err:
            warnings.warn(f"train: cached run {run} unreadable ({err}); retraining", stacklevel=2)
            return None

    def save(self, run: int, result) -> None:
        self.sd.save_torch(f"runs/run{run}.pt", result.to_state())


class TrainedRuns:
    """The training stage's artifacts: initial and final parameters per run, and the ledger."""

    def __init__(self, sd: StageDir):
        self.dir = sd
        models = sd.load_torch("models.pt")
        self.init: list[dict[str, torch.Tensor]] = models["init"]
        self.final: list[dict[str, torch.Tensor]] = models["final"]
        self.ledger: dict[str, np.ndarray] = sd.load_npz("ledger.npz")


def ensure_trained(config: Config, store: ArtifactStore, data: Dataset | None = None,
                   progress: bool = True) -> TrainedRuns:
    """Train the R runs of ``config`` unless a complete training artifact already exists."""
    apply_runtime(config)
    from .train import train
    sd = store.stage(config, "train")
    if sd.is_complete():  # every file present with its recorded SHA-256
        return TrainedRuns(sd)
    data = load_data(config) if data is None else data
    check_feasible(config, data)
    with store.producing(config, "train") as out:
        runs, ledger = train(config, data, progress=progress, cache=RunCache(out))
        out.save_npz("ledger.npz", **ledger)
        out.save_torch("models.pt", {"init": [r.init for r in runs],
                                     "final": [r.final for r in runs]})
    return TrainedRuns(sd)


def ensure_scored(config: Config, store: ArtifactStore, data: Dataset | None = None,
                  progress: bool = True):
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


UNLEARN_TABLES = ("unlearning", "steps", "steps_points", "barriers")


class GroupCache:
    """Each finished forget group's tables under ``groups/`` of the unlearning stage folder, so
    that a run interrupted midway resumes from the groups it had finished (files are written
    atomically: one that exists is whole)."""

    def __init__(self, sd: StageDir):
        self.sd = sd

    def _name(self, group, table: str) -> str:
        return f"groups/{group.score}__{group.label}__{table}.parquet"

    def load(self, group) -> dict | None:
        names = {t: self._name(group, t) for t in UNLEARN_TABLES}
        if not all(self.sd.file(n).exists() for n in names.values()):
            return None
        try:
            return {t: self.sd.load_parquet(n) for t, n in names.items()}
        except (OSError, ValueError) as err:
            warnings.warn(f"unlearn: cached group {group.score}/{group.label} unreadable ({err}); "
                          "recomputing", stacklevel=2)
            return None

    def save(self, group, tables: dict) -> None:
        for t in UNLEARN_TABLES:
            self.sd.save_parquet(self._name(group, t), tables[t])


def ensure_unlearned(config: Config, store: ArtifactStore, data: Dataset | None = None,
                     progress: bool = True) -> dict:
    """The unlearning tables of ``config``, computing training and scores first when needed."""
    apply_runtime(config)
    from .unlearn import run_unlearning
    sd = store.stage(config, "unlearn")
    if sd.is_complete():
        return {t: sd.load_parquet(f"{t}.parquet") for t in UNLEARN_TABLES}
    data = load_data(config) if data is None else data
    scores = ensure_scored(config, store, data, progress)
    trained = ensure_trained(config, store, data, progress)
    with store.producing(config, "unlearn") as out:
        tables = run_unlearning(config, data, trained.final, scores, progress, GroupCache(out))
        for t in UNLEARN_TABLES:
            out.save_parquet(f"{t}.parquet", tables[t])
    return tables
