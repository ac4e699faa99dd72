"""Each chapter's closing paragraph ("What we found"): its numbers as the book prints them,
computed from the run's tables by the same analyses as the claims table, with the verdicts."""
from __future__ import annotations

import numpy as np
import pandas as pd

from . import measures, pointclaims
from .measures import (ResponseSummary, clipping_summary, distribution_summary,
                       extreme_norm_summary, final_accuracy, flipped_share_of_top, fmt,
                       label_noise_control, listing, percent)
from .claims import (INCONCLUSIVE, NOT_SUPPORTED, SIGNIFICANCE, SUPPORTED, Choice, Study,
                     hardest_result, law_result, response)
from .barriers import barrier_trends, hard_easy_barriers, hard_easy_sentence
from .fits import spearman
from ..engine.ledger import Ledger
from .power import TARGET_POWER


# --------------------------------------------------------------------------- claim names
def verdict_text(verdict: str, fragile: bool) -> str:
    """A verdict as the book writes it: ``, fragile`` added where a neighbour differs."""
    return verdict + (", fragile" if fragile else "")


def verdicts(claims: pd.DataFrame) -> dict[str, str]:
    """Each claim's :func:`verdict_text` by its short name:
    ``{"claim_1": "supported", "claim_5_finetune": "not supported, fragile", ...}``."""
    out = {}
    for row in claims.itertuples():
        key = "claim_" + row.id.replace(" (", "_").rstrip(")")
        out[key] = verdict_text(row.verdict, row.fragile)
    return out


# ------------------------------------------------------------------- training and scores
def training_findings(ledger: Ledger, clip: float, flipped: np.ndarray, n: int = 5) -> dict:
    """The numbers of the training chapter's closing paragraph, as the book prints them:
    accuracy at the end of training, how often clipping binds, and how the flipped points'
    gradient norms compare with the clean ones'."""
    flipped = np.asarray(flipped, bool)
    accuracy = final_accuracy(ledger)
    clipping = clipping_summary(ledger, clip)
    extremes = extreme_norm_summary(ledger, flipped, n)
    avg = ledger.grad_norm.mean(axis=(0, 1))
    if flipped.any() and (~flipped).any():
        ratio = float(np.median(avg[flipped]) / np.median(avg[~flipped]))
        noise = (f"Of the {n} points with the highest average gradient norm, "
                 f"{int(extremes.loc[f'highest {n}', 'flipped among them'])} have flipped "
                 f"labels, and the median average norm of the {fmt(int(flipped.sum()))} flipped "
                 f"points is {fmt(ratio, 2)} times that of the clean ones.")
    else:
        noise = "No label was flipped in this run, so there is no known-hard control group."
    return {"runs": fmt(ledger.runs), "steps": fmt(ledger.total_steps),
            "test_acc": fmt(accuracy.loc["test", "mean"]),
            "test_acc_min": fmt(accuracy.loc["test", "min"]),
            "test_acc_max": fmt(accuracy.loc["test", "max"]),
            "train_acc": fmt(accuracy.loc["train", "mean"]),
            "clip": fmt(clip), "clipped_share": percent(clipping.iloc[0]),
            "clipped_once": percent(clipping.iloc[1]), "label_noise_sentence": noise}


def score_findings(scores: pd.DataFrame, column: str, baselines: list[str]) -> dict:
    """The numbers of the scores chapter's closing paragraph, as the book prints them: the
    spread of the privacy loss, its rank agreement with the baselines, and the label-noise
    control."""
    spread = distribution_summary(scores[column])
    q10, q90 = spread["10%"], spread["90%"]
    decades = np.log10(q90 / q10) if q10 > 0 else np.nan
    rho = scores[[column, *baselines]].corr(method="spearman")[column]
    agreement = listing([f"{fmt(rho[b], 2)} with {b}" for b in baselines])
    flipped = scores.flipped.astype(bool)
    if flipped.any() and (~flipped).any():
        test = label_noise_control(scores, [column]).iloc[0]
        noise = (f"Flipped points have a mean loss {fmt(test['mean flipped'] / test['mean clean'], 2)} "
                 f"times that of clean points (one-sided Mann-Whitney p = {fmt(test['p-value'], 2)}) "
                 f"and make up {percent(flipped_share_of_top(scores, column))} of the 10% of points "
                 f"with the highest loss, against {percent(flipped.mean())} of all points.")
    else:
        noise = "No label was flipped in this run, so there is no label-noise control."
    return {"column": column, "points": fmt(len(scores)), "q10": fmt(q10),
            "median": fmt(spread["median"]), "q90": fmt(q90), "maximum": fmt(spread["maximum"]),
            "decades": fmt(decades, 2), "zero": fmt(int(spread["points with zero loss"])),
            "ties": fmt(int(spread["points tied at the maximum"])), "agreement": agreement,
            "label_noise_sentence": noise}


