"""The one typed configuration that flows through every stage.

A :class:`Config` is read from YAML plus ``key=value`` overrides and validated field by field
before any work starts; an invalid value raises :class:`ConfigError` naming the field. Every field
declares, beside its default, the stage whose results it changes (``train``, ``score``,
``unlearn``) or ``runtime`` (where and how fast things run, never what they compute), and its
check. Each stage hashes the fields of its own and its upstream stages, so changing an unlearning
parameter reuses the trained models and the scores. This module imports neither torch nor any
stage.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import re
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, get_type_hints

import yaml

from .catalog import DATASETS, MODELS
from .methods import METHODS
from .tables import score_columns_for
from .yamlfiles import ConfigError, config_path, read_yaml, yaml_problem

#: The stages in the order a run computes them: training, scoring, the per-point study and the
#: group study (``unlearn``).
STAGES = ("train", "score", "pointwise", "unlearn")
#: The stages whose results each stage reads (its key covers their fields too).
UPSTREAM = {"train": (), "score": ("train",), "pointwise": ("train",),
            "unlearn": ("train", "score")}
#: Fields of another stage that a stage reads besides those of its upstream stages: the
#: per-point study unlearns with the group study's primary method, budget and checkpoints.
READS = {"pointwise": ("primary_method", "unlearn_steps", "n_checkpoints", "unlearn_lr",
                       "l1_penalty")}
RUNTIME = "runtime"
#: Fields that only the analysis of a run's tables reads (the claims table, derived from the
#: stages' artifacts): they change no stage key, only the claims table's cache key
#: (:func:`punl.stages.pipeline.claims_key`), and a run's name like any field of its results.
ANALYSIS = "analysis"
#: Simulated data sets per law in claim 2's log-law test, unless ``law_simulations`` says otherwise.
LAW_SIMULATIONS = 100
# Bumped whenever a stage's files change shape, so artifacts of an older format are not reused.
ARTIFACT_FORMATS = {"train": 2, "score": 1, "pointwise": 1, "unlearn": 4}

Check = Callable[[Any, "Config"], "str | None"]


def setting(default: Any, stage: str, check: Check | None = None):
    """A configuration field: its default, the stage it belongs to and its check.

    ``check(value, config)`` returns None when the value is valid, else what is wrong."""
    if stage not in (*STAGES, ANALYSIS, RUNTIME):
        raise ValueError(f"stage: {stage!r} is not one of {(*STAGES, ANALYSIS, RUNTIME)}")
    return dataclasses.field(default=default, metadata={"stage": stage, "check": check})


# ------------------------------------------------------------------------------------- checks
def _positive(v, _):
    return None if math.isfinite(v) and v > 0 else "must be a finite number > 0"


def _non_negative(v, _):
    return None if math.isfinite(v) and v >= 0 else "must be a finite number >= 0"


#: float32's range: every learning rate, noise scale and penalty is a float32 on the device, so a
#: non-zero value below the smallest normal float32 would underflow to 0 (or to a subnormal that
#: loses its digits), and one above the largest would be inf.
FLOAT32_TINY, FLOAT32_MAX = 1.1754944e-38, 3.4028235e38


def _float32(check: Check) -> Check:
    """``check``, and a value that float32 holds: 0 or a magnitude in [FLOAT32_TINY, FLOAT32_MAX]."""
    def checked(v, config):
        if check(v, config):
            return check(v, config)
        if v != 0 and not FLOAT32_TINY <= abs(v) <= FLOAT32_MAX:
            return (f"must be 0 or between {FLOAT32_TINY:.3g} and {FLOAT32_MAX:.3g} (float32, "
                    "the device's precision, would read it as 0 or inf)")
        return None
    return checked


#: Seeds feed numpy, torch and scikit-learn; scikit-learn's random_state takes 32 bits.
SEED_LIMIT = 2 ** 32


def _seed(v, _):
    return None if 0 <= v < SEED_LIMIT else "must lie in [0, 2^32 - 1] (the generators' range)"


def _at_least(low: int) -> Check:
    return lambda v, _: None if v >= low else f"must be >= {low}"


def _in_open_unit(v, _):
    return None if 0 < v < 1 else "must lie in (0, 1)"


def _one_of(names) -> Check:
    return lambda v, _: None if v in names else f"unknown; choose one of {', '.join(names)}"


def _optional(check: Check, what: str) -> Check:
    return lambda v, c: None if v is None else (f"{check(v, c)} or null ({what})"
                                                if check(v, c) else None)


_SIMPLE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def _simple_name(v, _):
    if _SIMPLE_NAME.fullmatch(v) and ".." not in v:
        return None
    return "must be a simple name (letters, digits, '.', '_', '-'; no '/' or '..')"


def check_name(field: str, value: str) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a simple name (a folder name that stays
    inside its parent folder)."""
    message = _simple_name(value, None) if isinstance(value, str) else "must be a string"
    if message:
        raise ConfigError(f"{field}: {message} (got {value!r})")


