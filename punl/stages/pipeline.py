"""The stages in order, each reusing its artifacts only when they verify.

    config -> data -> train (ledger.npz, models.pt) -> score (scores.parquet)
           -> pointwise (the per-point study) -> unlearn (the group study's tables)
           -> the run's tables (scores, the per-point and unlearning tables, claims, predictions)

A stage folder is reused when its record verifies (:meth:`~punl.core.store.StageDir.is_complete`)
and its files load; otherwise the stage is recomputed with a
:class:`~punl.core.store.RecomputeWarning`, resuming from the entries of its resume cache (finished
training runs, finished forget groups) whose digests match. :func:`publish` writes a run's
tables through the output contract of :mod:`punl.core.outputs` (staged, then swapped in whole);
:func:`published_run` reads them back for :mod:`punl.analysis.predict`.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pandas as pd
import torch

from ..core.config import RUNTIME, STAGES, Config, ConfigError, load_config, stage_fields
from ..engine.data import Dataset, load_dataset
from ..engine.ledger import Ledger
from ..engine.pergrad import Params
from .convergence import check_converged, check_learned
from .preflight import check_accounting, check_groups, check_training
from ..engine.recipe import resolve_device
from ..core.store import ArtifactStore, CorruptArtifact, RecomputeWarning, StageDir
from ..core.tables import CLAIMS, POINT_TESTS, POINT_UTILITY, UnlearnTables

if TYPE_CHECKING:
    from ..analysis.predict import MeasuredRun

# The files each stage's record must list (resume caches come on top).
POINTWISE_SPECS = {"point_tests": POINT_TESTS, "point_utility": POINT_UTILITY}
STAGE_FILES = {"train": ("ledger.npz", "models.pt"), "score": ("scores.parquet",),
               "pointwise": tuple(spec.filename for spec in POINTWISE_SPECS.values()),
               "unlearn": tuple(spec.filename for spec in UnlearnTables.SPECS.values())}


# ------------------------------------------------------------------------------- run identity
def overridden_fields(config: Config, base: Config) -> dict[str, Any]:
    """The fields, other than runtime ones, where ``config`` differs from ``base`` (the
    configuration file alone): what makes a run differ in its results."""
    runtime, ours, theirs = set(stage_fields(RUNTIME)), config.to_dict(), base.to_dict()
    return {k: v for k, v in ours.items() if k not in runtime and v != theirs[k]}


def _path_text(path: str | Path) -> str:
    """A folder as text: relative to the working directory when below it, else absolute."""
    rel = os.path.relpath(Path(path).resolve(), Path.cwd())
    return str(Path(path).resolve()) if rel.startswith("..") else rel


def run_name(config: Config, base: Config | None = None,
             out_dir: str | Path | None = None) -> str:
    """The name of a run: ``config.name`` for the configuration file as it is with its default
    output folder, else ``<name>-<8 hex>`` from the changed fields and the output folder, so
    runs with different results or outputs never share a name (equal values spelled
    differently give the same name)."""
    identity = overridden_fields(config, base or config)
    default = Path("runs") / _short_name(config, identity)
    if out_dir is not None and Path(out_dir).resolve() != default.resolve():
        identity["out"] = _path_text(out_dir)
    return _short_name(config, identity)


def _short_name(config: Config, identity: dict[str, Any]) -> str:
    if not identity:
        return config.name
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.name}-{digest}"


def run_folder(config: Config, out_dir: str | Path | None = None,
               base: Config | None = None) -> Path:
    """Where a run's tables and artifacts go: ``out_dir``, or ``runs/<run_name>`` when it is
    None (an empty ``out_dir`` is refused rather than read as the default)."""
    if out_dir is not None and not str(out_dir).strip():
        raise ConfigError("--out: empty; give a folder, or leave --out out for runs/<name>")
    return Path(out_dir) if out_dir is not None else Path("runs") / run_name(config, base)


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
    """The size checks of :mod:`punl.stages.preflight` for every stage, against loaded data."""
    check_training(config, data.n_train)
    check_accounting(config, data.n_train)
    check_groups(config, data.n_train)


def stage_seconds(config: Config, store: ArtifactStore,
                  complete: list[str] | None = None) -> dict[str, float]:
    """The wall time each complete stage's record states, by stage: of the stages ``complete``
    (already verified by the caller), else of every stage that verifies now."""
    if complete is None:
        complete = [s for s in STAGES if stage_complete(config, store, s)]
    return {stage: store.stage(config, stage).provenance()["wall_time_s"] for stage in complete}


def stage_complete(config: Config, store: ArtifactStore, stage: str) -> bool:
    """Whether ``stage`` has a folder whose record and files verify."""
    return store.stage(config, stage).is_complete(config.stage_key(stage), STAGE_FILES[stage])


def reuse(config: Config, store: ArtifactStore, stage: str, load: Callable[[StageDir], Any]):
    """``load`` of the stage folder when it verifies; None when it must be computed (a folder
    that verifies but does not load loses its record, so that computing it warns)."""
    if not stage_complete(config, store, stage):
        return None
    sd = store.stage(config, stage)
    try:
        return load(sd)
    except (CorruptArtifact, ValueError, KeyError, TypeError):
        sd.invalidate()
        return None


def _cache_warning(stage: str, what: str, err: Exception) -> None:
    warnings.warn(f"{stage}: cached {what} does not verify ({err}); recomputing it",
                  RecomputeWarning, stacklevel=3)


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
        except (CorruptArtifact, KeyError, TypeError, AttributeError) as err:
            _cache_warning("train", "snapshot", err)
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
    from ..engine.train import mean_training_loss, train
    found = reuse(config, store, "train", TrainedRuns.load)
    if found is not None:
        return found
    data = load_data(config) if data is None else data
    check_training(config, data.n_train)
    with store.producing(config, "train") as out:
        snapshots = TrainingSnapshots(out)
        runs, ledger = train(config, data, progress=progress, snapshots=snapshots)
        check_converged(config, runs, ledger,
                        mean_training_loss(config, data, [r.final for r in runs]))
        check_learned(config, ledger, data.y_test.cpu().numpy())
        out.save_bytes("ledger.npz", ledger.to_bytes())
        out.save_torch("models.pt", {"init": [r.init for r in runs],
                                     "final": [r.final for r in runs]})
        snapshots.clear()
    return TrainedRuns.load(store.stage(config, "train"))


def ensure_scored(config: Config, store: ArtifactStore, data: Dataset | None = None,
                  progress: bool = True) -> pd.DataFrame:
    """The scores table of ``config`` (``scores.parquet``), training first when needed."""
    apply_runtime(config)
    from ..study.scores import score_table
    found = reuse(config, store, "score", lambda sd: sd.load_parquet("scores.parquet"))
    if found is not None:
        return found
    data = load_data(config) if data is None else data
    check_accounting(config, data.n_train)
    trained = ensure_trained(config, store, data, progress)
    with store.producing(config, "score") as out:
        out.save_parquet("scores.parquet", score_table(config, data, trained.ledger, trained.final))
    return store.stage(config, "score").load_parquet("scores.parquet")


class GroupCache:
    """Each finished forget group's tables under ``groups/`` of the unlearning stage folder, so
    that a run interrupted midway resumes from the groups it had finished; a group whose files
    do not match their digests is recomputed."""

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
        except (CorruptArtifact, ValueError) as err:
            _cache_warning("unlearn", f"group {group.score}/{group.label}", err)
            return None

    def save(self, group, tables: UnlearnTables) -> None:
        for t, frame in tables.items():
            self.sd.save_parquet(self._name(group, t), frame)


class ChunkCache:
    """Each finished chunk of the per-point study (its moment sums and its models' accuracies)
    under ``chunks/`` of the stage folder, so that an interrupted study resumes from them; a
    chunk whose files do not match their digests is recomputed."""

    def __init__(self, sd: StageDir):
        self.sd = sd

    def load(self, name: str):
        from ..study.pointwise import ChunkResult
        files = (f"chunks/{name}.npz", f"chunks/{name}.parquet")
        if not all(self.sd.file(f).exists() for f in files):
            return None
        try:
            return ChunkResult(self.sd.load_npz(files[0])["moments"],
                               POINT_UTILITY.check(self.sd.load_parquet(files[1])))
        except (CorruptArtifact, ValueError, KeyError) as err:
            _cache_warning("pointwise", f"chunk {name}", err)
            return None

    def save(self, name: str, result) -> None:
        buf = io.BytesIO()
        np.savez(buf, moments=result.moments)
        self.sd.save_bytes(f"chunks/{name}.npz", buf.getvalue())
        self.sd.save_parquet(f"chunks/{name}.parquet", result.utility)


def load_pointwise(sd: StageDir) -> dict[str, pd.DataFrame]:
    return {t: POINTWISE_SPECS[t].check(sd.load_parquet(POINTWISE_SPECS[t].filename))
            for t in POINTWISE_SPECS}


def ensure_pointwise(config: Config, store: ArtifactStore, data: Dataset | None = None,
                     progress: bool = True) -> dict[str, pd.DataFrame]:
    """The per-point study's tables (``point_tests``, ``point_utility``) of ``config``; empty
    with ``point_models: 0``."""
    apply_runtime(config)
    from ..study.pointwise import run_pointwise
    found = reuse(config, store, "pointwise", load_pointwise)
    if found is not None:
        return found
    data = load_data(config) if data is None else data
    with store.producing(config, "pointwise") as out:
        tables = run_pointwise(config, data, progress, ChunkCache(out))
        for t, frame in tables.items():
            out.save_parquet(POINTWISE_SPECS[t].filename, frame)
    return tables


def load_unlearned(sd: StageDir) -> UnlearnTables:
    return UnlearnTables(**{t: sd.load_parquet(spec.filename)
                            for t, spec in UnlearnTables.SPECS.items()})


def ensure_unlearned(config: Config, store: ArtifactStore, data: Dataset | None = None,
                     progress: bool = True) -> UnlearnTables:
    """The unlearning tables of ``config``, computing training and scores first when needed."""
    apply_runtime(config)
    from ..study.unlearn import run_unlearning
    found = reuse(config, store, "unlearn", load_unlearned)
    if found is not None:
        return found
    data = load_data(config) if data is None else data
    check_groups(config, data.n_train)
    scores = ensure_scored(config, store, data, progress)
    trained = ensure_trained(config, store, data, progress)
    with store.producing(config, "unlearn") as out:
        tables = run_unlearning(config, data, trained.final, scores, progress, GroupCache(out))
        for t, frame in tables.items():
            out.save_parquet(UnlearnTables.SPECS[t].filename, frame)
    return tables


def study(config: Config, tables: UnlearnTables, scores: pd.DataFrame, n_train: int,
          point_steps: pd.DataFrame | None = None):
    """What the claims read: the tables, the derived ``steps`` (and ``point_steps``) tables and
    the settings."""
    from ..analysis.measures import group_steps
    from ..analysis.claims import Study
    from ..engine.recipe import total_steps
    from ..study.unlearn import checkpoint_steps
    extra = {} if point_steps is None else {"point_steps": point_steps}
    return Study(tables, group_steps(tables), scores, config.primary_score,
                 config.primary_method, tuple(config.methods), tuple(config.baseline_scores),
                 config.unlearn_steps, total_steps(config, n_train), config.level, config.seed,
                 point_checkpoints=tuple(int(k) for k in checkpoint_steps(
                     config.unlearn_steps, config.n_checkpoints)),
                 law_simulations=config.law_simulations, **extra)


#: The modules whose code decides the claims table: a change to any recomputes it (every
#: module of punl that an analysis module here imports is here: tests/test_architecture.py).
CLAIMS_CODE = ("analysis/measures", "analysis/claims", "analysis/barriers", "analysis/pointclaims",
               "analysis/fits", "analysis/lawtest", "analysis/power", "study/mia", "core/tables",
               "study/groups", "study/unlearn", "study/barriers", "engine/recipe", "engine/ledger",
               "core/config", "stages/pipeline")


def claims_key(config: Config) -> str:
    """The claims table's cache key (12 hex chars): the keys of the stages it reads, the
    analysis fields (:meth:`~punl.core.config.Config.analysis_settings`) and the source of the modules that compute it."""
    package = Path(__file__).resolve().parents[1]
    h = hashlib.sha256(json.dumps({s: config.stage_key(s) for s in STAGES}).encode()
                       + json.dumps(config.analysis_settings(), sort_keys=True).encode())
    for name in CLAIMS_CODE:
        h.update((package / f"{name}.py").read_bytes())
    return h.hexdigest()[:12]


def claims(study_, config: Config | None = None, store: ArtifactStore | None = None) -> pd.DataFrame:
    """The claims table of a run (see :func:`punl.analysis.claims.claims_table`). With ``config`` and
    ``store``, computed once and kept in ``claims-<key>/`` of the store (verified on reading),
    so every chapter reads the very table the run published without recomputing all of its
    simulations (a chapter that shows a claim's measurement recomputes that one, from the same
    random streams, so its numbers equal the table's)."""
    from ..analysis.claims import claims_table
    if config is None or store is None:
        return CLAIMS.check(claims_table(study_))
    sd = StageDir(store.root / f"claims-{claims_key(config)}")
    if sd.file("claims.parquet").exists():
        try:
            return CLAIMS.check(sd.load_parquet("claims.parquet"))
        except (CorruptArtifact, ValueError) as err:
            _cache_warning("claims", "claims table", err)
    table = CLAIMS.check(claims_table(study_))
    sd.save_parquet("claims.parquet", table)
    return table


def run_tables(config: Config, store: ArtifactStore, through: str = "unlearn",
               progress: bool = True) -> dict[str, pd.DataFrame]:
    """Compute the stages up to ``through`` (``score`` or ``unlearn``), reusing what verifies,
    and return the run's tables: ``scores``, then the unlearning tables, ``steps``, ``claims``
    and the prediction tables (the held-out requests' predictions, their validation and the
    adaptive rule on them).

    Every stage is checked here, the training stage included, so that whatever must be
    recomputed is recomputed now (with its warnings on the terminal), not later inside a
    notebook."""
    from ..analysis.heldout import prediction_tables
    from ..analysis.pointclaims import point_steps
    from ..analysis.pointpredict import point_prediction_tables
    from ..analysis.predict import MeasuredRun
    data = load_data(config)
    ensure_trained(config, store, data, progress)
    if through == "score":
        return {"scores": ensure_scored(config, store, data, progress)}
    points = ensure_pointwise(config, store, data, progress)
    tables = ensure_unlearned(config, store, data, progress)
    scores = ensure_scored(config, store, data, progress)
    s = study(config, tables, scores, data.n_train, point_steps(points["point_tests"]))
    return {"scores": scores, **dict(tables.items()), "steps": s.steps, **points,
            "point_steps": s.point_steps, "claims": claims(s, config, store),
            **prediction_tables(MeasuredRun.of_study(s)),
            **point_prediction_tables(s)}


def run_record(config: Config, command: str, **extra) -> dict[str, Any]:
    """What ``run.json`` says about a run besides its tables: command, configuration, stage
    keys, time and machine."""
    return {"command": command, "config": config.to_dict(),
            "stage_keys": {s: config.stage_key(s) for s in STAGES},
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "machine": platform.node(),
            **extra}


def publish(config: Config, store: ArtifactStore, out_dir: str | Path, progress: bool = True,
            through: str = "unlearn") -> Path:
    """Compute the stages up to ``through`` and publish the run's tables and ``run.json`` into
    ``<out_dir>/published`` at once (staged, then swapped in: see :mod:`punl.core.outputs`).

    The caller holds the output folder's lock. Returns the published folder."""
    from ..core.outputs import Publication
    publication = Publication(Path(out_dir))
    publication.begin()
    record = run_record(config, through, tables=publication.write_tables(
        run_tables(config, store, through, progress)))
    publication.write_record(record)
    return publication.commit()


# ------------------------------------------------------------------------- published runs
@dataclass(frozen=True)
class PublishedRun:
    """A finished run: its configuration, its output folder and what a prediction reads."""

    config: Config
    folder: Path
    measured: MeasuredRun
    point_steps: pd.DataFrame | None = None    # the per-point study's steps, where it ran

    @property
    def has_points(self) -> bool:
        """Whether the run has a per-point study's steps of training points."""
        return self.point_steps is not None and (self.point_steps.set == "train").any()


def published_run(run: str | Path, overrides: list[str] | None = None) -> PublishedRun:
    """A run's published tables, by its output folder (``runs/<name>``, holding
    ``published/run.json``) or by its configuration (a name or file, with ``overrides``).
    Nothing is computed: a run without published unlearning tables is an error naming the
    command that makes them."""
    from ..core.config import make_config
    from ..core.outputs import published_dir, published_record, read_published
    from ..analysis.predict import MeasuredRun, RequestError
    from ..engine.recipe import total_steps
    folder = Path(run)
    if folder.is_dir():
        if overrides:
            raise RequestError(f"--set: {folder} is a run's output folder, whose configuration "
                               "is fixed; give --set with a configuration name or file")
        record = published_record(folder)
        if record is None or "config" not in record:
            raise RequestError(f"RUN: {folder} holds no published run ({published_dir(folder)}/"
                               "run.json); give a run's output folder or its configuration")
        config = make_config(record["config"])
        command = f"punl unlearn {config.name} --out {folder}"
    elif "/" in str(run) and not folder.is_file():
        raise RequestError(f"RUN: {run} is neither a run's output folder nor a configuration "
                           "file")
    else:
        config = load_config(run, overrides)
        folder = run_folder(config, None, load_config(run))
        command = f"punl unlearn {run}" + "".join(f" --set {o}" for o in overrides or [])
    tables = {t: read_published(folder, t) for t in ("scores", "steps", "points", "attack")}
    missing = [t for t, frame in tables.items() if frame is None]
    if missing:
        raise RequestError(f"RUN: {folder} has no published unlearning tables "
                           f"({', '.join(t + '.parquet' for t in missing)} missing or not "
                           f"matching run.json); run `{command}` first")
    measured = MeasuredRun(tables["scores"], tables["steps"], tables["points"], tables["attack"],
                           config.primary_score, config.primary_method, config.level,
                           total_steps(config, len(tables["scores"])))
    return PublishedRun(config, folder, measured, read_published(folder, "point_steps"))
