"""Tests for per-instance RDP accounting (punl.engine.privacy) against dp_accounting."""
from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from dp_accounting import dp_event
from dp_accounting.rdp.rdp_privacy_accountant import RdpAccountant, compute_epsilon
from hypothesis import given, settings
from hypothesis import strategies as st

from punl.engine import privacy
from punl.engine.privacy import (
    INTERPOLATION_MAX_REL_ERROR,
    per_instance_epsilon,
    per_instance_rdp,
    sgm_rdp,
)

ORDERS = (2.0, 4.0, 8.0, 16.0, 32.0)


def _score(ratios, q, sigma, orders=ORDERS, clip=1.0):
    """Per-step RDP at each ratio s / clip (one run, one record of one step)."""
    norms = np.asarray(ratios, dtype=np.float64)[None, None, :] * clip
    return per_instance_rdp(
        norms, q=q, noise_multiplier=sigma, clip=clip, orders=orders, steps_per_record=1
    )


def _library_composed(q, sigma, orders, steps):
    accountant = RdpAccountant(list(orders))
    event = dp_event.PoissonSampledDpEvent(q, dp_event.GaussianDpEvent(sigma))
    accountant.compose(event, steps)
    return accountant.rdp


@pytest.mark.parametrize(
    "q, sigma, orders",
    [
        (0.01, 1.0, ORDERS),
        (0.001, 0.6, (2.0, 3.0, 64.0)),
        (0.25, 2.0, (2.5, 10.0, 12.5)),
        (1.0, 1.3, (1.1, 2.0, 32.0)),
    ],
)
def test_norms_at_clip_match_library_composition(q, sigma, orders):
    clip = 0.3
    steps = [3, 5, 2]
    norms = np.full((2, 3, 4), clip, dtype=np.float32)
    got = per_instance_rdp(
        norms, q=q, noise_multiplier=sigma, clip=clip, orders=orders, steps_per_record=steps
    )
    expected = _library_composed(q, sigma, orders, sum(steps))
    assert got.shape == (4, len(orders)) and got.dtype == np.float64
    np.testing.assert_allclose(got, np.broadcast_to(expected, got.shape), rtol=1e-6)


def test_full_batch_is_gaussian_mechanism():
    r = np.array([0.0, 1e-9, 1e-3, 0.2, 1.0, 3.7])
    sigma = 1.3
    got = _score(r, q=1.0, sigma=sigma)
    expected = np.outer(r**2, ORDERS) / (2 * sigma**2)
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=0)
    np.testing.assert_allclose(sgm_rdp(1.0, sigma, ORDERS), np.asarray(ORDERS) / (2 * sigma**2))


@pytest.mark.parametrize("q, sigma", [(0.001, 1.0), (0.01, 0.5), (0.2, 3.0)])
def test_per_step_loss_is_monotone_in_norm_on_dense_grid(q, sigma):
    r = np.concatenate([[0.0], np.logspace(-9, 0.7, 20_000)])
    got = _score(r, q, sigma)
    assert np.all(np.diff(got, axis=0) >= 0)
    assert np.all(got[1:] > 0)


@settings(max_examples=40, deadline=None)
@given(
    q=st.sampled_from([0.005, 0.1, 1.0]),
    sigma=st.sampled_from([0.7, 2.0]),
    ratios=st.lists(st.floats(0.0, 2.0, allow_nan=False), min_size=2, max_size=50),
)
def test_per_step_loss_is_monotone_in_norm(q, sigma, ratios):
    r = np.sort(np.asarray(ratios))
    got = _score(r, q, sigma, orders=(2.0, 8.0, 32.0))
    assert np.all(np.diff(got, axis=0) >= 0)


def _interpolation_error(q, sigma, orders, ratios):
    got = _score(ratios, q, sigma, orders)
    direct = np.array([sgm_rdp(q, sigma / r, orders) for r in ratios])
    return np.max(np.abs(got / direct - 1))


@pytest.mark.parametrize(
    "q, sigma",
    [(0.01, 1.0), (0.001, 1.0), (0.001, 0.5), (0.1, 0.8), (0.01, 4.0), (1.0, 1.0)],
)
def test_interpolation_error_against_library(q, sigma):
    rng = np.random.default_rng(7)
    ratios = np.concatenate(
        [
            np.exp(rng.uniform(math.log(1e-4), 0.0, 2_000)),
            1.0 - np.logspace(-9, -1, 40),
            [1.0],
        ]
    )
    assert _interpolation_error(q, sigma, ORDERS, ratios) < INTERPOLATION_MAX_REL_ERROR


