"""Predicting a held-out point's steps: the scores' laws against constant predictors."""
import numpy as np
import pandas as pd
import pytest

from punl import pointpredict
from punl.claims import Choice
from punl.pointclaims import flag_distribution

from synthetic import CHECKPOINTS, PointTruth, make_point_study

MAIN = Choice(0.05, "all", "privacy_loss_a8")


def test_heldout_mask_takes_a_tenth_and_at_least_fifty():
    assert pointpredict.heldout_mask(2000, 0).sum() == 200
    assert pointpredict.heldout_mask(300, 0).sum() == 50
    assert pointpredict.heldout_mask(20, 0).sum() == 17
    assert (pointpredict.heldout_mask(300, 1) == pointpredict.heldout_mask(300, 1)).all()


def test_category_steps_reads_never_as_zero_and_censored_as_the_budget():
    steps = pointpredict.category_steps(np.arange(len(CHECKPOINTS) + 1), CHECKPOINTS)
    assert steps.tolist() == [0, *CHECKPOINTS[1:].tolist(), CHECKPOINTS[-1]]


def test_a_score_that_drives_the_steps_beats_the_constants():
    study = make_point_study(PointTruth(noise=8))
    rows = study.points(MAIN)
    flags = flag_distribution(study.points(MAIN, "placebo"), study.checkpoints)
    predicted = pointpredict.point_predictions(rows, ["privacy_loss_a8", "el2n"],
                                               study.checkpoints, flags, seed=0)
    v = pointpredict.point_validation(predicted).set_index("predictor")
    assert list(v.index) == ["0 steps", "median", "privacy_loss_a8", "el2n"]
    assert (v.points == 80).all()
    assert v.loc["privacy_loss_a8", "mae"] < min(v.loc["0 steps", "mae"], v.loc["median", "mae"])
    assert v.loc["privacy_loss_a8", "spearman"] > v.loc["el2n", "spearman"] > 0
    assert v.loc["privacy_loss_a8", "coverage"] >= 0.8
    zero = predicted[predicted.predictor == "0 steps"]
    # the constant 0 covers exactly the points recorded never distinguishable
    assert (zero.covered == (zero.measured_steps == 0)).all()
