"""The scores table: one row per training point, its privacy losses and baseline metrics.

Columns (:func:`punl.core.tables.scores_spec`): ``index``, ``label`` (as trained), ``true_label``,
``flipped``, ``privacy_loss_a{alpha}`` for every order, ``epsilon`` (at the configuration's
delta), ``avg_grad_norm``, ``avg_grad_norm_unclipped``, ``final_loss``, ``confidence``, ``el2n``;
with ``shadow_models > 0`` also ``memorisation`` and ``lira_score`` (see :mod:`punl.study.shadow`).
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from ..core.config import Config
from ..engine.data import Dataset
from ..engine.ledger import Ledger
from ..engine.metrics import baseline_metrics
from ..engine.pergrad import per_example_stats
from ..engine.privacy import per_instance_epsilon, per_instance_rdp
from ..engine.recipe import init_model, run_seeds
from ..core.tables import (METRIC_COLUMNS, SHADOW_COLUMNS, privacy_column, privacy_columns,
                           scores_spec)


def score_columns(scores: pd.DataFrame) -> list[str]:
    """The difficulty scores of a table: privacy losses, epsilon and the baseline metrics."""
    return privacy_columns(scores.columns) + \
        [c for c in ("epsilon", *METRIC_COLUMNS, *SHADOW_COLUMNS) if c in scores.columns]


def final_losses(config: Config, data: Dataset, final_params: list[dict]) -> np.ndarray:
    """Mean over runs of each training point's loss at the run's final parameters."""
    model = init_model(config, data, run_seeds(config, 0)[0])
    device = data.x_train.device
    losses = [per_example_stats(model, data.x_train, data.y_train, config.chunk_size,
                                {k: v.to(device) for k, v in p.items()}).loss for p in final_params]
    return torch.stack(losses).mean(0).cpu().numpy()


def score_table(config: Config, data: Dataset, ledger: Ledger,
                final_params: list[dict]) -> pd.DataFrame:
    """Assemble the scores table from a training stage's ledger and final models."""
    q = config.batch_size / data.n_train
    rdp = per_instance_rdp(ledger.clipped_norm, q=q, noise_multiplier=config.sigma,
                           clip=config.clip, orders=config.orders,
                           steps_per_record=ledger.steps_per_record)
    table = pd.DataFrame({"index": np.arange(data.n_train), "label": data.y_train.cpu().numpy(),
                          "true_label": data.true_train.cpu().numpy(),
                          "flipped": data.flipped.cpu().numpy()})
    for j, alpha in enumerate(config.orders):
        table[privacy_column(alpha)] = rdp[:, j]
    table["epsilon"] = per_instance_epsilon(rdp, config.orders, config.delta)
    el2n_until = config.el2n_epochs * data.n_train / config.batch_size
    metrics = baseline_metrics(ledger, final_losses(config, data, final_params), el2n_until)
    for name in METRIC_COLUMNS:
        table[name] = metrics[name]
    if config.shadow_models:
        from .shadow import shadow_scores
        for name, values in shadow_scores(config, data, final_params).items():
            table[name] = values
    return scores_spec(config.orders, config.shadow_models).check(table)


def spearman_matrix(scores: pd.DataFrame) -> pd.DataFrame:
    """Spearman rank correlation between every pair of score columns."""
    return scores[score_columns(scores)].corr(method="spearman")