def _device(v, _):
    return None if re.fullmatch(r"cpu|auto|cuda(:\d+)?", v) else "expected cpu, cuda, cuda:N or auto"


def _methods(v, _):
    bad = [m for m in v if m not in METHODS]
    if bad or not v:
        return f"unknown method(s) {bad}; choose from {sorted(METHODS)}"
    return None if len(set(v)) == len(v) else "lists a method twice"


def _point_models(v, config):
    if v == 0 or v * config.forget_probability >= MIN_MODELS_PER_SIDE:
        return None
    return (f"must be 0 (no per-point study) or give each point about {MIN_MODELS_PER_SIDE} or "
            f"more models per side: point_models x forget_probability = "
            f"{v * config.forget_probability:g}")


def _forget_probability(v, _):
    return None if 0 < v <= 0.5 else "must lie in (0, 0.5]"


def _primary_method(v, config):
    return None if v in config.methods else f"must be one of methods {list(config.methods)}"


def _records_per_epoch(v, config):
    if (v is None) == (config.record_every is None):
        return "set exactly one of record_every and records_per_epoch"
    return None if v is None else _positive(v, config)


def _coupled(v, config):
    if v and config.runs < 2:
        return "a paired reference needs runs >= 2"
    return None


#: Models on each side of a point's test, at least, that the per-point study must expect.
MIN_MODELS_PER_SIDE = 8

#: The levels at which the unlearning tables record every verdict (the level and its
#: neighbours in the claims).
LEVELS = (0.01, 0.05, 0.1)


def _level(v, _):
    return None if v in LEVELS else f"must be one of {', '.join(map(str, LEVELS))} (the levels " \
        "the unlearning tables record)"


#: The largest Renyi order scored: the privacy loss at order alpha is epsilon_alpha + log(1/delta) /
#: (alpha - 1); past a few hundred the order adds nothing the accountant's curve does not show.
MAX_ORDER = 1024.0


def _orders(v, _):
    if not v or not all(math.isfinite(a) and 1 < a <= MAX_ORDER for a in v):
        return f"every order must be a number > 1 and <= {MAX_ORDER:g}"
    return None if len(set(v)) == len(v) else "lists an order twice"


#: The synthetic dataset's points (punl.engine.data).
SYNTHETIC_POINTS = 1000


def _synthetic_outliers(v, _):
    return None if 0 <= v <= SYNTHETIC_POINTS else \
        f"must lie in [0, {SYNTHETIC_POINTS}] (the synthetic dataset's points)"


def _el2n_epochs(v, config):
    if _positive(v, config):
        return _positive(v, config)
    return None if v <= config.epochs else f"must be at most epochs ({config.epochs:g}): EL2N " \
        "averages the records of the first el2n_epochs epochs"


def _n_checkpoints(v, config):
    if v < 2:
        return "must be >= 2 (step 0 and the budget)"
    return None if v <= config.unlearn_steps + 1 else \
        f"must be at most unlearn_steps + 1 = {config.unlearn_steps + 1} (distinct steps in [0, K])"


def _unknown_scores(names, config) -> str | None:
    known = score_columns_for(config.orders, config.shadow_models)
    bad = [n for n in names if n not in known]
    return f"{bad} will not be a column of the scores table; choose from {list(known)}" \
        if bad else None


def _primary_score(v, config):
    return _unknown_scores([v], config)


def _baseline_scores(v, config):
    if config.primary_score in v:
        return "must not repeat primary_score"
    if len(set(v)) != len(v):
        return "lists a score twice"
    return _unknown_scores(v, config)


