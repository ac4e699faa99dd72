"""Per-instance Rényi-DP accounting over a ledger of clipped per-example gradient norms.

DP-SGD with Poisson sampling rate q, clipping norm C and Gaussian noise of standard deviation
sigma * C on the summed clipped gradient is, at every step, a Poisson-subsampled Gaussian mechanism
(SGM). Its RDP at order alpha > 1 for sensitivity C and noise multiplier z is (Mironov, Talwar and
Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism")

    RDP_SGM(alpha; q, z) = log A_alpha / (alpha - 1),
    A_alpha = E_{y ~ N(0, z^2)} [ (1 - q + q exp((2y - 1) / (2 z^2)))^alpha ],

evaluated by ``dp_accounting``. A training point x whose clipped gradient at step t has norm
s_t(x) is protected like an SGM of sensitivity s_t(x) instead of C (Thudi et al. 2024, "Gradients
Look Alike: Sensitivity is Often Overestimated in DP-SGD"), i.e. with ratio r = s_t(x) / C:

    eps_t(x; alpha) = RDP_SGM(alpha; q, sigma / r)          (0 when r = 0),

and RDP composes additively over steps. The ledger records norms at K records, record k standing
for T_k training steps, in R independent runs; the per-instance loss is

    P(x; alpha) = sum_k T_k * (1 / R) sum_runs RDP_SGM(alpha; q, sigma / r_k(x)).

Evaluation uses, per order, a table of g(u) = log RDP_SGM(alpha; q, sigma e^-u) - 2u against the
log-ratio u = log r, interpolated linearly in u, so that RDP = r^2 exp(g(log r)) (linear in u for
log RDP: interpolating RDP itself is badly off at small r). The knots start on a uniform grid of
step 1/32 (holding u = 0, i.e. r = 1, exactly) and are bisected wherever the midpoint misses the
chord by more than ``_REFINE_TOL``; this puts the knots where the curve bends sharply (around
r = 1 for small q and large alpha). The table ends at or above the largest ratio of the ledger
(ratios above 1 occur when clipping is off) and starts at the ratio r_lo where
t = r^2 / (2 sigma^2) = min(1e-7 / sqrt(q), 1e-4). Below r_lo, g is held constant, i.e. RDP is
extrapolated as r^2: for integer alpha and small r,

    A_alpha = E_{i ~ Bin(alpha, q)} exp(i (i - 1) t) = 1 + alpha (alpha - 1) q^2 t + O(t^2),

so RDP = alpha q^2 r^2 / (2 sigma^2) * (1 + O(t)). At r_lo the O(t) term and the rounding error of
the library's sum (relative to the value it grows as 1/(q t); far below r_lo the library's own
values are off by orders of magnitude) are both about 1e-5 or less: against a 50-digit evaluation
of A_alpha the tables are within 1.1e-5 for r in [1e-8, 2], q in [1e-4, 1], alpha in [2, 128].
The tabulated RDP is made non-decreasing in r (a running maximum over the knots; RDP grows with the
sensitivity, so this only removes rounding noise and keeps the bound conservative).

Fractional orders are supported as far as ``dp_accounting`` is: at large noise multipliers (small
r) its series for fractional alpha overestimates RDP, by orders of magnitude for alpha < 3, and
for some (q, sigma / r) it does not converge and returns inf (a warning is issued and the points
at or above that ratio get an infinite loss at that order). For integer orders the library sums
a finite series.
"""
from __future__ import annotations

import functools
import math
import warnings
from typing import NamedTuple, Sequence

import numpy as np
from absl import logging as absl_logging
from dp_accounting import GaussianDpEvent, PoissonSampledDpEvent
from dp_accounting.rdp import RdpAccountant
from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

#: Bound on the relative error of ``per_instance_rdp`` against direct ``sgm_rdp`` calls, checked in
#: tests/test_privacy.py on 2,000 log-uniform ratios in [1e-4, 1] plus 41 ratios in [0.9, 1], for
#: q in {0.001, 0.01, 0.1, 1}, sigma in {0.5, 0.8, 1, 4}, orders 2, 4, 8, 16, 32. Measured maximum:
#: 7.6e-5, at r = 1e-4 with q = 0.01, sigma = 4, where the library's rounding error dominates (there
#: the table is the more accurate of the two); 4.6e-6 over ratios in [1e-2, 1].
INTERPOLATION_MAX_REL_ERROR = 1e-4

