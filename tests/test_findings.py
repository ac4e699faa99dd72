"""The numbers each chapter's closing paragraph glues, and how the book prints numbers: every
finding is checked against the analysis it comes from, on synthetic tables with a known truth."""
from dataclasses import replace
from types import SimpleNamespace

import dataclasses

import numpy as np
import pandas as pd
import pytest
from scipy import optimize, stats

from punl.analysis import claims, findings
from punl.analysis.measures import fmt, listing, percent, trend
from punl.publish.notebook import claims_markdown

from synthetic import BUDGET, Truth, make_study


def test_numbers_print_as_a_reader_reads_them():
    assert [fmt(v) for v in (0, 1437, 0.849, 0.0724, 1120.239, 15.0, -0.18, np.int64(12))] == \
        ["0", "1,437", "0.849", "0.0724", "1,120", "15", "-0.18", "12"]
    assert fmt(1e-5) == "1.00e-05" and fmt(2.3e7) == "2.30e+07"
    assert fmt(np.nan) == "n/a" and fmt(np.inf) == "n/a" and fmt("sgld") == "sgld"
    assert fmt(0.123456, 2) == "0.12"
    assert [percent(v) for v in (0.0017, 0.74, 1.0, np.nan)] == ["0.17%", "74%", "100%", "n/a"]
    assert listing([]) == "none" and listing(["a"]) == "a" and listing(list("abc")) == "a, b and c"
    assert trend(0.5, 0.1, 0.9) == "rises" and trend(-0.5, -0.9, -0.1) == "falls"
    assert trend(0.5, -0.1, 0.9) == "shows no clear trend"


@pytest.fixture(scope="module")
def truth():
    """The synthetic study with every claim true, and its claims table."""
    study = make_study()
    return study, claims.claims_table(study)


def test_claims_table_carries_each_claims_number(truth):
    study, table_ = truth
    assert list(table_["id"]) == ["1", "2", "2b", "3", "4"]          # ids are data
    steps = study.steps
    q = steps[(steps.method == "sgld") & (steps.level == 0.05) & (steps.design == "all")
              & (steps.kind == "quantile")]
    assert table_.number.iloc[0] == pytest.approx((q.steps_to_unlearn <= BUDGET / 10).mean(),
                                                  abs=1e-12)   # a share of 10 groups
    rows = study.quantiles("sgld", claims.Choice(0.05, "all", "privacy_loss_a8"))
    ll_log, ll_line = censored_log_likelihoods(rows, study.checkpoints)
    # Both are maxima of the same smooth likelihood, found by different optimisers: each stops
    # within ~1e-6 of the maximum on any BLAS build, far inside 1e-3.
    assert table_.number.iloc[1] == pytest.approx(ll_log - ll_line, abs=1e-3)


def test_unlearning_findings_come_from_the_tables(truth):
    study, table_ = truth
    found = findings.unlearning_findings(study, table_)
    # Truth: groups unlearned from steps 0, 0, 1, 2, 4, 8, 16, 32, 64, 128; top group censored
    assert (found["unlearned"], found["never_distinguishable"], found["censored"]) == \
        ("8", "2", "0")
    assert found["quick_share"] == "70%" and found["groups"] == "10"
    assert "censored" in found["top_clause"]
    rows = study.quantiles("sgld", claims.Choice(0.05, "all", "privacy_loss_a8"))
    rho = stats.spearmanr(rows.p, rows.steps_to_unlearn).statistic
    assert found["steps_rho_clause"].startswith(f"Spearman ρ = {fmt(rho, 2)} (p = ")
    assert float(found["ll_log"]) == pytest.approx(
        censored_log_likelihoods(rows, study.checkpoints)[0], abs=0.06)   # printed to 3 digits
    assert found["claim_1"] == "supported" and found["claim_3"] == "supported"
    assert "harder" in found["disagreement_clause"]
    assert all(isinstance(v, str) for v in found.values())


def _one_claim(study, number: str, rule) -> pd.DataFrame:
    """A claims table holding one claim's verdict under the main choice (no neighbours)."""
    result = rule(study, claims.Choice(0.05, "all", "privacy_loss_a8"))
    return pd.DataFrame({"id": [number], "claim": [f"{number}. x"], "verdict": [result.verdict],
                         "fragile": [False]})