# ------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class Config:
    """Every parameter of an experiment; units and meanings are in the field comments."""

    name: str = setting("digits-quick", RUNTIME, _simple_name)  # the run's name: its folder under runs/ and book/runs/
    # --- data
    dataset: str = setting("digits", "train", _one_of(DATASETS))  # digits, mnist5k, fashion-mnist, mnist, svhn, cifar10 or synthetic
    data_root: str = setting("data", RUNTIME)       # where torchvision datasets are read from
    n_train: int | None = setting(None, "train", _optional(_at_least(2), "all points"))  # training points drawn from the dataset (null: all)
    test_fraction: float = setting(0.2, "train", _in_open_unit)  # share of the data held out for testing
    label_noise: float = setting(0.0, "train", lambda v, _: None if 0 <= v < 1 else
                                 "must lie in [0, 1)")  # fraction of labels flipped (recorded)
    synthetic_outliers: int = setting(20, "train", _synthetic_outliers)  # points moved into another class's cluster (synthetic)
    data_seed: int = setting(0, "train", _seed)  # the split and the flipped labels
    # --- model
    model: str = setting("mlp", "train", _one_of(MODELS))  # logreg, mlp, cnn or resnet
    width: int = setting(64, "train", _at_least(1))  # hidden units (MLP) or channels (CNN, ResNet)
    depth: int = setting(1, "train", _at_least(1))  # hidden layers of the MLP
    # --- noisy-SGD training (book/methods.md, "Training with noisy SGD")
    runs: int = setting(2, "train", _at_least(1))     # R independent training runs (seeds)
    seed: int = setting(0, "train", _seed)  # the training runs' seeds derive from it
    epochs: float = setting(10.0, "train", _positive)  # T = ceil(epochs * N / B) steps
    batch_size: int = setting(64, "train", _at_least(1))  # expected Poisson batch B, q = B / N
    lr: float = setting(0.1, "train", _float32(_positive))  # learning rate of noisy SGD
    sigma: float = setting(1.0, "train", _float32(_non_negative))  # noise std on the summed gradient: sigma*C
    clip: float = setting(4.0, "train", _float32(_positive))       # C: clipping norm and noise scale
    per_example_clipping: bool = setting(True, "train")  # False: SGLD; C only sets the noise scale
    weight_decay: float = setting(0.0, "train", _float32(_non_negative))  # L2 penalty of training
    record_every: int | None = setting(10, "train", _optional(_at_least(1), "set records_per_epoch"))  # steps between ledger records of every point's norm
    records_per_epoch: float | None = setting(None, "train", _records_per_epoch)  # ledger records per epoch (instead of record_every)
    device: str = setting("cpu", "train", _device)   # cpu, cuda, cuda:N or auto
    chunk_size: int | None = setting(512, RUNTIME, _optional(_at_least(1), "one chunk"))  # examples per per-example-gradient chunk (null: one chunk)
    num_threads: int = setting(1, RUNTIME, _at_least(1))  # torch CPU threads
    workers: int = setting(1, RUNTIME, _at_least(1))      # processes unlearning groups
    force: bool = setting(False, RUNTIME)  # run past the resource check (punl.stages.preflight)
    # --- privacy scoring (book/methods.md, "Per-instance privacy loss")
    orders: tuple[float, ...] = setting((2.0, 4.0, 8.0, 16.0, 32.0), "score", _orders)  # Renyi orders alpha of the per-instance loss
    delta: float = setting(1e-5, "score", _in_open_unit)  # delta of the per-point (eps, delta)
    el2n_epochs: float = setting(1.0, "score", _el2n_epochs)  # EL2N over this many first epochs
    shadow_models: int = setting(0, "score", lambda v, _: None if v == 0 or v >= 2 else
                                 "must be 0 (off) or >= 2")  # shadow models for memorisation and LiRA scores (0: off)
    # --- unlearning (book/methods.md, "Unlearning" and "When is a point unlearned?")
    methods: tuple[str, ...] = setting(("sgld", "finetune"), "unlearn", _methods)  # unlearning methods (punl.core.methods)
    primary_method: str = setting("sgld", "unlearn", _primary_method)  # claims 1-4 use it
    primary_score: str = setting("privacy_loss_a8", "unlearn", _primary_score)  # quantile/top/bottom/random groups
    baseline_scores: tuple[str, ...] = setting(("avg_grad_norm",), "unlearn", _baseline_scores)  # scores P is compared with (claim 3)
    n_groups: int = setting(5, "unlearn", _at_least(1))   # G quantile groups
    # each baseline score's top-m group and its two disagreement groups with the primary score
    # (claim 3 on groups; a run with a per-point study decides claim 3 on points instead)
    baseline_groups: bool = setting(True, "unlearn")
    group_size: int = setting(20, "unlearn", _at_least(1))  # m points per group
    unlearn_steps: int = setting(200, "unlearn", _at_least(1))  # K, the budget in steps
    n_checkpoints: int = setting(8, "unlearn", _n_checkpoints)  # log-spaced checkpoints in [0, K]
    unlearn_lr: float | None = setting(None, "unlearn", _optional(_float32(_positive), "same as lr"))  # learning rate of unlearning (null: lr)
    l1_penalty: float = setting(1e-4, "unlearn", _float32(_non_negative))  # lambda of the l1_sparse method
    retrain_seeds: int = setting(2, "unlearn", _at_least(2))  # M independent retrained models
    coupled: bool = setting(False, "unlearn", _coupled)  # MIA reference: coupled replays (paired)
    level: float = setting(0.05, "unlearn", _level)  # distinguishable: adjusted p <= level
    n_permutations: int = setting(300, "unlearn", _at_least(20))  # relabellings of the null
    n_bootstrap: int = setting(200, "unlearn", _at_least(1))  # bootstrap resamples of every interval
    law_simulations: int = setting(LAW_SIMULATIONS, ANALYSIS, _at_least(20))  # data sets simulated per law in claim 2's log-law test
    utility_points: int | None = setting(None, "unlearn", _optional(_at_least(1), "all points"))  # retained and test points of the utility curves (null: all)
    barrier_points: int = setting(11, "unlearn", _at_least(3))  # lambda grid for loss barriers
    # held-out deletion requests of each kind (random, mixed, single-class): unlearned like every
    # group, never used to fit a prediction or decide a claim; they validate punl.analysis.predict
    heldout_requests: int = setting(0, "unlearn", _at_least(0))
    # --- the per-point study (punl.study.pointwise): M models, each trained on D and unlearning its
    # own random forget set F_j (every training point in it independently with probability
    # p_f), against M models retrained on D \ F_j; each point is tested on the models that
    # forgot it. Also the unlearning fields read above: primary_method, unlearn_steps,
    # n_checkpoints, unlearn_lr, l1_penalty.
    forget_probability: float = setting(0.1, "pointwise", _forget_probability)  # p_f
    point_models: int = setting(0, "pointwise", _point_models)   # M; 0: no per-point study

    def __post_init__(self):
        for f in fields(self):
            check = f.metadata["check"]
            value = getattr(self, f.name)
            message = check(value, self) if check is not None else None
            if message:
                raise ConfigError(f"{f.name}: {message} (got {value!r})")

    # ---------------------------------------------------------------- derived
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def analysis_settings(self) -> dict[str, Any]:
        """The analysis fields (:data:`ANALYSIS`) and their values: in no stage key, yet they
        decide the claims table."""
        return {n: _plain(getattr(self, n)) for n in stage_fields(ANALYSIS)}

    def stage_key(self, stage: str) -> str:
        """Hash of the fields that ``stage`` and its upstream stages depend on (with the fields
        it reads from others, :data:`READS`), and of their artifact formats (12 hex chars)."""
        upstream = [s for s in STAGES if s == stage or s in UPSTREAM[stage]]
        names = [n for s in upstream for n in stage_fields(s)] + list(READS.get(stage, ()))
        values = {n: _plain(getattr(self, n)) for n in names}
        values["_formats"] = [ARTIFACT_FORMATS[s] for s in upstream]
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def record_interval(self, n_train: int) -> int:
        """Steps between ledger records: ``record_every``, or N / (B * records_per_epoch)
        rounded (at least 1), which keeps the number of records per epoch, and so the ledger's
        cost per point, independent of N."""
        if self.record_every is not None:
            return self.record_every
        return max(1, round(n_train / (self.batch_size * self.records_per_epoch)))

    @property
    def effective_unlearn_lr(self) -> float:
        return self.lr if self.unlearn_lr is None else self.unlearn_lr

    @property
    def group_scores(self) -> tuple[str, ...]:
        """The primary score followed by the baseline scores (each gets a top-m group)."""
        return (self.primary_score, *self.baseline_scores)


