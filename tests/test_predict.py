"""Predicting the cost of a deletion request: the fits recover a known law from synthetic group
tables within their intervals, out-of-range requests are flagged, bad requests and runs get one
clear error each, and the validation and adaptive tables count what they say."""
import json

import numpy as np
import pandas as pd
import pytest

from punl.analysis import heldout, predict
from punl.commands.cli import main, read_indices
from punl.core.config import Config
from punl.core.outputs import Publication
from punl.analysis.predict import MeasuredRun, RequestError
from punl.core.tables import ATTACK, POINTS, STEPS

P = "privacy_loss_a8"
CHECKPOINTS = np.array([0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512])
K = int(CHECKPOINTS[-1])
TRUE_A, TRUE_B, TRUE_SIGMA = 80.0, 0.02, 20.0


def log_law(x):
    return TRUE_A * np.log1p(TRUE_B * np.asarray(x, float))


def measured(steps: float) -> tuple[str, int, bool]:
    """(status, steps, censored) the run's criterion reports for a group needing ``steps``."""
    if steps <= 0:
        return "never distinguishable", 0, False
    if steps > K:
        return "censored", K, True
    return "unlearned", int(CHECKPOINTS[np.searchsorted(CHECKPOINTS, steps)]), False


def synthetic_run(x_calib, steps_calib, x_held=(), steps_held=(), held_kind="heldout_random",
                  m=10, extra_points=()) -> MeasuredRun:
    """A run whose groups of m points each have every point at score x_g and need the given
    steps; held-out groups are labelled r0, r1, ... (or mix0.. for mixed). ``extra_points``:
    scores of points in no group."""
    rng = np.random.default_rng(0)
    prefix = {"heldout_random": "r", "heldout_mixed": "mix", "heldout_class": "cls"}[held_kind]
    groups = [(f"q{g}", "quantile", x, s) for g, (x, s) in enumerate(zip(x_calib, steps_calib))]
    groups += [(f"{prefix}{j}", held_kind, x, s) for j, (x, s) in enumerate(zip(x_held, steps_held))]
    steps, points, attack, scores = [], [], [], []
    index = 0
    for label, kind, x, true in groups:
        status, k, censored = measured(true)
        amplitude = 0.01 * x ** 0.5 * np.exp(rng.normal(0, 0.2))
        steps.append({"score": P, "group": label, "kind": kind, "method": "sgld", "level": 0.05,
                      "design": "all", "group_score_median": x, "status": status,
                      "steps_to_unlearn": k, "censored": censored, "mia_acc_step0": 0.6,
                      "adjusted_p_step0": 0.01, "response_amplitude": amplitude,
                      "response_rate": 0.05, "response_floor": 0.0, "steps_to_null_q95": 0.0})
        for c in CHECKPOINTS:
            distinguishable = censored or (status == "unlearned" and c < k)
            attack.append({"score": P, "group": label, "method": "sgld", "design": "all",
                           "step": int(c), "n_unlearned": 8, "n_reference": 8, "mia_acc": 0.6,
                           "mia_ci_low": 0.55, "mia_ci_high": 0.65, "null_mean": 0.5,
                           "null_q95": 0.53, "p_value": 0.01,
                           "adjusted_p": 0.001 if distinguishable else 0.5, "divergence": 0.1,
                           "divergence_null_mean": 0.05, "divergence_null_q95": 0.08})
        for _ in range(m):
            points.append({"index": index, "score": P, "group": label, "method": "sgld",
                           "step": 0, "flipped": False, "welch_p": 0.5, "kl": 0.1})
            scores.append({"index": index, "label": index % 3, P: x})
            index += 1
    for x in extra_points:
        scores.append({"index": index, "label": index % 3, P: x})
        index += 1
    scores = pd.DataFrame(scores)
    scores["avg_grad_norm"] = np.log1p(scores[P]) + rng.normal(0, 0.5, len(scores))
    scores["el2n"] = rng.uniform(0.1, 1.0, len(scores))
    scores["final_loss"] = rng.uniform(0.01, 2.0, len(scores))
    return MeasuredRun(scores, STEPS.frame(steps), POINTS.frame(points), ATTACK.frame(attack),
                       P, "sgld", 0.05, 300)