_COARSE_STEP = 1.0 / 32
_T_LO = 1e-7
_T_LO_MAX = 1e-4
_REFINE_TOL = 1e-5
_MIN_STEP = 2.0**-16
_TOP_STEP = 0.25
_CHUNK_ELEMENTS = 1 << 17  # float64 work arrays of 1 MiB stay in cache


def sgm_rdp(q: float, noise_multiplier: float, orders: Sequence[float]) -> np.ndarray:
    """Per-step RDP of the Poisson-subsampled Gaussian mechanism at each order.

    ``RDP_SGM(alpha; q, z) = log A_alpha / (alpha - 1)`` (Mironov et al. 2019), from
    ``dp_accounting``'s public accountant (one step composed into an ``RdpAccountant``); for
    q = 1 it is the Gaussian mechanism's ``alpha / (2 z^2)``.
    """
    accountant = RdpAccountant(list(orders))
    accountant.compose(PoissonSampledDpEvent(q, GaussianDpEvent(noise_multiplier)))
    return np.asarray(accountant.rdp, dtype=np.float64)


def per_instance_rdp(
    norms: np.ndarray,
    *,
    q: float,
    noise_multiplier: float,
    clip: float,
    orders: Sequence[float],
    steps_per_record: float | Sequence[float] | np.ndarray,
) -> np.ndarray:
    """Per-instance RDP of every point, shape [N, len(orders)], float64.

    ``norms`` has shape [runs, records, N]: clipped per-example gradient norms s. The result is
    ``P(x; alpha) = sum_k T_k * mean_runs RDP_SGM(alpha; q, noise_multiplier * clip / s)`` with
    T_k = ``steps_per_record`` (a scalar, or one value per record); s = 0 contributes 0.
    RDP_SGM is read from per-order tables built from ``dp_accounting`` (see the module docstring;
    relative error below ``INTERPOLATION_MAX_REL_ERROR``), cached per (q, noise_multiplier, alpha).
    Raises ValueError, naming the parameter, for malformed input before any table is built.
    """
    norms = np.asarray(norms)
    orders_arr = _check_orders(orders)
    _check_params(q, noise_multiplier, clip)
    if norms.ndim != 3 or norms.shape[0] == 0:
        raise ValueError(f"norms: must be 3-D [runs >= 1, records, N], got shape {norms.shape}")
    steps = _check_steps(steps_per_record, norms.shape[1])
    top = _max_ratio(norms, clip)

    u_hi = _TOP_STEP * max(1, math.ceil(math.log(top) / _TOP_STEP)) if top > 0 else _TOP_STEP
    tables = _tables(float(q), float(noise_multiplier), orders_arr, u_hi)
    out = np.zeros((norms.shape[2], len(orders_arr)))
    for rec, pts in _blocks(norms.shape):
        _accumulate(out[pts], norms[:, rec, pts], steps[rec] / norms.shape[0], clip, tables)
    return out


def per_instance_epsilon(rdp: np.ndarray, orders: Sequence[float], delta: float) -> np.ndarray:
    """Per-point (eps, delta)-DP from per-point RDP curves, shape [N].

    For each point, ``dp_accounting``'s ``compute_epsilon`` takes the minimum over orders of
    ``rdp + log(1 - 1/alpha) - log(delta * alpha) / (alpha - 1)`` (Balle et al. 2020, Prop. 12).
    """
    orders_arr = _check_orders(orders)
    rdp = np.asarray(rdp, dtype=np.float64)
    if rdp.ndim != 2 or rdp.shape[1] != len(orders_arr):
        raise ValueError(f"rdp: must have shape [N, {len(orders_arr)}], got {rdp.shape}")
    if not 0 < delta < 1:
        raise ValueError(f"delta: must be in (0, 1), got {delta}")
    if np.isnan(rdp).any() or (rdp < 0).any():
        raise ValueError("rdp: must be non-negative (inf allowed), got NaN or negative values")
    order_list = orders_arr.tolist()
    return np.array([compute_epsilon(order_list, row, delta)[0] for row in rdp.tolist()], float)