def stage_fields(stage: str) -> list[str]:
    """The fields declared for ``stage`` (one of STAGES, ``analysis`` or ``runtime``), in
    definition order."""
    return [f.name for f in fields(Config) if f.metadata["stage"] == stage]


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def valid_keys() -> list[str]:
    return [f.name for f in fields(Config)]


def field_meanings() -> dict[str, str]:
    """What each field means, read from :class:`Config`'s source: the comment on a field's
    lines, else the comment lines just above it (section headers ``# ---`` excepted); empty
    where it has none. ``punl fields`` prints them."""
    import inspect
    import io
    import tokenize
    comments: dict[int, str] = {}
    source = inspect.getsource(Config)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines, meanings, above = source.splitlines(), {}, []
    field_start = re.compile(r"^    (\w+): .*=\s*setting\(")
    for number, line in enumerate(lines, start=1):
        match = field_start.match(line)
        if line.strip().startswith("#"):
            above = [] if line.strip().startswith("# ---") else [*above, comments[number]]
        elif match:
            end = number
            while lines[end - 1].count("(") > lines[end - 1].count(")") and end < len(lines):
                end += 1                      # a setting(...) continued on the next lines
            own = [comments[n] for n in range(number, end + 1) if n in comments]
            meanings[match.group(1)] = " ".join(own or above)
            above = []
    return meanings


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """Coerce a YAML-parsed value to the field's declared type, or raise ConfigError."""
    text = hint.__name__ if isinstance(hint, type) else str(hint)
    if value is None:
        if "None" in text:
            return None
        raise ConfigError(f"{name}: may not be null")
    try:
        if text.startswith("tuple"):
            items = value if isinstance(value, (list, tuple)) else [value]
            inner = float if "float" in text else str
            return tuple(inner(i) for i in items)
        if "bool" in text:
            if not isinstance(value, bool):
                raise TypeError("expected true or false")
            return value
        if text.startswith("int"):
            if isinstance(value, bool) or float(value) != int(value):
                raise TypeError("expected an integer")
            return int(value)
        if text.startswith("float"):
            if isinstance(value, bool):
                raise TypeError("expected a number")
            return float(value)
        if isinstance(value, bool):
            raise TypeError("YAML reads an unquoted true/false/yes/no/on/off as a boolean; "
                            "quote the text")
        if not isinstance(value, (str, int, float)):
            raise TypeError("expected a single value")
        return str(value)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{name}: cannot read {value!r} as {text} ({err})") from None


