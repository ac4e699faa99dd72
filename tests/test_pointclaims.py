"""The per-point study's steps and claims on synthetic per-point tests with a known truth
(:func:`synthetic.make_point_study`): each point's recorded step follows a chosen law of a chosen
score, delayed by chance flags at its later looks as real points are."""
import numpy as np
import pandas as pd
import pytest

from punl.analysis import claims, pointclaims
from punl.analysis.pointclaims import point_steps
from punl.core.tables import POINT_TESTS

from synthetic import PointTruth, make_point_study

MAIN = claims.Choice(0.05, "all", "privacy_loss_a8")


def _verdict(truth: PointTruth, claim) -> str:
    return claim(make_point_study(truth), MAIN).verdict


def test_point_steps_by_hand():
    """Three points over four looks (level 0.05: flagged where p <= 0.0125)."""
    p = {0: [0.001, 0.001, 0.5, 0.9], 1: [0.9, 0.8, 0.7, 0.6], 2: [0.001, 0.5, 0.4, 0.01]}
    rows = [{"set": "train", "index": i, "method": "sgld", "design": "all", "step": k,
             "models": 30, "mean_unlearned": 0.0, "mean_retrained": 0.0, "sd_unlearned": 1.0,
             "sd_retrained": 1.0, "t": 0.0, "p_value": p[i][c], "effect": 0.5, "kl": 0.1}
            for i in p for c, k in enumerate([0, 1, 5, 20])]
    table = point_steps(POINT_TESTS.frame(rows), levels=(0.05,)).set_index("index")
    assert table.status.tolist() == ["unlearned", "never distinguishable", "censored"]
    assert table.steps_to_unlearn.tolist() == [5, 0, 20]
    assert table.adjusted_p_step0.tolist() == pytest.approx([0.004, 1.0, 0.004])
    assert table.min_adjusted_p.tolist() == pytest.approx([0.004, 1.0, 0.004])


def test_the_placebo_is_flagged_at_most_at_the_level():
    study = make_point_study(PointTruth())
    rate = pointclaims.placebo_rate(study.point_steps, 0.05)
    assert rate.points == 600 and rate.rate <= 0.05 + 2 * rate.se


def test_claim_1_on_points():
    assert _verdict(PointTruth(tail=0.05), claims.claim_quick) == "supported"
    # most points slow: the quick share's interval lies below one half
    assert _verdict(PointTruth(law="none", shift=300), claims.claim_quick) == "not supported"
    # nothing hard beyond the placebo's chance flags: within the margin of 1% of points
    assert _verdict(PointTruth(law="none", noise=5), claims.claim_quick) == "not supported"
    # a few hard points at a share the placebo's noise cannot separate
    assert _verdict(PointTruth(), claims.claim_quick) == "inconclusive"


def test_claim_2_on_points_models_the_placebos_false_flags():
    assert _verdict(PointTruth(), claims.claim_log) == "supported"
    assert _verdict(PointTruth(law="line"), claims.claim_log) == "not supported"
    assert _verdict(PointTruth(law="none", noise=5), claims.claim_log) == "inconclusive"


def test_claim_3_on_points():
    assert _verdict(PointTruth(baseline_noise=1.5), claims.claim_metrics) == "supported"
    assert _verdict(PointTruth(driver="el2n"), claims.claim_metrics) == "not supported"
    assert _verdict(PointTruth(law="none", shift=300), claims.claim_metrics) == "inconclusive"
    # a baseline equal to P picks out the same points: equivalent within the margin
    assert _verdict(PointTruth(baseline_noise=0.0), claims.claim_metrics) == "not supported"


def test_claims_table_decides_1_to_3_on_points_with_power_and_neighbours():
    study = make_point_study(PointTruth(baseline_noise=1.5, tail=0.05))
    table = claims.claims_table(study).set_index("claim")
    one = table.loc[table.index[0]]
    assert "of 800 points" in one.value and one.measure.startswith("share of training points")
    assert np.isfinite(table.power.iloc[:4]).all() and (table.power.iloc[:4] <= 1).all()
    assert "half the models" in one.neighbours and "alpha 4" in table.neighbours.iloc[1]