def test_interpolation_error_fractional_orders_and_unclipped_ratios():
    rng = np.random.default_rng(8)
    ratios = np.exp(rng.uniform(math.log(1e-2), math.log(6.0), 300))
    err = _interpolation_error(0.02, 1.5, (2.5, 5.5, 12.25), ratios)
    assert err < INTERPOLATION_MAX_REL_ERROR


@pytest.mark.parametrize("q, sigma", [(0.01, 1.0), (0.001, 2.0), (0.3, 0.7)])
def test_small_ratios_follow_leading_order_below_the_table(q, sigma):
    r = np.logspace(-9, -6, 13)
    for alpha in ORDERS:
        assert privacy._order_table(q, sigma, alpha, 0.25).u0 > math.log(r[-1])
    got = _score(r, q, sigma)
    leading = np.outer(r**2, ORDERS) * q**2 / (2 * sigma**2)
    np.testing.assert_allclose(got, leading, rtol=1e-4)


def _exact_rdp(q, noise_multiplier, alpha):
    """RDP_SGM at integer alpha from the binomial sum for A_alpha, in 50-digit arithmetic."""
    mp = pytest.importorskip("mpmath")
    with mp.workdps(50):
        q, z = mp.mpf(q), mp.mpf(noise_multiplier)
        a = mp.fsum(
            mp.binomial(alpha, i) * q**i * (1 - q) ** (alpha - i) * mp.exp((i * i - i) / (2 * z**2))
            for i in range(alpha + 1)
        )
        return float(mp.log(a) / (alpha - 1))


@pytest.mark.parametrize("q, sigma", [(1e-4, 0.7), (0.001, 1.0), (0.3, 1.5)])
def test_against_high_precision_reference(q, sigma):
    r = np.array([1e-8, 1e-6, 1e-4, 1e-2, 0.3, 0.7, 1.0, 1.6])
    orders = (2.0, 8.0, 32.0)
    got = _score(r, q, sigma, orders)
    exact = np.array([[_exact_rdp(q, sigma / x, int(a)) for a in orders] for x in r])
    np.testing.assert_allclose(got, exact, rtol=2e-5)


def test_runs_average_and_uneven_records_match_direct_loop():
    rng = np.random.default_rng(3)
    q, sigma, clip = 0.05, 1.1, 2.0
    orders = (2.0, 5.0, 20.0)
    steps = np.array([1, 7, 3, 12])
    norms = rng.uniform(0.05, 1.3, size=(3, 4, 5)) * clip
    norms[0, 1, 2] = norms[2, 3, 0] = 0.0
    got = per_instance_rdp(
        norms, q=q, noise_multiplier=sigma, clip=clip, orders=orders, steps_per_record=steps
    )
    expected = np.zeros((5, len(orders)))
    for run in range(3):
        for rec in range(4):
            for x in range(5):
                s = norms[run, rec, x]
                if s > 0:
                    rdp = sgm_rdp(q, sigma * clip / s, orders)
                    expected[x] += steps[rec] * rdp / 3
    np.testing.assert_allclose(got, expected, rtol=INTERPOLATION_MAX_REL_ERROR)


def test_zero_norm_contributes_exactly_zero():
    kwargs = dict(q=0.01, noise_multiplier=1.0, clip=1.0, orders=ORDERS)
    zeros = np.zeros((2, 3, 4), dtype=np.float32)
    np.testing.assert_array_equal(per_instance_rdp(zeros, steps_per_record=5, **kwargs), 0.0)

    norms = np.array([[[0.5, 0.0], [0.0, 0.0], [0.8, 0.0]]])
    got = per_instance_rdp(norms, steps_per_record=[2, 9, 4], **kwargs)
    only_nonzero = per_instance_rdp(norms[:, [0, 2]], steps_per_record=[2, 4], **kwargs)
    assert np.all(got[1] == 0.0)
    np.testing.assert_allclose(got, only_nonzero, rtol=1e-12)


GOOD = dict(
    norms=np.ones((1, 2, 3)), q=0.01, noise_multiplier=1.0, clip=1.0, orders=ORDERS,
    steps_per_record=1,
)