def typed_value(name: str, value: Any) -> Any:
    """``value`` as field ``name`` reads it (``.1`` and ``0.1`` give the same float); an
    unknown field or a value it cannot take raises ConfigError."""
    hints = get_type_hints(Config)
    if name not in hints:
        raise ConfigError(f"unknown key {name!r}; valid keys: {', '.join(valid_keys())}")
    return _coerce(name, value, hints[name])


def make_config(values: dict[str, Any]) -> Config:
    """Build a validated Config from a plain dict; unknown keys are an error listing valid ones."""
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    hints = get_type_hints(Config)
    return Config(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=0.05", "orders=[2,8]"]`` -> ``{"lr": 0.05, "orders": [2, 8]}`` (values are YAML)."""
    out, given = {}, {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set: expected key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        if key.strip() in given:
            raise ConfigError(f"--set {key.strip()}: given twice ({given[key.strip()]!r} and "
                              f"{raw!r}); set each field once")
        given[key.strip()] = raw
        try:
            out[key.strip()] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise ConfigError(f"--set {key.strip()}: cannot read {raw!r} as YAML "
                              f"({yaml_problem(err)})") from None
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = config_path(path)
        values = read_yaml(p)
        values.setdefault("name", p.stem)
    values.update(parse_overrides(overrides))
    return make_config(values)