def test_hardest_comparison_recuts_the_sets_in_each_resample():
    """With steps decided by P alone, the hardest m by P is at least as hard as by any other
    ordering, so every difference is >= 0; intervals hold the estimate."""
    rng = np.random.default_rng(0)
    n = 400
    rows = pd.DataFrame({"p": rng.permutation(n).astype(float), "b": rng.normal(size=n)})
    rows["steps_to_unlearn"] = rows.p.astype(int)
    rows["censored"] = False
    d = pointclaims.hardest_comparison(rows, "p", ["b"], 1000, rng, n_boot=100)
    assert (d.difference > 0).all() and (d.low <= d.difference).all() and \
        (d.difference <= d.high).all()
    assert list(d.m) == [20, 40]


def test_design_power_matches_a_simulated_welch_test():
    """The smallest effect detected with 80% power at the per-look level, checked by
    simulating Welch's test at that effect (an independent oracle: scipy's t-test on normal
    samples; 2,000 repeats, Monte Carlo sd 0.009)."""
    from scipy import stats
    rows = pd.DataFrame({"models": [40] * 10, "effect_step0": np.linspace(0, 2, 10)})
    power = pointclaims.design_power(rows, looks=9, level=0.05)
    assert power.models_per_side == 40 and power.alpha_look == pytest.approx(0.05 / 9)
    rng = np.random.default_rng(1)
    u = rng.normal(power.mde, 1, (2000, 40))
    r = rng.normal(0, 1, (2000, 40))
    hits = stats.ttest_ind(u, r, axis=1, equal_var=False).pvalue <= power.alpha_look
    assert hits.mean() == pytest.approx(0.8, abs=0.03)


def test_point_findings_come_from_the_claims_analyses():
    from punl.analysis import findings
    from punl.analysis.measures import fmt, percent
    study = make_point_study(PointTruth(tail=0.05))
    table = claims.claims_table(study)
    found = findings.point_findings(study, table, 160, 0.25)
    quick = pointclaims.quick_claim(study.points(MAIN), study.points(MAIN, "placebo"),
                                    study.budget, study.training_steps)
    assert found["quick_share"] == percent(quick.quick)
    assert found["hard_placebo"] == percent(quick.hard_placebo)
    assert found["points"] == "800" and found["placebo_points"] == "600"
    assert found["claim_1"] == table.verdict.iloc[0] + (", fragile" if table.fragile.iloc[0] else "")
    law = claims.law_result(study, MAIN).law
    assert fmt(law.statistic, 3) in found["law_clause"]
    assert all(isinstance(v, str) for v in found.values())


def test_claim_1_needs_a_design_that_resolves_points():
    """A design that resolves nothing (every p-value uniform, training points like the
    placebo's): the quick share is all points, yet the claim is not decided either way."""
    study = make_point_study(PointTruth(law="none", noise=1e-6, shift=-1000))
    r = pointclaims.quick_claim(study.points(MAIN), study.points(MAIN, "placebo"),
                                study.budget, study.training_steps)
    assert r.quick > 0.9 and not r.resolved and r.ok is None


def test_newcombe_interval_keeps_its_width_at_zero_shares():
    low, high = pointclaims.difference_interval(0, 1000, 0, 500)
    assert low < 0 < high and high > 0.003          # no events: still an interval, not [0, 0]
    low, high = pointclaims.difference_interval(60, 1000, 5, 500)
    assert low < 0.05 < high


def test_the_front_pages_fits_are_claim_2s():
    """The front page refits claim 2's two laws from the published tables alone
    (:func:`pointclaims.point_overview`, no simulations); they must be the claim's own fits.
    Both run the same deterministic optimiser on the same data, so they agree to its
    tolerance on any BLAS build (relative 1e-6)."""
    study = make_point_study(PointTruth())
    law = claims.law_result(study, MAIN).law
    overview = pointclaims.point_overview(study.point_steps, study.scores, MAIN.p_column,
                                          MAIN.level, study.checkpoints)
    assert len(overview.rows) == len(study.points(MAIN))
    assert len(overview.placebo) == len(study.points(MAIN, "placebo"))
    for mine, theirs in ((overview.log_law, law.log_law), (overview.line, law.line)):
        assert mine.log_likelihood == pytest.approx(theirs.log_likelihood, rel=1e-6)
        assert mine.sigma == pytest.approx(theirs.sigma, rel=1e-6)
    assert overview.log_law.a == pytest.approx(law.log_law.a, rel=1e-6)
    assert overview.line.slope == pytest.approx(law.line.slope, rel=1e-6)
    empty = study.point_steps.iloc[:0]
    assert pointclaims.point_overview(empty, study.scores, MAIN.p_column, MAIN.level,
                                      study.checkpoints) is None