def test_findings_say_when_a_claim_fails():
    study = make_study(Truth(steps=[128, 64, 32, 16, 8, 4, 2, 1, 0, 0]))
    found = findings.unlearning_findings(study, _one_claim(study, "2", claims.claim_log))
    assert found["claim_2"] == "not supported"
    assert found["steps_rho_clause"].startswith("Spearman ρ = -")
    expected = ("the log law fits at least as well"
                if float(found["ll_log"].replace(",", "")) >= float(found["ll_line"].replace(",", ""))
                else "a line fits better")
    assert found["fit_outcome"] == expected
    study = make_study(Truth(barrier=list(np.linspace(0.5, 0.0, 10))))
    found = findings.barrier_findings(study, _one_claim(study, "4", claims.claim_barriers))
    assert found["independent_clean_trend"] == "falls" and found["claim_4"] == "not supported"


def test_barrier_findings_come_from_the_tables(truth):
    study, table_ = truth
    found = findings.barrier_findings(study, table_)
    assert found["independent_clean_trend"] == "rises"
    assert found["independent_clean_groups"] == "10"
    assert found["independent_clean_result"].startswith(
        f"Spearman ρ = {found['independent_clean_rho']} over 10 quantile groups")
    assert found["independent_clean_interval"] in found["independent_clean_result"]
    assert "No quantile group holds flipped points" in found["flipped_clause"]
    assert found["claim_4"] == "supported"


def test_a_trend_that_cannot_be_measured_is_said_in_words_never_as_n_a(truth):
    """With fewer than three groups of enough points the chapter says why there is no trend."""
    study, table_ = truth
    few = study.tables.groups.group.isin(["q0", "q1"]) | (study.tables.groups.kind != "quantile")
    study = dataclasses.replace(study, tables=dataclasses.replace(
        study.tables, groups=study.tables.groups[few]))
    found = findings.barrier_findings(study, table_)
    assert found["independent_clean_result"].startswith("no trend can be measured, since 2 ")
    assert "n/a" not in found["independent_clean_result"]


def test_summary_findings_name_every_verdict_and_the_fragile_ones():
    table_ = pd.DataFrame({"id": ["1", "2", "2b", "5 (finetune)"],
                           "claim": ["1. a", "2. b", "2b. c", "5. the trend holds for finetune"],
                           "verdict": ["supported", "not supported", "supported",
                                       "inconclusive"],
                           "fragile": [False, True, False, True]})
    found = findings.summary_findings(table_)
    assert found["claims"] == "4"
    assert found["verdict_sentence"] == ("Supported: 1 and 2b. Not supported: 2. "
                                         "Inconclusive: 5 (finetune).")
    assert "2 and 5 (finetune)" in found["fragile_sentence"]
    assert findings.verdicts(table_)["claim_2"] == "not supported, fragile"
    assert findings.verdicts(table_)["claim_5_finetune"] == "inconclusive, fragile"


def test_claims_markdown_escapes_what_markdown_would_read():
    table_ = pd.DataFrame({"claim": ["2. steps grow like a*log(b*P + 1)"], "measure": ["m_1"],
                           "number": [0.83], "value": ["rho 0.83"], "interval": [""],
                           "verdict": ["supported"], "neighbours": ["level 0.01: supported"],
                           "fragile": [False]})
    text = claims_markdown(table_)
    assert "a\\*log(b\\*P + 1)" in text and "m\\_1" in text and "*supported*" in text
    assert "number: 0.83" in text and "<span id=" not in text
    text = claims_markdown(table_.assign(id=["5 (finetune)"]))
    assert text.startswith('<span id="claim-5-finetune"></span>**2. steps')
    assert "number: none measured; " in claims_markdown(table_.assign(number=[float("nan")]))


def fake_ledger(flipped):
    """What :func:`punl.analysis.findings.training_findings` reads of a ledger."""
    rng = np.random.default_rng(0)
    norms = rng.uniform(1, 2, (2, 3, len(flipped)))
    norms[:, :, flipped] *= 4
    return SimpleNamespace(runs=2, total_steps=90, records=3, grad_norm=norms,
                           test_acc=np.array([[0.5, 0.9], [0.5, 0.8]]),
                           train_acc=np.array([[0.5, 0.7], [0.5, 0.7]]))


def test_training_findings():
    flipped = np.zeros(20, bool)
    flipped[:5] = True
    found = findings.training_findings(fake_ledger(flipped), clip=7.0, flipped=flipped)
    assert (found["test_acc"], found["test_acc_min"], found["test_acc_max"]) == \
        ("0.85", "0.8", "0.9")
    assert found["clip"] == "7" and found["steps"] == "90"
    assert found["label_noise_sentence"].startswith("Of the 5 points with the highest average "
                                                    "gradient norm, 5 have flipped labels")
    clean = np.zeros(20, bool)
    found = findings.training_findings(fake_ledger(clean), clip=7.0, flipped=clean)
    assert found["label_noise_sentence"].startswith("No label was flipped")