def _check_orders(orders: Sequence[float]) -> np.ndarray:
    arr = np.asarray(orders, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"orders: must be a non-empty 1-D sequence, got {orders!r}")
    if not np.all(np.isfinite(arr) & (arr > 1)):
        raise ValueError(f"orders: every alpha must be finite and > 1, got {arr.tolist()}")
    return arr


def _check_params(q: float, noise_multiplier: float, clip: float) -> None:
    if not 0 < q <= 1:
        raise ValueError(f"q: sampling rate must be in (0, 1], got {q}")
    if not np.isfinite(clip) or clip <= 0:
        raise ValueError(f"clip: must be finite and > 0, got {clip}")
    if not np.isfinite(noise_multiplier) or noise_multiplier < 0:
        raise ValueError(f"noise_multiplier: must be finite and >= 0, got {noise_multiplier}")
    if noise_multiplier == 0:
        raise ValueError("noise_multiplier: is 0, so the privacy loss of every point is infinite")


def _check_steps(steps_per_record, n_records: int) -> np.ndarray:
    steps = np.asarray(steps_per_record, dtype=np.float64)
    if steps.ndim == 0:
        steps = np.full(n_records, float(steps))
    if steps.shape != (n_records,):
        raise ValueError(
            f"steps_per_record: must be a scalar or have length records = {n_records}, "
            f"got shape {steps.shape}"
        )
    if not np.all(np.isfinite(steps) & (steps >= 0)):
        raise ValueError("steps_per_record: must be finite and >= 0")
    return steps


def _max_ratio(norms: np.ndarray, clip: float) -> float:
    """Largest s / clip, after checking that the norms are finite and non-negative."""
    if norms.size == 0:
        return 0.0
    if not np.issubdtype(norms.dtype, np.number) or np.iscomplexobj(norms):
        raise ValueError(f"norms: must be real numbers, got dtype {norms.dtype}")
    lo, hi = norms.min(), norms.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        raise ValueError("norms: must be finite, got NaN or inf")
    if lo < 0:
        raise ValueError(f"norms: must be >= 0, got minimum {lo}")
    return float(hi) / clip


