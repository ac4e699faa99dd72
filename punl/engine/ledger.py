"""The ledger: every training point's gradient norm, loss and confidence along training.

Every ``record_every`` steps, at the parameters theta_t of each of the R runs and for EVERY
training point x (not only the batch's): its clipped norm s_t(x) = min(||g_t(x)||, C) (the raw
norm when per-example clipping is off), its unclipped norm ||g_t(x)||, its loss, its
true-label probability and its EL2N score ||softmax(f(x)) - onehot(y)||. Stored as
``ledger.npz`` with these arrays:

    clipped_norm, grad_norm, loss, prob, el2n : float32 [runs, records, N]
    record_steps                              : int64 [records], the step t of each record
    steps_per_record                          : int64 [records], steps each record stands for
                                                (diff of record_steps and T; sums to T)
    batch_sizes                               : int64 [runs, T], realised Poisson batch sizes
    train_acc, test_acc                       : float32 [runs, records]
"""
from __future__ import annotations

import io
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

PER_POINT = ("clipped_norm", "grad_norm", "loss", "prob", "el2n")


class LedgerError(ValueError):
    """A ledger whose arrays are inconsistent; the message names the array."""


def record_steps(total: int, record_every: int) -> tuple[np.ndarray, np.ndarray]:
    """Steps of the records (0, r, 2r, ... < T) and the steps each one stands for."""
    steps = np.arange(0, total, record_every, dtype=np.int64)
    return steps, np.diff(np.append(steps, total))


@dataclass(frozen=True)
class Ledger:
    """The arrays of the module docstring, validated on construction."""

    clipped_norm: np.ndarray
    grad_norm: np.ndarray
    loss: np.ndarray
    prob: np.ndarray
    el2n: np.ndarray
    record_steps: np.ndarray
    steps_per_record: np.ndarray
    batch_sizes: np.ndarray
    train_acc: np.ndarray
    test_acc: np.ndarray

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ shape
    @property
    def runs(self) -> int:
        return self.grad_norm.shape[0]

    @property
    def records(self) -> int:
        return self.grad_norm.shape[1]

    @property
    def n_points(self) -> int:
        return self.grad_norm.shape[2]

    @property
    def total_steps(self) -> int:
        """T, the number of training steps of each run."""
        return int(self.steps_per_record.sum())

    def validate(self) -> None:
        """Raise :class:`LedgerError` naming the first array of the wrong shape or type."""
        shape = self.grad_norm.shape
        if len(shape) != 3:
            raise LedgerError(f"grad_norm: expected [runs, records, N], got shape {shape}")
        runs, records, _ = shape
        for name in PER_POINT:
            _expect(self, name, shape, np.float32)
        for name in ("record_steps", "steps_per_record"):
            _expect(self, name, (records,), np.int64)
        for name in ("train_acc", "test_acc"):
            _expect(self, name, (runs, records), np.float32)
        _expect(self, "batch_sizes", (runs, self.total_steps), np.int64)
        if records and (np.any(np.diff(self.record_steps) <= 0) or self.record_steps[0] != 0):
            raise LedgerError("record_steps: must start at 0 and increase")

    def clipped_fraction(self, clip: float) -> float:
        """Fraction of (run, record, point) entries whose unclipped norm exceeded C."""
        return float((self.grad_norm > clip).mean())

    # -------------------------------------------------------------------- i/o
    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **{f.name: getattr(self, f.name) for f in fields(self)})
        return buf.getvalue()

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> "Ledger":
        missing = [f.name for f in fields(cls) if f.name not in arrays]
        if missing:
            raise LedgerError(f"ledger: missing arrays {missing}")
        return cls(**{f.name: arrays[f.name] for f in fields(cls)})

    @classmethod
    def load(cls, path: str | Path) -> "Ledger":
        with np.load(path) as z:
            return cls.from_arrays({k: z[k] for k in z.files})


def _expect(ledger: Ledger, name: str, shape: tuple, dtype) -> None:
    a = getattr(ledger, name)
    if not isinstance(a, np.ndarray) or a.shape != tuple(shape) or a.dtype != dtype:
        got = (a.shape, a.dtype) if isinstance(a, np.ndarray) else type(a).__name__
        raise LedgerError(f"{name}: expected {np.dtype(dtype)} array of shape {tuple(shape)}, "
                          f"got {got}")