def draw(x, seed):
    return log_law(x) + np.random.default_rng(seed).normal(0, TRUE_SIGMA, len(x))


X_CALIB = np.geomspace(0.5, 5000, 40)


@pytest.fixture(scope="module")
def known_law():
    """A run of 40 groups whose steps follow the log law plus Gaussian noise."""
    return synthetic_run(X_CALIB, draw(X_CALIB, 1), extra_points=[20000.0] * 5 + [0.1] * 5)


def test_the_predictor_recovers_a_known_log_law_within_its_interval(known_law):
    model = predict.fit_cost_model(known_law, P, "mean")
    assert model.steps_fit.groups == 40 and model.calibration_size == 10
    for x in np.geomspace(1, 3000, 7):
        p = model.at(x)
        assert p.steps_low <= log_law(x) <= p.steps_high, x
        assert p.checkpoint_low <= p.checkpoint <= p.checkpoint_high
        assert p.outside_range == ""


def coverage_of_new_draws(seed: int) -> tuple[float, float]:
    """Fit on one draw of the 40 groups, then the share of 300 new groups from the same law
    inside the interval: read continuously, and on the checkpoints as the run measures them."""
    model = predict.fit_cost_model(synthetic_run(X_CALIB, draw(X_CALIB, seed)), P, "mean")
    rng = np.random.default_rng(seed + 100)
    x_new = rng.choice(X_CALIB, 300)
    true = log_law(x_new) + rng.normal(0, TRUE_SIGMA, 300)
    preds = [model.at(x) for x in x_new]
    inside = np.mean([p.steps_low <= max(t, 0) <= p.steps_high for p, t in zip(preds, true)])
    on_grid = np.mean([p.checkpoint_low <= predict.measured_checkpoint(*measured(t)[:2])
                       <= p.checkpoint_high for p, t in zip(preds, true)])
    return inside, on_grid


def test_the_90_percent_interval_covers_about_90_percent_of_new_groups():
    inside, on_grid = np.mean([coverage_of_new_draws(seed) for seed in range(1, 11)], axis=0)
    assert 0.86 <= inside <= 0.96, inside
    assert inside <= on_grid <= 1.0       # a measured checkpoint is an interval: read generously


def test_the_amplitude_fit_recovers_its_power_law(known_law):
    amp = predict.fit_cost_model(known_law, P, "mean").amplitude_fit
    assert amp.slope == pytest.approx(0.5, abs=0.05)
    lo, hi = amp.interval(100.0)
    assert lo < 0.01 * 100 ** 0.5 < hi


def test_a_request_outside_the_calibrated_range_is_flagged(known_law):
    n = len(known_law.scores)
    above = predict.predict(known_law, np.arange(n - 10, n - 5))      # P = 20000 > 5000
    below = predict.predict(known_law, np.arange(n - 5, n))           # P = 0.1 < 0.5
    inside = predict.predict(known_law, np.arange(100, 110))          # one calibration group
    assert (above.outside_range, below.outside_range, inside.outside_range) == \
        ("above", "below", "")
    assert "outside the calibrated range" in above.summary()
    assert "5 points, the calibration groups 10" in above.summary()
    assert inside.notes() == [] and "note" not in inside.summary()
    assert above.steps > inside.steps > below.steps


@pytest.mark.parametrize("indices,message", [
    ([], "the request is empty"),
    ([3, 5, 10 ** 6], "index 1000000 is out of range: the run has 410 training points"),
    ([-1, 4], "index -1 is out of range"),
    ([3, 7, 3, 3], "index 3 is listed 3 times"),
    ([1.5, 2], "integer training indices"),
], ids=["empty", "too-large", "negative", "duplicate", "fraction"])
def test_each_bad_request_gets_one_clear_error(known_law, indices, message):
    with pytest.raises(RequestError, match=message):
        predict.predict(known_law, indices)


