"""Whether training produced a model worth unlearning from: checked after training, before the
training stage is marked complete, so that no meaningless run publishes claims.

- :func:`check_converged`: non-finite parameters or ledger values, or a mean training loss that
  ends above :data:`LOSS_RISE` times its start (diverged);
- :func:`check_learned`: a final test accuracy at chance (nothing learned, so nothing to unlearn).
"""
from __future__ import annotations

import numpy as np
import torch

from ..core.config import Config
from ..engine.ledger import Ledger


class Diverged(RuntimeError):
    """Training produced non-finite parameters or ledger values, a rising loss, or a model at
    chance; the message names the fix."""


def check_converged(config: Config, runs: list, ledger: Ledger, final_loss: float) -> None:
    """Raise :class:`Diverged` when a run ends with non-finite parameters, the ledger holds
    non-finite norms or losses, or ``final_loss`` (the mean training loss at the runs' final
    parameters) lies above :data:`LOSS_RISE` times the ledger's at step 0, so such a run is
    never marked complete."""
    for r, run in enumerate(runs):
        if not all(torch.isfinite(v).all() for v in run.final.values()):
            raise Diverged(f"lr: training run {r} diverged to non-finite parameters "
                           f"(lr = {config.lr}, clip = {config.clip}); lower lr")
    for name in ("grad_norm", "loss"):
        if not np.isfinite(getattr(ledger, name)).all():
            raise Diverged(f"lr: the ledger's {name} holds non-finite values "
                           f"(lr = {config.lr}, clip = {config.clip}); lower lr")
    start, end = ledger.loss[:, 0].mean(), final_loss
    if end > LOSS_RISE * start:
        raise Diverged(f"lr: training diverged: the mean training loss rose from {start:.3g} "
                       f"to {end:.3g} (lr = {config.lr}, clip = {config.clip}); lower lr")


#: Training whose mean loss ends above this multiple of where it started has diverged.
LOSS_RISE = 2.0


def check_learned(config: Config, ledger: Ledger, test_labels) -> None:
    """Raise :class:`Diverged` when the runs' final test accuracy, pooled over the R runs, is at
    chance: at most c + 3 sqrt(c (1 - c) / (R n_test)), where c is the test set's largest class
    share (what always answering the commonest class scores; 1/k for balanced classes) and
    three standard errors cover a guess's luck (it passes with probability about 0.1%). A model
    that learned nothing has nothing to unlearn, so its claims would be meaningless."""
    labels = np.asarray(test_labels)
    chance = float(np.bincount(labels).max() / len(labels))
    accuracy = float(np.mean(ledger.test_acc[:, -1]))
    bound = chance + 3.0 * np.sqrt(chance * (1 - chance) / (ledger.test_acc.shape[0] * len(labels)))
    if accuracy <= bound:
        raise Diverged(f"training did not learn: the final test accuracy {accuracy:.3f} is "
                       f"at chance (the commonest class is {chance:.3f} of the test set; at most "
                       f"{bound:.3f} is chance) "
                       f"(lr = {config.lr}, sigma = {config.sigma}, clip = {config.clip}, "
                       f"weight_decay = {config.weight_decay}); train longer, with less noise or "
                       "a larger lr")
