"""The one timing helper every benchmark uses, and a plain-text table printer."""
from __future__ import annotations

import time
from typing import Callable


def _wait_for_gpu() -> None:
    """Wait for queued CUDA work, so that a GPU timing counts the kernels and not their launch."""
    import torch
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def best_time(fn: Callable[[], object], reps: int, rounds: int = 3) -> float:
    """Best of ``rounds`` mean times over ``reps`` calls of ``fn``, after one warm-up call.

    The minimum over rounds resists background load on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        _wait_for_gpu()
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        _wait_for_gpu()
        best = min(best, (time.perf_counter() - start) / reps)
    return best


def interleaved_best_times(candidates: dict[str, tuple[Callable[[], object], int]],
                           rounds: int = 3) -> dict[str, float]:
    """``best_time`` of every (fn, reps) candidate with the rounds interleaved: round r of every
    candidate runs before round r + 1 of any, so a burst of background load hits them alike."""
    best = {k: float("inf") for k in candidates}
    for _ in range(rounds):
        for k, (fn, reps) in candidates.items():
            best[k] = min(best[k], best_time(fn, reps, rounds=1))
    return best


def _fmt(value) -> str:
    return f"{value:,.3f}" if isinstance(value, float) else str(value)


def print_rows(rows: list[dict]) -> None:
    """Rows of equal-keyed dicts as an aligned text table."""
    keys = list(rows[0])
    widths = {k: max(len(k), *(len(_fmt(r[k])) for r in rows)) for k in keys}
    print("  ".join(k.ljust(widths[k]) for k in keys))
    for row in rows:
        print("  ".join(_fmt(row[k]).ljust(widths[k]) for k in keys))
