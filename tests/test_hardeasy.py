"""The paper's loss-barrier figure in numbers (:mod:`punl.analysis.barriers`): the hardest and
easiest groups' controlled barriers at step 0 and after the budget, with Student's interval,
checked against a plain computation on a hand-made barriers table."""
import numpy as np
import pandas as pd
import pytest
from scipy import stats

from punl.analysis.barriers import (hard_easy_barriers, hard_easy_sentence, mean_interval,
                                    trend_interval)
from punl.analysis.measures import BarrierTrend


def barriers_table(rng: np.random.Generator, pairs: int = 6) -> pd.DataFrame:
    """Per group, partner, pair, step and side: a barrier drawn at random (forget points of the
    hardest group sit higher), with loss gap and distance."""
    rows = []
    for group, shift in (("top", 0.3), ("bottom", 0.0), ("q0", 0.0)):
        points = "flipped" if group == "top" else "clean"
        for partner in ("independent", "coupled"):
            for pair in range(pairs):
                for step in (0, 5, 10):
                    for side in ("forget", "control"):
                        rows.append({"score": "privacy_loss_a8", "group": group, "method": "sgld",
                                     "partner": partner, "pair": pair, "step": step,
                                     "subset": f"{side}-{points}",
                                     "barrier": rng.normal(shift * (side == "forget"), 0.1),
                                     "loss_gap": rng.normal(), "distance": 1.0})
    return pd.DataFrame(rows)


def test_hard_and_easy_barriers_match_a_plain_computation():
    b = barriers_table(np.random.default_rng(0))
    table = hard_easy_barriers(b, "sgld", 10, "privacy_loss_a8")
    assert set(zip(table.group, table.step)) == {("top", 0), ("top", 10), ("bottom", 0),
                                                 ("bottom", 10)}
    for r in table.itertuples():
        sel = b[(b.group == r.group) & (b.step == r.step) & (b.partner == "independent")]
        forget = sel[sel.subset.str.startswith("forget")].set_index("pair").barrier
        control = sel[sel.subset.str.startswith("control")].set_index("pair").barrier
        diff = (forget - control).to_numpy()
        low, high = stats.t.interval(0.95, len(diff) - 1, loc=diff.mean(), scale=stats.sem(diff))
        assert r.pairs == 6
        # the same sums in another order: equal to float rounding on any BLAS build
        assert r.controlled_barrier == pytest.approx(diff.mean(), abs=1e-12)
        assert (r.low, r.high) == pytest.approx((low, high), abs=1e-12)
    sentence = hard_easy_sentence(table, {"top": 50, "bottom": 50}, 10)
    assert "the hardest 50 (flipped points): from the original" in sentence
    assert "after 10 steps" in sentence and "n/a" not in sentence


def test_one_pair_has_no_interval_and_says_so():
    mean, low, high = mean_interval(np.array([0.4]))
    assert mean == pytest.approx(0.4) and np.isnan(low) and np.isnan(high)
    b = barriers_table(np.random.default_rng(1), pairs=1)
    sentence = hard_easy_sentence(hard_easy_barriers(b, "sgld", 10, "privacy_loss_a8"),
                                  {"top": 5, "bottom": 5}, 10)
    assert "one pair, no interval" in sentence and "n/a" not in sentence
    assert "has nothing to compare" in hard_easy_sentence(
        hard_easy_barriers(b[b.group == "q0"], "sgld", 10, "privacy_loss_a8"), {}, 10)


def test_a_trend_without_enough_groups_says_why():
    t = BarrierTrend(spearman=np.nan, low=np.nan, high=np.nan, groups=2)
    assert trend_interval(t) == "not measured (2 groups with enough points, 3 needed)"
    t = BarrierTrend(spearman=0.5, low=0.1, high=0.8, groups=9)
    assert trend_interval(t) == "0.5 [0.1, 0.8]"


def test_a_step_without_barriers_gives_no_rows_not_an_error():
    b = barriers_table(np.random.default_rng(2))
    table = hard_easy_barriers(b, "sgld", 99, "privacy_loss_a8")   # no barriers at step 99
    assert set(table.step) == {0}
    assert hard_easy_barriers(b, "finetune", 10, "privacy_loss_a8").empty
