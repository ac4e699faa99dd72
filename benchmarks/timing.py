"""The one timing helper every benchmark uses, and a plain-text table printer."""
from __future__ import annotations

import time
from typing import Callable


def best_time(fn: Callable[[], object], reps: int, rounds: int = 3) -> float:
    """Best of ``rounds`` mean times over ``reps`` calls of ``fn``, after one warm-up call.

    The minimum over rounds resists background load on a shared machine."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(reps):
            fn()
        best = min(best, (time.perf_counter() - start) / reps)
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
