"""Predicting a held-out point's steps: the scores' laws against constant predictors."""
import numpy as np
import pytest

from punl.analysis import pointpredict
from punl.analysis.claims import Choice
from punl.analysis.pointclaims import flag_distribution

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


def _published(study):
    """The per-point study's steps as a run publishes them (training points and placebo)."""
    return study.point_steps, study.scores


def test_forecast_recovers_the_law_and_the_request_is_its_slowest_point():
    """The law fitted on every point recovers the truth's a, b (the fit's scatter at 800
    points is a few percent; 25% is far outside it); one point's request is that point; the
    request's distribution, the product of the points' cdfs, matches the maximum of latent
    categories simulated from the same law (Monte Carlo, 20,000 draws: the quantiles are
    categories, so they agree exactly unless a cdf sits within sampling error of a quantile)."""
    truth = PointTruth(noise=8)
    study = make_point_study(truth)
    steps, scores = _published(study)
    ck = study.checkpoints
    one = pointpredict.predict_request(steps, scores, [5], "privacy_loss_a8", 0.05, ck)
    assert one.law.a == pytest.approx(truth.a, rel=0.25)
    assert one.law.b == pytest.approx(truth.b, rel=0.25)
    assert (one.steps, one.steps_low, one.steps_high) == tuple(
        one.points.loc[0, ["steps", "steps_low", "steps_high"]])
    request = [3, 17, 42, 108, 150]
    f = pointpredict.predict_request(steps, scores, request, "privacy_loss_a8", 0.05, ck)
    assert list(f.points["index"]) == request and f.fitted_points == truth.points
    assert f.steps >= f.points.steps.max()
    probs = pointpredict.latent_category_probabilities(f.points.x.to_numpy(), f.law, ck)
    rng = np.random.default_rng(0)
    draws = np.stack([rng.choice(len(ck) + 1, 20000, p=p / p.sum()) for p in probs]).max(0)
    simulated = [pointpredict.category_steps(np.quantile(draws, q, method="inverted_cdf"), ck)
                 for q in (0.05, 0.5)]
    assert [f.steps_low, f.steps] == pytest.approx(np.asarray(simulated, float))
    assert f.steps_low <= f.steps <= f.steps_high
    assert "the request (its slowest point)" in f.summary()


def test_predict_request_names_the_bad_option():
    from punl.analysis.predict import RequestError
    study = make_point_study(PointTruth())
    steps, scores = _published(study)
    ck = study.checkpoints
    for kwargs, option in [({"indices": [10 ** 6]}, "--indices"), ({"score": "nope"}, "--score"),
                           ({"level": 0.2}, "--level"), ({"coverage": 1.5}, "--coverage")]:
        args = {"indices": [1, 2], "score": "privacy_loss_a8", "level": 0.05, **kwargs}
        with pytest.raises(RequestError, match=option):
            pointpredict.predict_request(steps, scores, args.pop("indices"), args.pop("score"),
                                         args.pop("level"), ck, **args)