def test_bad_choices_are_named(known_law):
    for kwargs, message in [({"score": "nope"}, "--score"), ({"aggregate": "mode"}, "--aggregate"),
                            ({"method": "finetune"}, "--method"), ({"level": 0.2}, "--level"),
                            ({"eps": -1.0}, "--eps"), ({"coverage": 1.5}, "--coverage")]:
        with pytest.raises(RequestError, match=message):
            predict.predict(known_law, [0, 1], **kwargs)


def test_too_few_groups_cannot_be_fitted():
    run = synthetic_run([1, 10, 100], [0, 20, 60])
    with pytest.raises(RequestError, match="3 measured groups.*at least 4"):
        predict.predict(run, [0, 1])


def test_divergence_target_predicts_steps_to_reach_eps():
    x = np.geomspace(1, 1000, 12)
    run = synthetic_run(x, log_law(x))
    low = predict.predict(run, np.arange(0, 10), eps=1e-4)
    high = predict.predict(run, np.arange(0, 10), eps=1.0)
    assert low.criterion == "excess divergence down to 0.0001" and not low.on_checkpoints
    assert low.steps >= high.steps


# ------------------------------------------------------------------------ held-out requests
def test_validation_counts_coverage_rank_and_error():
    x = np.geomspace(1, 1000, 20)
    held_x = np.array([2.0, 20.0, 200.0, 900.0])
    run = synthetic_run(x, log_law(x), held_x, [0.0, log_law(20.0), log_law(200.0), 10 * K])
    held = heldout.heldout_predictions(run)
    assert set(held.score) == {P, "avg_grad_norm", "el2n", "final_loss"}
    assert len(held) == 4 * 3 * 4
    mine = held[(held.score == P) & (held.aggregation == "mean")].set_index("group")
    assert mine.loc["r3", "censored"] and mine.loc["r0", "status"] == "never distinguishable"
    # the censored request is covered only when the interval passes K, and its error counts at K
    assert mine.loc["r3", "steps_covered"] == np.isinf(mine.loc["r3", "checkpoint_high"])
    assert mine.loc["r3", "steps_error"] == pytest.approx(K - min(mine.loc["r3", "predicted_steps"], K))
    assert mine.loc["r1", "steps_covered"]
    table = heldout.validation_table(held, K)
    row = table[(table.score == P) & (table.aggregation == "mean") & (table.requests == "all")].iloc[0]
    assert row.n_requests == 4 and row.censored == 1
    assert row.steps_coverage == pytest.approx(mine.steps_covered.mean())
    assert row.steps_mae == pytest.approx(mine.steps_error.mean())
    assert row.steps_spearman == pytest.approx(1.0)          # the ranks agree, censored on top
    assert set(table.requests) == {"all", "heldout_random"}


def test_the_max_ranks_mixed_requests_the_median_misses():
    """Requests of mostly easy points with a few hard ones: the hard ones set the cost."""
    x = np.geomspace(1, 1000, 20)
    run = synthetic_run(x, log_law(x))
    rows, scores = [], run.scores.copy()
    n = len(scores)
    for j, hard in enumerate([2.0, 30.0, 300.0, 3000.0]):
        idx = np.arange(n + 10 * j, n + 10 * j + 10)
        values = np.r_[[hard] * 2, [1.0] * 8]
        scores = pd.concat([scores, pd.DataFrame({"index": idx, "label": 0, P: values,
                                                  "avg_grad_norm": 1.0, "el2n": 0.5,
                                                  "final_loss": 0.5})])
        rows.append(idx)
    run = MeasuredRun(scores.reset_index(drop=True), run.steps, run.points, run.attack, P, "sgld",
                      0.05, 300)
    by = {how: [predict.predict(run, idx, aggregate=how).steps for idx in rows]
          for how in ("max", "median")}
    assert np.all(np.diff(by["max"]) > 0) and np.ptp(by["median"]) < 1e-9