def _blocks(shape: tuple[int, int, int]):
    """(records, points) slices covering the ledger in blocks of about _CHUNK_ELEMENTS norms."""
    runs, records, n = shape
    pts_per = max(1, min(n, _CHUNK_ELEMENTS // runs))
    rec_per = max(1, _CHUNK_ELEMENTS // (runs * pts_per))
    for p0 in range(0, n, pts_per):
        for r0 in range(0, records, rec_per):
            yield slice(r0, r0 + rec_per), slice(p0, p0 + pts_per)


def _tables(q: float, noise_multiplier: float, orders: np.ndarray, u_hi: float) -> list:
    """One cached table per order."""
    tables = []
    for alpha in orders:
        tables.append(_order_table(q, noise_multiplier, float(alpha), u_hi))
    return tables


class _Table(NamedTuple):
    """g = log RDP - 2u on the uniform grid u0 + step * arange(len(values)); slopes[i] is
    values[i + 1] - values[i] (0 past the end)."""

    u0: float
    step: float
    values: np.ndarray
    slopes: np.ndarray


def _accumulate(out, norms, weights, clip, tables) -> None:
    """out[:, j] += sum over (run, record) of weights[record] * RDP at the chunk's ratios."""
    ratio = np.divide(norms, clip, dtype=np.float64)
    with np.errstate(divide="ignore"):
        u = np.log(ratio)
    r2 = np.square(ratio, out=ratio)
    for j, table in enumerate(tables):
        rdp = np.exp(_lookup(u, table))
        rdp *= r2
        for run in rdp:
            out[:, j] += weights @ run


def _lookup(u: np.ndarray, table: _Table) -> np.ndarray:
    """Linear interpolation of the table at u, constant beyond its ends."""
    pos = u - table.u0
    pos /= table.step
    np.clip(pos, 0, len(table.values) - 1, out=pos)
    idx = pos.astype(np.intp)
    pos -= idx
    g = table.slopes.take(idx)
    g *= pos
    g += table.values.take(idx)
    if not np.isfinite(table.values).all():
        g[np.isnan(g)] = np.inf  # next to a knot where the library's RDP is infinite
    return g


@functools.lru_cache(maxsize=32)
def _order_table(q: float, noise_multiplier: float, alpha: float, u_hi: float) -> _Table:
    """Table of g(u) = log RDP_SGM(alpha; q, noise_multiplier e^-u) - 2u on [u_lo, u_hi]."""
    knots, log_rdp = _library_knots(q, noise_multiplier, alpha, u_hi)
    if not np.isfinite(log_rdp).all():
        _warn_infinite(alpha, q, knots[~np.isfinite(log_rdp)])
    log_rdp = np.maximum.accumulate(log_rdp)
    return _uniform_table(knots, log_rdp - 2 * knots)


def _library_knots(q: float, noise_multiplier: float, alpha: float, u_hi: float):
    """Knots u (dyadic, refined by bisection) and log RDP_SGM at each, one library call per knot."""
    t_lo = min(_T_LO / math.sqrt(q), _T_LO_MAX)
    u_lo = math.log(noise_multiplier * math.sqrt(2 * t_lo))
    k_hi = round(u_hi / _COARSE_STEP)
    k_lo = min(math.floor(u_lo / _COARSE_STEP), k_hi - 1)
    knots = _COARSE_STEP * np.arange(k_lo, k_hi + 1)

    def log_rdp(u: np.ndarray) -> np.ndarray:
        rdp = [sgm_rdp(q, noise_multiplier * math.exp(-x), [alpha])[0] for x in u]
        with np.errstate(divide="ignore"):
            return np.log(rdp)

    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)  # one warning of ours instead of one per call
    try:
        return _refine(knots, log_rdp(knots), log_rdp)
    finally:
        absl_logging.set_verbosity(verbosity)


def _uniform_table(knots: np.ndarray, g: np.ndarray) -> _Table:
    """The piecewise-linear interpolant of (knots, g) on the uniform grid of the finest step.

    All knots are multiples of that (dyadic) step, so the interpolant is unchanged; the uniform
    grid turns each look-up into an index computation instead of a search.
    """
    step = float(np.diff(knots).min())
    grid = knots[0] + step * np.arange(round((knots[-1] - knots[0]) / step) + 1)
    with np.errstate(invalid="ignore"):
        values = np.interp(grid, knots, g)
        values[np.isnan(values)] = np.inf
        slopes = np.append(np.diff(values), 0.0)
    for arr in (values, slopes):
        arr.setflags(write=False)
    return _Table(float(knots[0]), step, values, slopes)


def _warn_infinite(alpha: float, q: float, log_ratios: np.ndarray) -> None:
    warnings.warn(
        f"dp_accounting gives no finite RDP at order {alpha} (q={q}) at ratios s/clip from "
        f"{math.exp(log_ratios.min()):.3g}; points at or above it get an infinite loss there",
        RuntimeWarning,
        stacklevel=5,
    )


def _refine(x: np.ndarray, y: np.ndarray, f):
    """Bisect intervals until each midpoint value is within _REFINE_TOL of the chord."""
    active = np.ones(len(x) - 1, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        xm = 0.5 * (x[idx] + x[idx + 1])
        ym = f(xm)
        with np.errstate(invalid="ignore"):
            dev = np.abs(ym - 0.5 * (y[idx] + y[idx + 1]))
            split = (dev > _REFINE_TOL) & (xm - x[idx] > _MIN_STEP)
        x, y = np.insert(x, idx + 1, xm), np.insert(y, idx + 1, ym)
        active = np.zeros(len(x) - 1, dtype=bool)
        left = idx + np.arange(len(idx))
        active[left] = split
        active[left + 1] = split
    return x, y
