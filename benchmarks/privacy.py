"""Benchmark: table-based per-instance RDP against one dp_accounting call per (point, record).

Norms are uniform in [0, C] (C = 1) for ``n_points`` points at ``n_records`` records of one run;
q = 0.01, sigma = 1. The direct cost is measured on ``sample`` random (point, record) pairs (one
library call each, all orders at once) and extrapolated to the full ledger.
"""
from __future__ import annotations

import time
from typing import Sequence

import numpy as np

from punl.engine import privacy

Q, SIGMA, CLIP = 0.01, 1.0, 1.0


def bench_privacy(
    n_points: int = 50_000,
    n_records: int = 1_000,
    orders: Sequence[float] = (2, 4, 8, 16, 32),
    sample: int = 200,
    seed: int = 0,
) -> dict:
    """Times of the table method and of direct library calls; see the module docstring."""
    rng = np.random.default_rng(seed)
    norms = rng.uniform(0.0, CLIP, size=(1, n_records, n_points)).astype(np.float32)
    kwargs = dict(q=Q, noise_multiplier=SIGMA, clip=CLIP, orders=orders, steps_per_record=1)

    privacy._order_table.cache_clear()
    start = time.perf_counter()
    privacy.per_instance_rdp(np.full((1, 1, 1), CLIP), **kwargs)
    table_s = time.perf_counter() - start
    start = time.perf_counter()
    privacy.per_instance_rdp(norms, **kwargs)
    score_s = time.perf_counter() - start

    recs = rng.integers(n_records, size=sample)
    pts = rng.integers(n_points, size=sample)
    picked = norms[0, recs, pts].astype(np.float64)
    start = time.perf_counter()
    direct = np.array([privacy.sgm_rdp(Q, SIGMA * CLIP / s, orders) for s in picked])
    per_call_s = (time.perf_counter() - start) / sample
    table = privacy.per_instance_rdp(picked[None, None, :], **kwargs)

    direct_full_s = per_call_s * n_points * n_records
    return {
        "n_points": n_points,
        "n_records": n_records,
        "n_orders": len(orders),
        "table_build_s": table_s,
        "score_s": score_s,
        "direct_per_call_s": per_call_s,
        "direct_full_s": direct_full_s,
        "speedup": direct_full_s / (table_s + score_s),
        "sample_max_rel_diff": float(np.max(np.abs(table / direct - 1))),
    }


def _format(result: dict) -> str:
    rows = [
        ("ledger", f"{result['n_points']:,} points x {result['n_records']:,} records"
                   f" x {result['n_orders']} orders"),
        ("table build (cold cache)", f"{result['table_build_s']:.3f} s"),
        ("score full ledger", f"{result['score_s']:.3f} s"),
        ("direct library call", f"{result['direct_per_call_s'] * 1e6:.1f} us / (point, record)"),
        ("direct, full ledger (extrap.)", f"{result['direct_full_s']:,.0f} s"),
        ("speed-up (incl. table build)", f"{result['speedup']:,.0f}x"),
        ("max rel. diff on the sample", f"{result['sample_max_rel_diff']:.1e}"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def main(tiny: bool = False, device: str = "cpu") -> None:
    if tiny:
        print(_format(bench_privacy(n_points=200, n_records=5, sample=5)))
    else:
        print(_format(bench_privacy()))