@pytest.mark.parametrize(
    "change, name",
    [
        (dict(norms=np.ones((2, 3))), "norms"),
        (dict(norms=np.ones((1, 2, 3, 1))), "norms"),
        (dict(norms=-np.ones((1, 2, 3))), "norms"),
        (dict(norms=np.full((1, 2, 3), np.nan)), "norms"),
        (dict(norms=np.full((1, 2, 3), np.inf)), "norms"),
        (dict(orders=(2.0, 1.0)), "orders"),
        (dict(orders=(0.5,)), "orders"),
        (dict(orders=()), "orders"),
        (dict(q=0.0), "q"),
        (dict(q=1.5), "q"),
        (dict(clip=0.0), "clip"),
        (dict(noise_multiplier=0.0), "noise_multiplier"),
        (dict(noise_multiplier=-1.0), "noise_multiplier"),
        (dict(steps_per_record=[1, 2, 3]), "steps_per_record"),
        (dict(steps_per_record=[1, -2]), "steps_per_record"),
        (dict(steps_per_record=-1), "steps_per_record"),
    ],
)
def test_invalid_arguments_raise_naming_the_parameter(change, name):
    kwargs = {**GOOD, **change}
    norms = kwargs.pop("norms")
    with pytest.raises(ValueError, match=rf"^{name}:"):
        per_instance_rdp(norms, **kwargs)


def test_zero_noise_message_says_loss_is_infinite():
    kwargs = {**GOOD, "noise_multiplier": 0.0}
    norms = kwargs.pop("norms")
    with pytest.raises(ValueError, match="infinite"):
        per_instance_rdp(norms, **kwargs)


def test_library_non_convergence_warns_and_gives_infinite_loss():
    r = np.array([1e-3, 0.3, 0.95, 1.0])
    with pytest.warns(RuntimeWarning, match="no finite RDP"):
        got = _score(r, q=0.1, sigma=0.8, orders=(1.5, 4.0))
    assert np.all(np.isfinite(got[:2])) and np.all(np.isinf(got[2:, 0]))
    assert np.all(np.isfinite(got[:, 1]))


def test_epsilon_matches_library_per_point():
    rng = np.random.default_rng(5)
    rdp = rng.exponential(0.5, size=(200, len(ORDERS))) * np.asarray(ORDERS)
    rdp[0] = 0.0
    rdp[1, 2] = np.inf
    got = per_instance_epsilon(rdp, ORDERS, 1e-5)
    expected = [compute_epsilon(list(ORDERS), row, 1e-5)[0] for row in rdp]
    np.testing.assert_array_equal(got, expected)
    assert got[0] == 0.0 and np.isfinite(got[1])


def test_epsilon_is_monotone_in_the_privacy_loss():
    norms = np.linspace(0.0, 1.0, 50)[None, None, :]
    rdp = per_instance_rdp(
        norms, q=0.02, noise_multiplier=0.9, clip=1.0, orders=ORDERS, steps_per_record=500
    )
    eps = per_instance_epsilon(rdp, ORDERS, 1e-5)
    assert np.all(np.diff(eps) >= 0) and eps[-1] > eps[1] > 0
    scaled = per_instance_epsilon(rdp * 2.0, ORDERS, 1e-5)
    assert np.all(scaled >= eps)


@pytest.mark.parametrize(
    "rdp, orders, delta, name",
    [
        (np.ones((3, 4)), ORDERS, 1e-5, "rdp"),
        (-np.ones((3, 5)), ORDERS, 1e-5, "rdp"),
        (np.ones((3, 5)), ORDERS, 0.0, "delta"),
        (np.ones((3, 2)), (1.0, 2.0), 1e-5, "orders"),
    ],
)
def test_epsilon_invalid_arguments(rdp, orders, delta, name):
    with pytest.raises(ValueError, match=rf"^{name}:"):
        per_instance_epsilon(rdp, orders, delta)


def test_large_float32_ledger_matches_float64():
    rng = np.random.default_rng(11)
    norms = rng.uniform(0, 1.0, size=(2, 40, 3_000)).astype(np.float32)
    kwargs = dict(q=0.01, noise_multiplier=1.0, clip=1.0, orders=ORDERS, steps_per_record=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        got32 = per_instance_rdp(norms, **kwargs)
    got64 = per_instance_rdp(norms.astype(np.float64), **kwargs)
    np.testing.assert_array_equal(got32, got64)


def test_blocking_over_records_and_points_does_not_change_the_result(monkeypatch):
    rng = np.random.default_rng(13)
    norms = rng.uniform(0, 1.2, size=(3, 7, 11))
    kwargs = dict(q=0.02, noise_multiplier=0.9, clip=1.0, orders=ORDERS,
                  steps_per_record=rng.integers(0, 20, size=7))
    whole = per_instance_rdp(norms, **kwargs)
    monkeypatch.setattr(privacy, "_CHUNK_ELEMENTS", 5)
    np.testing.assert_allclose(per_instance_rdp(norms, **kwargs), whole, rtol=1e-12)