# ------------------------------------------------------------------------------ unlearning
def _status_counts(q: pd.DataFrame) -> dict[str, str]:
    counts = q.status.value_counts()
    return {k.replace(" ", "_"): measures.fmt(int(counts.get(k, 0)))
            for k in ("unlearned", "censored", "never distinguishable")}


def _shared_rate_clause(r: ResponseSummary) -> str:
    if r.responding_groups < 2 or not np.isfinite(r.shared_rate_p):
        return (f"only {r.responding_groups} group(s) respond above the null at step 0, so "
                "no decay rates are compared")
    outcome = "differ between" if r.shared_rate_p < SIGNIFICANCE else \
        "are consistent with one shared rate over"
    return (f"the decay rates {outcome} the {r.responding_groups} responding groups (F-test "
            f"p = {measures.fmt(r.shared_rate_p, 2)})")


def _disagreement_clause(d: pd.DataFrame) -> str:
    if d.empty:
        return ("no disagreement groups were unlearned, so the metrics are not compared on groups "
                "(claim 3 is then decided on the hardest points of the per-point study)")
    parts = []
    for r in d.itertuples():
        outcome = "harder" if r.harder == "privacy loss" else \
            "easier" if r.harder == r.baseline else "not measurably harder"
        parts.append(f"against {r.baseline} the group P ranks higher is {outcome} (step-0 "
                     f"accuracy difference {measures.fmt(r.difference, 2)}, 95% interval "
                     f"[{measures.fmt(r.low, 2)}, {measures.fmt(r.high, 2)}])")
    return "; ".join(parts)


def _top_clause(top) -> str:
    if top.status == "never distinguishable":
        return "was never distinguishable from retrained models, not even at step 0"
    if top.censored:
        return "was still distinguishable at the end of the budget (censored)"
    return f"was unlearned after {measures.fmt(int(top.steps_to_unlearn))} steps"


def rho_clause(rho: float, p: float) -> str:
    """``Spearman ρ = 0.55 (p = 0.01) with the privacy loss``, or why there is no ρ."""
    if not np.isfinite(rho):
        return ("no rank correlation with the privacy loss (too few groups, or no variation "
                "across them)")
    return f"Spearman ρ = {measures.fmt(rho, 2)} (p = {measures.fmt(p, 2)}) with the privacy loss"


def unlearning_findings(study: Study, claims: pd.DataFrame) -> dict[str, str]:
    """The numbers of the unlearning chapter's closing paragraph, as the book prints them, from
    the same analyses as claims 1, 2, 2b and 3 under the main choice, with their verdicts."""
    fmt = measures.fmt
    main = Choice(study.level, "all", study.primary_score)
    q = study.quantiles(study.primary_method, main)
    top = measures.select(study.steps, study.primary_method, main.level, "all", "top")
    top = top[top.score == study.primary_score].iloc[0]
    f = measures.steps_fits(q, study.checkpoints)
    r = response(study, study.primary_method, main) or ResponseSummary(
        spearman=np.nan, spearman_p=np.nan, log_log_slope=np.nan, slope_low=np.nan,
        slope_high=np.nan, responding_groups=0, shared_rate=np.nan, shared_rate_p=np.nan)
    d = measures.disagreement_comparison(study.tables, study.steps, study.primary_score,
                                         list(study.baselines), study.primary_method,
                                         main.level)
    ll_log, ll_line = f.log_likelihood_log, f.log_likelihood_line
    fit = "the log law fits at least as well" if ll_log >= ll_line else "a line fits better"
    return {"method": study.primary_method, "budget": fmt(study.budget),
            "tenth": fmt(study.budget / 10), "groups": fmt(len(q)), **_status_counts(q),
            "quick_share": measures.percent((q.steps_to_unlearn <= study.budget / 10).mean()),
            "top_clause": _top_clause(top),
            "training_steps": fmt(study.training_steps),
            "steps_rho_clause": rho_clause(f.spearman, f.spearman_p),
            "ll_log": fmt(ll_log), "ll_line": fmt(ll_line), "fit_outcome": fit,
            "amplitude_rho_clause": rho_clause(r.spearman, r.spearman_p),
            "shared_rate_clause": _shared_rate_clause(r),
            "disagreement_clause": _disagreement_clause(d), **verdicts(claims)}


