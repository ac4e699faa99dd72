"""Membership inference: the statistic, the attack, its permutation null, the adjustment over
checkpoints, and the per-point criterion, on data whose truth is known."""
import numpy as np
import pytest
import torch

from punl.study.mia import (attack_accuracy, attack_track, centered, fold_resample,
                      gaussian_fit_accuracy, looks_adjusted,
                      gaussian_kl, group_status, lira_phi, min_p_adjusted,
                      permutation_p_values, relabellings, split_attack_accuracy,
                      steps_to_unlearn, welch_p_values)


def _phi(checkpoints, n_u, n_r, points, shift, rng, spread=5.0, noise=1.0):
    """[C, n_u + n_r, points]: per-point means far apart, the unlearned side shifted by
    ``shift[c]`` at checkpoint c."""
    base = rng.normal(size=points) * spread
    out = base + noise * rng.normal(size=(checkpoints, n_u + n_r, points))
    out[:, :n_u] += np.asarray(shift, float)[:, None, None]
    return out


def test_lira_phi_is_stable_and_exact():
    logits = torch.tensor([[2.0, 0.5, -1.0], [300.0, 0.0, -300.0]], dtype=torch.float64)
    y = torch.tensor([0, 0])
    p = torch.softmax(logits[0], 0)[0]
    assert float(lira_phi(logits, y)[0]) == pytest.approx(float(torch.log(p / (1 - p))), rel=1e-12)
    assert float(lira_phi(logits, y)[1]) == pytest.approx(300.0, rel=1e-9)  # p = 1 in float64


def test_attack_is_chance_on_one_distribution_and_high_on_separated_ones():
    rng = np.random.default_rng(0)
    same = [attack_accuracy(_phi(1, 8, 8, 50, [0], rng), (np.arange(16) < 8)[None],
                            rng.permutation(50) < 25)[0, 0] for _ in range(30)]
    assert abs(np.mean(same) - 0.5) < 0.02
    far = attack_track(_phi(2, 8, 8, 50, [6, 0], rng), 8, rng, 50, 50)
    assert far.accuracy[0] > 0.9 and far.ci_low[0] > 0.8 and far.p_value[0] < 0.05
    assert abs(far.accuracy[1] - 0.5) < 0.1


def test_batched_accuracy_equals_one_labelling_at_a_time():
    rng = np.random.default_rng(5)
    phi = _phi(3, 6, 6, 20, [1, 0.5, 0], rng)
    fold = rng.permutation(20) < 10
    labels = relabellings(6, 6, 5, rng)
    batched = attack_accuracy(phi, labels, fold)
    for j, lab in enumerate(labels):
        for c in range(3):
            u, r = centered(phi[c][lab], phi[c][~lab])
            assert batched[j, c] == pytest.approx(split_attack_accuracy(u, r, fold))


def test_centering_is_what_reveals_a_small_shift():
    rng = np.random.default_rng(1)
    base = rng.normal(size=60) * 10
    u, r = base + 1 + rng.normal(size=(8, 60)) * 0.5, base + rng.normal(size=(8, 60)) * 0.5
    fold = rng.permutation(60) < 30
    assert split_attack_accuracy(u, r, fold) < 0.65             # pooled raw values hide it
    cu, cr = centered(u, r)
    assert split_attack_accuracy(cu, cr, fold) > 0.8             # centered values show it


def test_relabellings_keep_the_design():
    rng = np.random.default_rng(2)
    free = relabellings(5, 7, 400, rng)
    assert free.shape == (400, 12) and (free.sum(1) == 5).all()
    assert 0.3 < free[:, 0].mean() < 0.55                       # every model lands on both sides
    paired = relabellings(4, 4, 400, rng, pairs=True)
    assert (paired[:, :4] != paired[:, 4:]).all()                # one of each pair per side
    with pytest.raises(ValueError, match="retrain_seeds"):
        relabellings(4, 5, 3, rng, pairs=True)


def test_permutation_and_min_p_adjustment_by_hand():
    observed = np.array([0.9, 0.5])
    null = np.array([[0.5, 0.6], [0.6, 0.4], [0.95, 0.5], [0.55, 0.45]])
    p = permutation_p_values(observed, null)
    assert p.tolist() == [2 / 5, 3 / 5]
    # relabelling j's own p at checkpoint k: #{i: null_ik >= null_jk} / 4, so its smallest
    # over the checkpoints is min(4, 1)/4, min(2, 4)/4, min(1, 2)/4, min(3, 3)/4
    adjusted = min_p_adjusted(observed, null)
    assert adjusted.tolist() == [(1 + 2) / 5, (1 + 3) / 5]
    assert (adjusted >= p).all()


def test_the_null_holds_its_level_over_repeated_looks():
    """Two samples of one distribution (the retrained side against itself, at the attack's
    design: 8 vs 8 models, 40 points, 6 correlated checkpoints) are called distinguishable at
    any checkpoint in at most the level's share of repeats (plus the Monte Carlo error)."""
    rng = np.random.default_rng(3)
    level, repeats, false = 0.1, 150, 0
    for _ in range(repeats):
        base = _phi(1, 8, 8, 40, [0], rng)
        phi = base + 0.3 * rng.normal(size=(6, 16, 40))          # checkpoints share the models
        track = attack_track(phi, 8, rng, n_permutations=99, n_bootstrap=2)
        false += bool((track.adjusted_p <= level).any())
    rate, se = false / repeats, np.sqrt(level * (1 - level) / repeats)
    assert rate <= level + 2.5 * se, rate