def test_adaptive_rule_on_recorded_checkpoints():
    assert heldout.recorded_looks(5, CHECKPOINTS) == [8, 16, 32, 64, 128, 256, 512]
    assert heldout.recorded_looks(0, CHECKPOINTS)[:3] == [0, 1, 2]
    assert heldout.recorded_looks(1e6, CHECKPOINTS) == [512]
    x = np.geomspace(1, 1000, 20)
    # held-out requests unlearned at 16, 64 and censored
    run = synthetic_run(x, log_law(x), [5.0, 50.0, 900.0], [10.0, 50.0, 10 * K])
    held = heldout.heldout_predictions(run)
    held = held[(held.score == P) & (held.aggregation == "mean")].copy()
    held["predicted_steps"] = [4.0, 4.0, 4.0]              # first look at 5 -> checkpoint 8
    table = heldout.adaptive_table(run, held).set_index("group")
    assert table.loc["r0", "steps_used"] == 16 and table.loc["r0", "looks"] == 2
    assert table.loc["r1", "steps_used"] == 64 and table.loc["r1", "success"]
    assert table.loc["r2", "steps_used"] == K and not table.loc["r2", "passed"]
    assert not table.loc["r2", "success"]
    comparison = heldout.adaptive_comparison(table.reset_index(), CHECKPOINTS).iloc[0]
    assert comparison.adaptive_success == pytest.approx(2 / 3)
    assert comparison.adaptive_total_steps == 16 + 64 + K
    assert comparison.fixed_budget == 64 and comparison.fixed_total_steps == 3 * 64


# --------------------------------------------------------------------------- command line
def publish_run(folder, run: MeasuredRun, tables=("scores", "steps", "points", "attack")):
    """Publish ``run``'s tables (or some of them) with a run.json as a run would."""
    publication = Publication(folder)
    publication.begin()
    frames = {"scores": run.scores, "steps": run.steps, "points": run.points, "attack": run.attack}
    record = {"config": Config(n_groups=2).to_dict(),
              "tables": publication.write_tables({t: frames[t] for t in tables})}
    publication.write_record(record)
    publication.commit()
    return folder