def _trend_result(t) -> str:
    """A barrier trend in words: its ρ, groups and interval, or why there is none."""
    fmt = measures.fmt
    if t.groups < 3:
        return (f"no trend can be measured, since {fmt(t.groups)} quantile groups hold at least "
                f"{measures.MIN_BARRIER_POINTS} such points and a rank correlation needs three")
    if not np.isfinite(t.spearman):
        return (f"no trend can be measured over its {fmt(t.groups)} quantile groups, since the "
                "privacy loss or the barrier does not vary across them")
    interval = (f"a 95% interval of [{fmt(t.low, 2)}, {fmt(t.high, 2)}] over model pairs and "
                "points" if np.isfinite(t.low) and np.isfinite(t.high)
                else "no interval, since the resamples gave no finite correlation")
    return (f"Spearman ρ = {fmt(t.spearman, 2)} over {fmt(t.groups)} quantile groups (those "
            f"with at least {measures.MIN_BARRIER_POINTS} such points), with {interval}")


def barrier_findings(study: Study, claims: pd.DataFrame) -> dict[str, str]:
    """The numbers of the loss-barrier chapter's closing paragraph, as the book prints them:
    claim 4's trends of the controlled barrier with P (independent and coupled partner, clean
    and flipped points) and the trends of the loss gap and the distance, with the verdict."""
    fmt = measures.fmt
    measured = barrier_trends(study, Choice(study.level, "all", study.primary_score))
    out = {}
    for (partner, points), t in measured.trends.items():
        key = f"{partner}_{points}"
        out[f"{key}_rho"] = fmt(t.spearman, 2)
        out[f"{key}_interval"] = f"[{fmt(t.low, 2)}, {fmt(t.high, 2)}]"
        out[f"{key}_trend"] = measures.trend(t.spearman, t.low, t.high)
        out[f"{key}_groups"] = fmt(t.groups)
        out[f"{key}_result"] = _trend_result(t)
    by_group = measures.barrier_by_group(measured.controlled, study.tables.groups)
    main = by_group[(by_group.kind == "quantile") & (by_group.partner == "independent")
                    & (by_group.points == "clean")]
    main = main.assign(p=main.group.map(measured.p))
    if len(main) >= 3:
        rho = {c: fmt(spearman(main.p, main[c])[0], 2) for c in ("loss_gap", "distance")}
        out["gap_distance"] = (f"The endpoint loss gap has ρ = {rho['loss_gap']} with the "
                               f"privacy loss and the parameter distance ρ = "
                               f"{rho['distance']} (independent partner, clean points).")
    else:
        out["gap_distance"] = (f"Only {len(main)} quantile groups hold clean points, too few to "
                               "correlate the loss gap and the distance with the privacy loss.")
    sizes = study.tables.groups[study.tables.groups.score == study.primary_score]
    out["hard_easy"] = hard_easy_sentence(
        hard_easy_barriers(study.tables.barriers, study.primary_method, study.budget,
                           study.primary_score),
        sizes.set_index("group").group_size.to_dict(), study.budget)
    if out["independent_flipped_groups"] == "0":
        out["flipped_clause"] = "No quantile group holds flipped points, so they are not shown apart."
    else:
        out["flipped_clause"] = (f"On flipped points the controlled barrier "
                                 f"{out['independent_flipped_trend']}: "
                                 f"{out['independent_flipped_result']}.")
    return {**out, **verdicts(claims)}


def summary_findings(claims: pd.DataFrame) -> dict[str, str]:
    """The summary chapter's closing paragraph: which claims each verdict went to and which
    verdicts are fragile."""
    ids = claims["id"]
    named = {v: measures.listing(list(ids[claims.verdict == v]))
             for v in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)}
    fragile = list(ids[claims.fragile.astype(bool)])
    power = claims.power if "power" in claims else pd.Series(np.nan, index=claims.index)
    weak = list(ids[power < TARGET_POWER])
    unknown = list(ids[~np.isfinite(power.astype(float))])
    sentence = " ".join(f"{v.capitalize()}: {named[v]}." for v in named)
    return {"claims": measures.fmt(len(claims)), "verdict_sentence": sentence,
            "fragile_sentence": (f"The verdicts on claims {measures.listing(fragile)} change "
                                 "under a neighbouring analysis choice, so they are fragile.")
            if fragile else "No verdict changes under a neighbouring analysis choice.",
            "power_sentence": (f"At the effects measured, the tests of claims {measures.listing(weak)} "
                               f"have less than {measures.percent(TARGET_POWER)} power, so a "
                               "larger design could change their verdicts"
                               if weak else "Every test has at least "
                               f"{measures.percent(TARGET_POWER)} power at the effect measured")
            + (f"; claims {measures.listing(unknown)} have no power model." if unknown else ".")}