def test_a_real_difference_is_found_and_unlearning_is_read_from_it():
    rng = np.random.default_rng(4)
    shift = [2.0, 1.0, 0.5, 0.0, 0.0, 0.0]
    track = attack_track(_phi(6, 10, 10, 50, shift, rng), 10, rng, 199, 20)
    distinguishable = track.adjusted_p <= 0.05
    assert distinguishable[:2].all() and not distinguishable[3:].any()
    assert track.divergence[0] > track.divergence_null_q95[0] > track.divergence[-1] * 0.5
    steps, censored = steps_to_unlearn(np.array([0, 1, 2, 4, 8, 16]), distinguishable)
    assert not censored and steps in (4, 8)
    assert group_status(distinguishable) == "unlearned"
    assert group_status(np.zeros(6, bool)) == "never distinguishable"
    assert group_status(np.ones(6, bool)) == "censored"


def test_bootstrap_interval_covers_the_truth_near_its_nominal_rate():
    rng = np.random.default_rng(2)
    covered, trials = 0, 60
    for _ in range(trials):
        track = attack_track(_phi(1, 6, 6, 40, [0], rng), 6, rng, 20, 100)
        covered += track.ci_low[0] <= 0.5 <= track.ci_high[0]
    assert covered / trials >= 0.8


def test_bootstrap_interval_is_centred_on_its_estimate_under_the_null():
    """Unlearned and retrained values from one distribution (16 vs 16 models, 50 points): the
    midpoint of the bootstrap interval sits on the estimate, on average over repeats within
    +-0.002 (the mean's standard error here is about 0.0006). Resampling points across the two
    halves of the split put copies of a point on both sides and biased it by about +0.01."""
    rng = np.random.default_rng(11)
    offsets = []
    for _ in range(200):
        track = attack_track(_phi(1, 16, 16, 50, [0], rng), 16, rng, 20, 200)
        offsets.append((track.ci_low[0] + track.ci_high[0]) / 2 - track.accuracy[0])
    assert abs(np.mean(offsets)) <= 0.002, np.mean(offsets)


def test_fold_resample_keeps_every_point_in_its_half():
    rng = np.random.default_rng(12)
    halves = [np.array([0, 2, 4]), np.array([1, 3, 5, 7])]
    pick = fold_resample(halves, rng)
    assert set(pick[:3]) <= {0, 2, 4} and set(pick[3:]) <= {1, 3, 5, 7} and len(pick) == 7


def test_gaussian_kl_matches_the_closed_form_and_vanishes_on_one_distribution():
    rng = np.random.default_rng(6)
    u, r = rng.normal(1.0, 2.0, (20000, 1)), rng.normal(0.0, 1.0, (20000, 1))
    expected = np.log(1 / 2) + (4 + 1) / 2 - 0.5
    assert gaussian_kl(u, r)[0] == pytest.approx(expected, rel=0.03)
    same = gaussian_kl(rng.normal(size=(20000, 3)), rng.normal(size=(20000, 3)))
    assert np.all(same < 1e-3)


def test_welch_p_values_match_scipy_per_point():
    from scipy import stats
    rng = np.random.default_rng(7)
    phi = rng.normal(size=(16, 5))
    phi[:8, 0] += 3
    p = welch_p_values(phi, (np.arange(16) < 8)[None])[0]
    ref = stats.ttest_ind(phi[:8], phi[8:], equal_var=False).pvalue
    np.testing.assert_allclose(p, ref)
    assert p[0] < 1e-3 < p[1:].min() or p[0] < p[1:].min()


def test_gaussian_fit_accuracy():
    rng = np.random.default_rng(3)
    far = gaussian_fit_accuracy(rng.normal(5, 1, (50, 4)), rng.normal(0, 1, (50, 4)))
    assert np.all(far > 0.95)
    same = gaussian_fit_accuracy(rng.normal(0, 1, (2000, 4)), rng.normal(0, 1, (2000, 4)))
    assert np.all(same < 0.56)


def test_steps_to_unlearn_requires_staying_below_and_censors():
    steps = np.array([0, 1, 3, 10])
    d = np.array([[True, True, True], [False, True, True], [True, False, True], [False, False, True]])
    got, cens = steps_to_unlearn(steps, d)
    # point 0 dips at step 1 but is distinguishable again at 3: it counts from step 10
    assert got.tolist() == [10, 3, 10] and cens.tolist() == [False, False, True]


def test_looks_adjustment_by_hand_and_along_any_axis():
    p = np.array([0.01, 0.04, 0.3, 0.5])
    assert looks_adjusted(p) == pytest.approx([0.04, 0.16, 1.0, 1.0])
    stacked = np.stack([p, p[::-1]], axis=1)                 # looks along axis 0
    assert looks_adjusted(stacked, 0)[:, 1] == pytest.approx(looks_adjusted(p[::-1]))
    assert looks_adjusted(stacked.T, 1) == pytest.approx(looks_adjusted(stacked, 0).T)


def test_the_per_point_criterion_holds_its_level_over_the_looks():
    """Points that never differ (both sides from one distribution, 9 correlated looks): the
    share flagged at some look is at most the level (plus Monte Carlo error) with the
    adjustment over the looks; without it, about a quarter of them were."""
    rng = np.random.default_rng(8)
    level, points = 0.05, 4000
    base = rng.normal(size=(1, 32, points))
    phi = base + 0.7 * rng.normal(size=(9, 32, points))          # looks share the models
    p = welch_p_values(phi, (np.arange(32) < 16)[None])[0]        # [looks, points]
    flagged = (looks_adjusted(p, 0) <= level).any(0)
    se = np.sqrt(level * (1 - level) / points)
    assert flagged.mean() <= level + 2 * se, flagged.mean()
    assert (p <= level).any(0).mean() > 2 * level                  # uncorrected looks
