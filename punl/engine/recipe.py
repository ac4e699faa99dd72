"""A configuration's training recipe: its model, seeds, number of steps and models fitted with it.

Training, the shadow models and the retrained oracles all follow the same recipe; this module is
where a :class:`~punl.core.config.Config` meets the engine in :mod:`punl.engine.sgd`.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..core.config import Config, ConfigError
from .data import Dataset
from ..core.methods import training_rule
from .models import build_model
from .pergrad import Params, detached_params
from .sgd import Member, run_steps


def resolve_device(name: str) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``; ``cuda`` without a GPU is
    an error naming the field."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device: {name!r} requested but no CUDA device is visible")
    return name


def total_steps(config: Config, n: int) -> int:
    """T = ceil(epochs * N / B)."""
    return max(1, math.ceil(config.epochs * n / config.batch_size))


def run_seeds(config: Config, run: int) -> tuple[int, int]:
    """(initialisation seed, sampling-and-noise seed) of training run ``run``."""
    base = 1_000_003 * config.seed + 7919 * run
    return base + 1, base + 2


def init_model(config: Config, data: Dataset, init_seed: int) -> nn.Module:
    """The model of ``config`` with parameters drawn from ``init_seed`` (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = build_model(config.model, data.input_shape, data.num_classes, config.width,
                            config.depth)
    return model.to(data.x_train.device)


def initial_params(config: Config, data: Dataset, init_seed: int) -> Params:
    """The parameters ``init_model`` draws from ``init_seed``."""
    return detached_params(init_model(config, data, init_seed))


def from_scratch(config: Config, data: Dataset, seeds: tuple[int, int], frame: np.ndarray,
                 excluded: np.ndarray | None = None, rate: float | None = None) -> Member:
    """A member starting at ``init_model``'s parameters for seeds[0], drawing its batches and
    noise from seeds[1], sampling from ``frame`` (see :class:`punl.engine.sgd.Member`)."""
    return Member(initial_params(config, data, seeds[0]), seeds[1], np.asarray(frame),
                  excluded, rate)


def fit(config: Config, data: Dataset, members: Sequence[Member], steps: int | None = None,
        rule=None) -> list[Params]:
    """Every member after ``steps`` (default T) steps of ``rule`` (default the training rule)
    on the training set, together."""
    steps = total_steps(config, data.n_train) if steps is None else steps
    return run_steps(init_model(config, data, 0), members, data.x_train, data.y_train,
                     rule or training_rule(config), steps)


def fit_from_scratch(config: Config, data: Dataset, subset: np.ndarray,
                     seeds: Sequence[tuple[int, int]]) -> list[Params]:
    """One model per (init seed, noise seed), trained with the configuration's recipe (T steps of
    its training rule, T set by the full training set's size) on the points ``subset`` only."""
    return fit(config, data, [from_scratch(config, data, s, subset) for s in seeds])