# ------------------------------------------------------------------------------ per point
def _law_clause(r: pointclaims.LogLawClaim | None) -> str:
    if r is None:
        return "there are too few points to fit the laws"
    law = r.law
    if law.p_line <= SIGNIFICANCE:
        outcome = "rejects the line in favour of the log law"
    elif law.p_log <= SIGNIFICANCE:
        outcome = "rejects the log law in favour of the line"
    else:
        outcome = "rejects neither law"
    fit = "passes" if law.gof_log > SIGNIFICANCE else "fails"
    return (f"the likelihood-ratio test {outcome} (log-likelihood difference "
            f"{measures.fmt(law.statistic, 3)}; p = {measures.fmt(law.p_line, 2)} against the "
            f"line, p = {measures.fmt(law.p_log, 2)} against the log law), and the log law "
            f"{fit} its goodness-of-fit check (p = {measures.fmt(law.gof_log, 2)}); were the "
            f"fitted log law true, this design would reject the line with probability "
            f"{measures.percent(law.power)}")


def _hardest_clause(r: pointclaims.HardestClaim | None) -> str:
    if r is None:
        return "no baseline score was compared"
    parts = []
    for x in r.comparison.itertuples():
        outcome = "more" if x.low > 0 else "fewer" if x.high < 0 else "not measurably more"
        parts.append(f"the hardest {measures.fmt(int(x.m))} by P need {outcome} steps than "
                     f"those by {x.baseline} ({measures.fmt(x.steps_p, 3)} against "
                     f"{measures.fmt(x.steps_baseline, 3)}, difference 95% interval "
                     f"[{measures.fmt(x.low, 2)}, {measures.fmt(x.high, 2)}])")
    return "; ".join(parts)


def point_findings(study: Study, claims: pd.DataFrame, models: int,
                   forget_probability: float) -> dict[str, str]:
    """The numbers of the per-point chapter's closing paragraph, as the book prints them, from
    the same analyses (and random streams) as claims 1, 2 and 3, with their verdicts."""
    fmt, pct = measures.fmt, measures.percent
    main = Choice(study.level, "all", study.primary_score)
    rows, placebo = study.points(main), study.points(main, "placebo")
    quick = pointclaims.quick_claim(rows, placebo, study.budget, study.training_steps)
    rate = pointclaims.placebo_rate(study.point_steps, study.level)
    power = pointclaims.design_power(rows, len(study.checkpoints), study.level)
    counts = rows.status.value_counts()
    return {"models": fmt(models), "forget_probability": fmt(forget_probability),
            "per_side": fmt(power.models_per_side), "points": fmt(len(rows)),
            "placebo_points": fmt(rate.points), "placebo_rate": pct(rate.rate),
            "level": fmt(study.level), "placebo_bound": pct(study.level + 2 * rate.se),
            "never": fmt(int(counts.get("never distinguishable", 0))),
            "unlearned": fmt(int(counts.get("unlearned", 0))),
            "censored": fmt(int(counts.get("censored", 0))),
            "quick_share": pct(quick.quick), "tenth": fmt(study.budget / 10),
            "hard_share": pct(quick.hard), "hard_placebo": pct(quick.hard_placebo),
            "half_training": fmt(study.training_steps / 2),
            "mde": fmt(power.mde, 2), "looks": fmt(power.looks),
            "above_mde": pct(power.share_above_mde),
            "law_clause": _law_clause(law_result(study, main)),
            "hardest_clause": _hardest_clause(hardest_result(study, main)),
            **verdicts(claims)}


def point_prediction_findings(validation: pd.DataFrame, primary: str) -> dict[str, str]:
    """The per-point prediction paragraph: each score's law against the constant predictors on
    the held-out points."""
    fmt, pct = measures.fmt, measures.percent
    if validation.empty:
        return {"point_clause": "This run has no per-point study, so no point is predicted."}
    v = validation.set_index("predictor")
    scores = v.drop(index=[c for c in ("0 steps", "median") if c in v.index])
    best = scores.spearman.idxmax() if scores.spearman.notna().any() else None
    parts = [f"On {fmt(int(v.points.iloc[0]))} held-out points, predicting 0 steps for every "
             f"point errs by {fmt(v.loc['0 steps', 'mae'])} steps on average and the median by "
             f"{fmt(v.loc['median', 'mae'])} (its 90% interval {fmt(v.loc['median', 'width'])} "
             f"steps wide covers {pct(v.loc['median', 'coverage'])})"]
    if primary in v.index:
        r = v.loc[primary]
        ranks = (f"ranks the points with Spearman's rho {fmt(r.spearman, 2)}"
                 if np.isfinite(r.spearman) else
                 "cannot be ranked against them (the measured steps do not vary)")
        parts.append(f"the law of {primary} errs by {fmt(r.mae)} steps, {ranks}, and its "
                     f"intervals, {fmt(r.width)} steps wide on average, cover {pct(r.coverage)}")
    if best is not None:
        parts.append(f"the best-ranking score is {best} (rho {fmt(v.loc[best, 'spearman'], 2)})")
    return {"point_clause": "; ".join(parts) + "."}
