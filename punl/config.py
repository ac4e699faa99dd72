"""The one typed configuration that flows through every stage.

A :class:`Config` is read from YAML plus ``key=value`` overrides and validated field by field
before any work starts; an invalid value raises :class:`ConfigError` naming the field. Each stage
hashes only the fields it (and the stages upstream of it) depends on, so changing an unlearning
parameter reuses the trained models and the scores.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, get_type_hints

import yaml

from .data import DATASETS
from .models import MODELS


class ConfigError(ValueError):
    """An invalid configuration value or key; the message names the field."""


@dataclass(frozen=True)
class Config:
    """Every parameter of an experiment. Units and meanings are in the field comments."""

    name: str = "digits-quick"
    # --- data
    dataset: str = "digits"
    data_root: str = "data"
    n_train: int | None = None            # subsample the training split to this many points
    test_fraction: float = 0.2
    label_noise: float = 0.0              # fraction of training labels flipped (recorded)
    synthetic_outliers: int = 20
    data_seed: int = 0
    # --- model
    model: str = "mlp"
    width: int = 64
    depth: int = 1
    # --- noisy-SGD training (SCIENCE.md section 1)
    runs: int = 2                         # R independent training runs (seeds)
    seed: int = 0
    epochs: float = 10.0                  # T = ceil(epochs * N / B) steps
    batch_size: int = 64                  # expected Poisson batch size B, q = B / N
    lr: float = 0.1
    sigma: float = 1.0                    # noise multiplier; noise std on the summed gradient = sigma * C
    clip: float = 4.0                     # C: clipping norm and noise scale
    clipping: bool = True                 # False: no clipping (SGLD); C only sets the noise scale
    weight_decay: float = 0.0
    record_every: int = 10                # ledger record every this many steps
    chunk_size: int | None = 512          # per-example gradient chunk (memory bound)
    num_threads: int = 1                  # torch CPU threads; small models run fastest on one
    device: str = "cpu"                   # cpu, cuda, cuda:N or auto (cuda when available)
    workers: int = 1                      # processes unlearning groups in parallel (same results)
    # --- privacy scoring (SCIENCE.md sections 2-3)
    orders: tuple[float, ...] = (2.0, 4.0, 8.0, 16.0, 32.0)
    delta: float = 1e-5
    el2n_epochs: float = 1.0              # EL2N averages records within this many epochs
    shadow_models: int = 0                # > 0: memorisation and LiRA scores from shadow models
    # --- unlearning (SCIENCE.md sections 4-5)
    methods: tuple[str, ...] = ("sgld", "finetune")
    group_scores: tuple[str, ...] = ("privacy_loss_a8", "avg_grad_norm")
    n_groups: int = 5                     # G quantile groups
    group_size: int = 20                  # m points per group
    unlearn_steps: int = 200              # K, the unlearning budget in steps
    n_checkpoints: int = 8                # log-spaced checkpoints in [0, K]
    unlearn_lr: float | None = None       # None: same as lr
    l1_penalty: float = 1e-4
    retrain_seeds: int = 2                # M retrained models per group
    coupled: bool = True                  # retrained models share the original's init seed
    tau: float = 0.05                     # group unlearned when MIA accuracy <= 0.5 + tau
    n_bootstrap: int = 200
    barrier_points: int = 11              # lambda grid size for loss barriers

    def __post_init__(self):
        for f in fields(self):
            check = _CHECKS.get(f.name)
            if check is not None:
                value = getattr(self, f.name)
                message = check(value, self)
                if message:
                    raise ConfigError(f"{f.name}: {message} (got {value!r})")

    # ---------------------------------------------------------------- derived
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self)}

    def replace(self, **changes) -> "Config":
        return dataclasses.replace(self, **changes)

    def stage_key(self, stage: str) -> str:
        """Hash of the fields that ``stage`` and its upstream stages depend on, and of their
        artifact formats (12 hex chars)."""
        upstream = STAGES[: STAGES.index(stage) + 1]
        names = [n for s in upstream for n in STAGE_FIELDS[s]]
        values = {n: _plain(getattr(self, n)) for n in names}
        values["_formats"] = [ARTIFACT_FORMATS[s] for s in upstream]
        blob = json.dumps(values, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def effective_unlearn_lr(self) -> float:
        return self.lr if self.unlearn_lr is None else self.unlearn_lr


STAGES = ("train", "score", "unlearn")
# Bumped whenever a stage's files change shape, so artifacts of an older format are not reused.
ARTIFACT_FORMATS = {"train": 1, "score": 1, "unlearn": 2}
STAGE_FIELDS = {
    "train": ["dataset", "n_train", "test_fraction", "label_noise", "synthetic_outliers",
              "data_seed", "model", "width", "depth", "runs", "seed", "epochs", "batch_size", "lr",
              "sigma", "clip", "clipping", "weight_decay", "record_every", "device"],
    "score": ["orders", "delta", "el2n_epochs", "shadow_models"],
    "unlearn": ["methods", "group_scores", "n_groups", "group_size", "unlearn_steps",
                "n_checkpoints", "unlearn_lr", "l1_penalty", "retrain_seeds", "coupled", "tau",
                "n_bootstrap", "barrier_points"],
}


def _plain(v):
    return list(v) if isinstance(v, tuple) else v


def _positive(v, _):
    return None if v > 0 else "must be > 0"


def _at_least_one(v, _):
    return None if v >= 1 else "must be >= 1"


def _check_device(v: str) -> str | None:
    import re
    if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", v):
        return "expected cpu, cuda, cuda:N or auto"
    return None


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is
    an error naming the field."""
    import torch
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but no CUDA device is visible")
    return name