def test_predict_command_prints_a_prediction(known_law, tmp_path, capsys):
    folder = publish_run(tmp_path / "run", known_law)
    (tmp_path / "request.txt").write_text("100\n101\n102\n")
    assert main(["predict", str(folder), "--indices", str(tmp_path / "request.txt")]) == 0
    out = capsys.readouterr().out
    assert "request of 3 points" in out and "interval" in out
    assert main(["predict", str(folder), "--indices", "100,101", "--aggregate", "max",
                 "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["aggregate"] == "max" and record["size"] == 2
    assert record["steps_low"] <= record["steps"] <= record["steps_high"]


@pytest.mark.parametrize("argv,message", [
    (["--indices", "1,2,1"], "punl: --indices: index 1 is listed 2 times"),
    (["--indices", "1,99999"], "punl: --indices: index 99999 is out of range"),
    (["--indices", ","], "punl: --indices: the request is empty"),
    (["--indices", "1,two"], "punl: --indices: 'two' is not a training index"),
    (["--indices", "missing/request.txt"], "punl: --indices: no file"),
    (["--indices", "1", "--aggregate", "mode"], "punl: --aggregate"),
    (["--indices", "1", "--set", "sigma=1"], "punl: --set"),
    (["--indices", "1", "--adaptive", "--margin", "-1"], "punl: --margin"),
    (["--indices", "1", "--adaptive", "--growth", "1"], "punl: --growth"),
], ids=["duplicate", "out-of-range", "empty", "not-a-number", "no-file", "aggregate", "set",
        "margin", "growth"])
def test_bad_requests_stop_with_one_line(known_law, tmp_path, capsys, argv, message):
    folder = publish_run(tmp_path / "run", known_law)
    assert main(["predict", str(folder), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message), err


def test_a_run_without_unlearning_tables_is_one_clear_error(known_law, tmp_path, capsys):
    scored = publish_run(tmp_path / "scored", known_law, tables=("scores",))
    assert main(["predict", str(scored), "--indices", "1,2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no published unlearning tables" in err[0]
    assert "run `punl unlearn" in err[0]
    (tmp_path / "empty").mkdir()
    assert main(["predict", str(tmp_path / "empty"), "--indices", "1"]) == 2
    assert "holds no published run" in capsys.readouterr().err
    assert main(["predict", str(tmp_path / "nowhere/run"), "--indices", "1"]) == 2
    assert "neither a run's output folder nor a configuration" in capsys.readouterr().err


def test_indices_are_read_from_lists_and_files(tmp_path):
    assert read_indices("3, 17,256") == [3, 17, 256]
    np.save(tmp_path / "r.npy", np.array([[4, 5], [6, 7]]))
    assert read_indices(str(tmp_path / "r.npy")) == [4, 5, 6, 7]
    pd.DataFrame({"label": [1, 2], "index": [9, 8]}).to_csv(tmp_path / "r.csv", index=False)
    assert read_indices(str(tmp_path / "r.csv")) == [9, 8]
    (tmp_path / "r.txt").write_text("1\n2, 3\n\n4.0\n")
    assert read_indices(str(tmp_path / "r.txt")) == [1, 2, 3, 4]
    (tmp_path / "plain.csv").write_text("5\n6\n")              # no header: the 5 is data
    assert read_indices(str(tmp_path / "plain.csv")) == [5, 6]


@pytest.mark.parametrize("make, says", [
    (lambda d: "1 2", "separates indices by spaces"),
    (lambda d: _write(d / "s.txt", "1 2\n"), "separates indices by spaces"),
    (lambda d: _save(d / "mask.npy", np.array([True, False])), "booleans"),
    (lambda d: _save(d / "words.npy", np.array(["a", "b"])), "not indices"),
    (lambda d: _write(d / "junk.npy", "not an array"), "cannot read"),
    (lambda d: _write(d / "empty.csv", ""), "no readable CSV rows"),
    (lambda d: _write(d / "bin.txt", b"\xff\xfe\x00"), "cannot read"),
    (lambda d: "1,inf", "not a training index"),
], ids=["spaces", "spaces-file", "mask", "strings", "garbage-npy", "empty-csv", "binary",
        "inf"])
def test_ambiguous_or_unreadable_indices_are_refused(tmp_path, make, says):
    with pytest.raises(RequestError, match=f"^--indices: .*{says}"):
        read_indices(str(make(tmp_path)))


def _write(path, content):
    path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    return path


def _save(path, array):
    np.save(path, array)
    return path


# ------------------------------------------------------------------- held-out request groups
def test_heldout_groups_are_random_mixed_and_single_class():
    from punl.study.groups import group_kind, hard_count, heldout_groups, is_heldout, ranking
    rng = np.random.default_rng(0)
    scores = pd.DataFrame({"index": np.arange(400), "label": rng.integers(0, 4, 400),
                           P: rng.exponential(size=400),
                           "avg_grad_norm_unclipped": rng.uniform(size=400)})
    groups = heldout_groups(scores, P, 3, 20, seed=0)
    assert [g.label for g in groups] == ["r0", "r1", "r2", "mix0", "mix1", "mix2",
                                         "cls0", "cls1", "cls2"]
    assert [group_kind(g.label) for g in groups] == ["heldout_random"] * 3 + \
        ["heldout_mixed"] * 3 + ["heldout_class"] * 3
    assert all(is_heldout(group_kind(g.label)) for g in groups)
    assert [group_kind(x) for x in ("random", "top", "q3", "p_over_el2n")] == \
        ["random", "top", "quantile", "disagreement"]
    rank = np.empty(400)
    rank[ranking(scores, P)] = np.arange(400)
    labels = scores.label.to_numpy()
    for g in groups:
        assert len(g.indices) == 20 and len(set(g.indices)) == 20
    for j, g in enumerate(groups[3:6]):           # a few from the top tenth, the rest low
        hard = rank[g.indices] >= 360
        assert hard.sum() == hard_count(20, j) and (rank[g.indices][~hard] < 200).all()
    assert [hard_count(20, j) for j in range(3)] == [1, 2, 4]
    classes = [set(labels[g.indices]) for g in groups[6:]]
    assert all(len(c) == 1 for c in classes) and len(set.union(*classes)) == 3
    shares = np.bincount(labels[groups[0].indices], minlength=4) / 20
    assert np.abs(shares - np.bincount(labels, minlength=4) / 400).max() <= 0.05 + 1e-9
    again = heldout_groups(scores, P, 3, 20, seed=0)
    assert all(np.array_equal(a.indices, b.indices) for a, b in zip(groups, again))
    assert heldout_groups(scores, P, 0, 20, seed=0) == []
    with pytest.raises(ValueError, match="group_size"):
        heldout_groups(scores, P, 1, 300, seed=0)


def test_prediction_findings_name_the_best_predictor_and_the_adaptive_comparison():
    validation = pd.DataFrame({
        "score": ["privacy_loss_a8", "privacy_loss_a8", "el2n"], "aggregation": ["mean", "max", "mean"],
        "requests": "all", "n_requests": 9, "steps_spearman": [0.4, 0.7, 0.9],
        "steps_spearman_p": [0.3, 0.04, 0.001], "steps_coverage": [0.8, 0.9, 1.0],
        "steps_mae": [20.0, 12.5, 3.0]})
    comparison = pd.DataFrame({"score": ["privacy_loss_a8"] * 2, "aggregation": ["mean", "max"],
                               "adaptive_success": [0.5, 0.75], "adaptive_total_steps": [90, 120],
                               "mean_looks": [1.0, 1.5], "fixed_budget": [40, 100],
                               "fixed_total_steps": [360, 900]})
    found = heldout.prediction_findings(validation, comparison, "privacy_loss_a8")
    assert found["requests"] == "9"
    assert found["best"].startswith("the mean of el2n (Spearman ρ = 0.9, p = 0.001")
    assert "max of privacy_loss_a8 (Spearman ρ = 0.7" in found["primary_clause"]
    assert found["coverage_sentence"].startswith("The 90% intervals covered 80% to 100% of")
    assert "75% of the requests in 120 steps" in found["adaptive_clause"]
    assert "K = 100, takes 900" in found["adaptive_clause"]
    empty = heldout.prediction_findings(validation.iloc[:0], comparison.iloc[:0], "privacy_loss_a8")
    assert empty["requests"] == "0"
    unranked = heldout.prediction_findings(validation.assign(steps_spearman=np.nan), comparison,
                                           "privacy_loss_a8")
    assert unranked["requests"] == "9" and unranked["best"].startswith("no predictor")
    assert "80% to 100%" in unranked["coverage_sentence"]
    assert "coverage is not known" in empty["coverage_sentence"]
    for found in (found, empty, unranked):          # a missing number gets a sentence, never n/a
        assert not any("n/a" in text for text in found.values())


@pytest.mark.parametrize("first, budget, growth", [(0, 400, 2.0), (3, 400, 1.5), (500, 400, 2.0),
                                                   (0, 0, 2.0), (7, 20, 1.1)])
def test_the_live_adaptive_rule_looks_as_on_a_grid_of_every_step(first, budget, growth):
    from punl.analysis.adaptive import look_schedule
    steps = look_schedule(first, budget, growth)
    assert steps == heldout.recorded_looks(first, np.arange(budget + 1), growth)
    assert steps[0] == min(first, budget) and steps[-1] == budget
    assert all(b >= max(a * growth - 1e-9, a + 1) for a, b in zip(steps[:-2], steps[1:-1]))


def test_the_adaptive_rule_needs_growth():
    from punl.analysis.adaptive import look_schedule
    with pytest.raises(predict.RequestError, match="--growth"):
        look_schedule(1, 10, 1.0)