def test_score_findings():
    rng = np.random.default_rng(0)
    p = np.geomspace(0.01, 100, 200)
    scores = pd.DataFrame({"privacy_loss_a8": p, "avg_grad_norm": np.log(p),
                           "el2n": rng.uniform(size=200), "flipped": np.arange(200) >= 180})
    found = findings.score_findings(scores, "privacy_loss_a8", ["avg_grad_norm", "el2n"])
    assert found["decades"] == fmt(np.log10(np.quantile(p, 0.9) / np.quantile(p, 0.1)), 2)
    assert found["agreement"].startswith("1 with avg_grad_norm and ")
    assert "100% of the 10% of points with the highest loss" in found["label_noise_sentence"]
    found = findings.score_findings(scores.assign(flipped=False), "privacy_loss_a8",
                                    ["avg_grad_norm"])
    assert found["label_noise_sentence"].startswith("No label was flipped")


def test_a_claim_about_one_method_carries_the_method_in_its_id():
    study = make_study()
    by_method = [c for c in claims.claims_for(replace(study, methods=("sgld", "finetune")))
                 if c.method]
    assert [(c.key, c.title) for c in by_method] == [
        ("5 (finetune)", "5. the trend holds for finetune")]


def censored_log_likelihoods(rows: pd.DataFrame, checkpoints) -> tuple[float, float]:
    """An independent oracle for the censored fits: the maximised log-likelihoods of the log law
    (steps ~ a log(b P)) and of the line (steps ~ c + d P), each with normal noise, where a group
    unlearned at checkpoint k_j lies in (k_{j-1}, k_j], a censored group above the budget and a
    never-distinguishable group at or below 0; maximised by Nelder-Mead from several starts."""
    k = np.asarray(checkpoints, float)
    steps = rows.steps_to_unlearn.to_numpy(float)
    never = (rows.status == "never distinguishable").to_numpy()
    censored = rows.censored.to_numpy(bool)
    previous = np.array([k[k < s].max() if (k < s).any() else s for s in steps])
    lo = np.where(never, -np.inf, np.where(censored, steps, previous))
    hi = np.where(never, 0.0, np.where(censored, np.inf, steps))
    exact = lo == hi
    p = rows.p.to_numpy(float)

    def log_likelihood(mu, sigma):
        dense = stats.norm.logpdf(steps[exact], mu[exact], sigma).sum()
        mass = stats.norm.cdf(hi[~exact], mu[~exact], sigma) - stats.norm.cdf(lo[~exact], mu[~exact], sigma)
        return dense + np.log(np.maximum(mass, 1e-300)).sum()

    def best(nll, starts):
        return max(-optimize.minimize(nll, x0, method="Nelder-Mead",
                                      options={"xatol": 1e-10, "fatol": 1e-12,
                                               "maxiter": 40_000}).fun for x0 in starts)

    log_law = best(lambda t: -log_likelihood(np.exp(t[0]) * np.log(np.maximum(np.exp(t[1]) * p,
                                                                              1e-300)),
                                             np.exp(t[2])),
                   [(np.log(a), np.log(b), np.log(s)) for a in (3, 30) for b in (0.3, 3)
                    for s in (3, 30)])
    line = best(lambda t: -log_likelihood(t[0] + t[1] * p, np.exp(t[2])),
                [(c, d, np.log(s)) for c in (0, 30) for d in (0, 10) for s in (3, 30)])
    return log_law, line


def test_a_missing_correlation_is_a_sentence():
    assert findings.rho_clause(float("nan"), float("nan")).startswith("no rank correlation")
    assert findings.rho_clause(0.5, 0.01) == "Spearman ρ = 0.5 (p = 0.01) with the privacy loss"


def test_point_prediction_findings_say_why_a_law_cannot_rank():
    validation = pd.DataFrame({"predictor": ["0 steps", "median", "privacy_loss_a8"],
                               "points": 40, "mae": [3.0, 4.0, 2.5], "width": [0.0, 8.0, 6.0],
                               "coverage": [0.5, 0.9, 0.95], "spearman": [np.nan, np.nan, 0.4]})
    found = findings.point_prediction_findings(validation, "privacy_loss_a8")["point_clause"]
    assert "Spearman's rho 0.4" in found and "best-ranking score is privacy_loss_a8" in found
    flat = findings.point_prediction_findings(validation.assign(spearman=np.nan),
                                              "privacy_loss_a8")["point_clause"]
    assert "cannot be ranked" in flat and "n/a" not in flat