def _check_methods(v, _):
    from .unlearn import METHODS  # registry lives with the methods
    bad = [m for m in v if m not in METHODS]
    return f"unknown method(s) {bad}; choose from {sorted(METHODS)}" if bad or not v else None


_CHECKS = {
    "dataset": lambda v, _: None if v in DATASETS else f"unknown dataset; choose one of {DATASETS}",
    "model": lambda v, _: None if v in MODELS else f"unknown model; choose one of {MODELS}",
    "n_train": lambda v, _: None if v is None or v >= 2 else "must be >= 2 or null",
    "test_fraction": lambda v, _: None if 0 < v < 1 else "must lie in (0, 1)",
    "label_noise": lambda v, _: None if 0 <= v < 1 else "must lie in [0, 1)",
    "width": _at_least_one, "depth": _at_least_one, "runs": _at_least_one,
    "epochs": _positive, "batch_size": _at_least_one, "lr": _positive,
    "sigma": lambda v, _: None if v >= 0 and math.isfinite(v) else "must be >= 0",
    "clip": _positive,
    "weight_decay": lambda v, _: None if v >= 0 else "must be >= 0",
    "record_every": _at_least_one,
    "device": lambda v, _: _check_device(v), "num_threads": _at_least_one,
    "workers": _at_least_one,
    "chunk_size": lambda v, _: None if v is None or v >= 1 else "must be >= 1 or null",
    "orders": lambda v, _: None if v and all(a > 1 for a in v) else "every order must be > 1",
    "delta": lambda v, _: None if 0 < v < 1 else "must lie in (0, 1)",
    "el2n_epochs": _positive,
    "shadow_models": lambda v, _: None if v == 0 or v >= 2 else "must be 0 (off) or >= 2",
    "methods": _check_methods,
    "n_groups": _at_least_one, "group_size": _at_least_one, "unlearn_steps": _at_least_one,
    "n_checkpoints": lambda v, _: None if v >= 2 else "must be >= 2",
    "unlearn_lr": lambda v, _: None if v is None or v > 0 else "must be > 0 or null",
    "l1_penalty": lambda v, _: None if v >= 0 else "must be >= 0",
    "retrain_seeds": _at_least_one,
    "tau": lambda v, _: None if 0 <= v < 0.5 else "must lie in [0, 0.5)",
    "n_bootstrap": _at_least_one,
    "barrier_points": lambda v, _: None if v >= 3 else "must be >= 3",
}


def valid_keys() -> list[str]:
    return [f.name for f in fields(Config)]


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
        return str(value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}: cannot read {value!r} as {text} ({err})") from None


def make_config(values: dict[str, Any]) -> Config:
    """Build a validated Config from a plain dict; unknown keys are an error listing valid ones."""
    unknown = sorted(set(values) - set(valid_keys()))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    hints = get_type_hints(Config)
    return Config(**{k: _coerce(k, v, hints[k]) for k, v in values.items()})


def parse_overrides(pairs: list[str] | None) -> dict[str, Any]:
    """``["lr=0.05", "orders=[2,8]"]`` -> ``{"lr": 0.05, "orders": [2, 8]}`` (values are YAML)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ConfigError(f"--set: expected key=value, got {pair!r}")
        key, raw = pair.split("=", 1)
        out[key.strip()] = yaml.safe_load(raw)
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Read a YAML config (or the defaults when ``path`` is None) and apply ``key=value`` overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.exists():
            builtin = Path(__file__).resolve().parent.parent / "configs" / f"{path}.yaml"
            if not builtin.exists():
                raise ConfigError(f"config: no file {str(path)!r} and no configs/{path}.yaml")
            p = builtin
        values = yaml.safe_load(p.read_text()) or {}
        values.setdefault("name", p.stem)
    values.update(parse_overrides(overrides))
    return make_config(values)
