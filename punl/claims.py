"""Each claim of the study: the number that tests it, its interval, a verdict, and the verdicts
under neighbouring analysis choices.

An analysis *choice* is the level at which a group is called distinguishable (adjusted p <= level),
the design of the attack (all models, or half of each kind) and the order alpha of the privacy
loss P the groups are placed by. The main choice is the configuration's level, all models and
the primary score; its neighbours are the other levels of :data:`punl.analysis.LEVELS`, half the
models, and the orders alpha / 2 and 2 alpha. A claim whose verdict changes under a neighbour
is reported as fragile.

Verdict rules (each claim's function states its own):

1. Most points unlearn in few steps, a few need close to retraining effort.
2. Steps grow like a log(bP + 1): the thresholded steps rise with P and the log law fits them
   at least as well as a line (censoring-aware likelihoods).
2b. The bound's shape: the response amplitude A grows with P and one decay rate fits the
   groups.
3. P picks out the hard points better than each baseline: on the points where their ranks
   disagree most, the group P ranks high is the harder one.
4. Harder points sit behind higher loss barriers: the barrier on the forget points minus the
   barrier on class-matched control points rises with P.
5. The trends hold for the other methods: their response amplitudes rise with P.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import pandas as pd

from . import analysis
from .fits import spearman
from .tables import CLAIMS, UnlearnTables

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
SIGNIFICANCE = 0.05  # two-sided level of the correlation tests inside the verdict rules


@dataclass(frozen=True)
class Choice:
    """One analysis choice: level, attack design and the scores column that places groups."""

    level: float
    design: str
    p_column: str
    label: str = "main"


@dataclass(frozen=True)
class Study:
    """What the verdicts read: the stage's tables, the derived steps table and the settings."""

    tables: UnlearnTables
    steps: pd.DataFrame
    scores: pd.DataFrame
    primary_score: str
    primary_method: str
    methods: tuple[str, ...]
    baselines: tuple[str, ...]
    budget: int
    training_steps: int
    level: float = 0.05
    seed: int = 0

    @property
    def checkpoints(self) -> np.ndarray:
        return np.sort(self.tables.attack.step.unique())

    def quantiles(self, method: str, choice: Choice) -> pd.DataFrame:
        rows = analysis.select(self.steps, method, choice.level, choice.design)
        return analysis.with_score(rows, self.tables.points, self.scores, choice.p_column)

    def rng(self, *labels) -> np.random.Generator:
        from .groups import stream_seed
        return np.random.default_rng(stream_seed(self.seed, "claims", *labels))


def depends_on(*names: str):
    """Mark a claim with the fields of :class:`Choice` its result depends on; neighbours that
    differ only elsewhere reuse its result."""
    def mark(fn):
        fn.depends_on = names
        return fn
    return mark


def _verdict(ok: bool | None) -> str:
    return INCONCLUSIVE if ok is None else SUPPORTED if ok else NOT_SUPPORTED


def _untestable() -> dict:
    """A claim's result where the run has nothing to test it on."""
    return {"number": np.nan, "value": "n/a", "interval": "", "verdict": INCONCLUSIVE}


def _fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:.{digits}f}"


# ------------------------------------------------------------------------------------ claims
@depends_on("level", "design")
def claim_quick(study: Study, choice: Choice) -> dict:
    """Claim 1 over the quantile groups of the main method. Supported when at least half of the
    quantile groups are unlearned within K/10 steps (a group never distinguishable counts as
    unlearned at step 0, and their number is stated) and the top-m group needs at least T/2
    steps (T the training steps) or is censored; inconclusive when neither the quantile groups
    nor the top group are distinguishable at step 0 (nothing to unlearn at this design)."""
    q = study.quantiles(study.primary_method, choice)
    top = analysis.select(study.steps, study.primary_method, choice.level, choice.design, "top")
    top = top[top.score == study.primary_score]
    if q.empty or top.empty:
        return _untestable()
    quick = float((q.steps_to_unlearn <= study.budget / 10).mean())
    never = int((q.status == "never distinguishable").sum())
    top = top.iloc[0]
    hard = bool(top.censored or top.steps_to_unlearn >= study.training_steps / 2)
    measurable = (q.adjusted_p_step0 <= choice.level).any() or top.adjusted_p_step0 <= choice.level
    pts = analysis.point_fractions(study.tables, choice.level, study.checkpoints, study.budget)
    pts = pts[(pts.method == study.primary_method) & pts.group.isin(q.group)]
    return {"number": quick,
            "value": f"{quick:.2f} of quantile groups within K/10 ({never} of {len(q)} never "
                     f"distinguishable); top group {top.status}, {top.steps_to_unlearn} steps",
            "interval": f"points: step 0 {pts.step0_fraction.mean():.2f} (null "
                        f"{pts.null_step0_fraction.mean():.2f}), censored "
                        f"{pts.censored_fraction.mean():.2f} (null "
                        f"{pts.null_censored_fraction.mean():.2f})",
            "verdict": _verdict(None if not measurable else quick >= 0.5 and hard)}


@depends_on("level", "design", "p_column")
def claim_log(study: Study, choice: Choice) -> dict:
    """Claim 2. Supported when Spearman's rho between the quantile groups' P and their steps
    is positive and significant and the log law's likelihood is at least the line's; not
    supported when rho <= 0 or the line fits better; inconclusive otherwise (no variation in
    the steps, or rho not significant)."""
    q = study.quantiles(study.primary_method, choice)
    if len(q) < 3:
        return _untestable()
    f = analysis.steps_fits(q, study.checkpoints)
    rho, p = f["spearman"], f["spearman_p"]
    ok = None
    if np.isfinite(rho):
        if rho <= 0 or f["log_likelihood_log"] < f["log_likelihood_line"]:
            ok = False
        elif p < SIGNIFICANCE:
            ok = True
    return {"number": rho,
            "value": f"rho {_fmt(rho)} (p {_fmt(p, 3)}); log-likelihood log law "
                     f"{_fmt(f['log_likelihood_log'], 1)} vs line {_fmt(f['log_likelihood_line'], 1)}",
            "interval": f"{f['never_distinguishable']} never distinguishable, {f['censored']} "
                        f"censored of {f['groups']} groups",
            "verdict": _verdict(ok)}


def _response(study: Study, method: str, choice: Choice) -> dict:
    q = study.quantiles(method, choice)
    return analysis.response_summary(q, study.tables.attack) if len(q) >= 3 else {}


@depends_on("design", "p_column")
def claim_shape(study: Study, choice: Choice) -> dict:
    """Claim 2b. Supported when the response amplitude rises with P (rho > 0, significant) and a
    shared decay rate is not rejected (F-test p >= 0.05 over the responding groups); not
    supported when rho <= 0 or the rates differ (p < 0.05); inconclusive otherwise."""
    r = _response(study, study.primary_method, choice)
    if not r or not np.isfinite(r["spearman"]):
        return _untestable()
    rates_differ = np.isfinite(r["shared_rate_p"]) and r["shared_rate_p"] < SIGNIFICANCE
    ok = None
    if r["spearman"] <= 0 or rates_differ:
        ok = False
    elif r["spearman_p"] < SIGNIFICANCE and np.isfinite(r["shared_rate_p"]):
        ok = True
    return {"number": r["spearman"],
            "value": f"rho(A, P) {_fmt(r['spearman'])} (p {_fmt(r['spearman_p'], 3)}); shared "
                     f"rate {_fmt(r['shared_rate'], 3)}, F-test p {_fmt(r['shared_rate_p'], 3)} "
                     f"over {r['responding_groups']} responding groups",
            "interval": f"slope of log A on log P {_fmt(r['log_log_slope'])} "
                        f"[{_fmt(r['slope_low'])}, {_fmt(r['slope_high'])}]",
            "verdict": _verdict(ok)}


@depends_on("design", "p_column")
def claim_metrics(study: Study, choice: Choice) -> dict:
    """Claim 3. For every baseline, the disagreement groups' step-0 attack accuracies are
    compared (difference with a 95% interval). Supported when the group P ranks higher is the
    harder one for every baseline; not supported when for some baseline the other group is;
    inconclusive otherwise. The per-point partial correlations are reported beside."""
    d = analysis.disagreement_comparison(study.tables, study.steps, study.primary_score,
                                         list(study.baselines), study.primary_method,
                                         choice.level, choice.design)
    if d.empty:
        return _untestable()
    partial = analysis.partial_correlations(
        analysis.point_response(study.tables, study.primary_method), study.scores,
        choice.p_column, list(d.baseline), study.rng("partial", choice.p_column), n_boot=200)
    value = "; ".join(f"vs {r.baseline}: {_fmt(r.difference, 3)} [{_fmt(r.low, 3)}, "
                      f"{_fmt(r.high, 3)}]" for r in d.itertuples())
    interval = "; ".join(f"partial rho(D, P | {r.baseline}) {_fmt(r.p_given_baseline)} "
                         f"[{_fmt(r.low)}, {_fmt(r.high)}]" for r in partial.itertuples())
    ok = False if (d.harder.isin(d.baseline)).any() else \
        True if (d.harder == "privacy loss").all() else None
    return {"number": float(d.difference.min()), "value": value, "interval": interval,
            "verdict": _verdict(ok)}


def _barrier_trends(study: Study, choice: Choice) -> tuple[pd.DataFrame, dict, dict]:
    """Claim 4's measurements under ``choice``: the controlled barriers, each quantile group's P
    and, for each (partner, points), the bootstrap trend of the controlled barrier with P."""
    controlled = analysis.controlled_barriers(study.tables.barriers, study.primary_method)
    q = study.quantiles(study.primary_method, choice)
    p = dict(zip(q.group, q.p))
    trends = {(partner, points): analysis.barrier_trend(
        controlled, study.tables.groups, p, partner, points, study.rng("barrier", partner, points))
        for partner in ("independent", "coupled") for points in ("clean", "flipped")}
    return controlled, p, trends


@depends_on("p_column")
def claim_barriers(study: Study, choice: Choice) -> dict:
    """Claim 4 on clean points at step 0 with the independent partner. Supported when Spearman's
    rho between the quantile groups' P and their mean controlled barrier has a bootstrap
    interval (over model pairs) above 0; not supported when rho <= 0; inconclusive otherwise."""
    _, _, trends = _barrier_trends(study, choice)
    main = trends[("independent", "clean")]
    if not np.isfinite(main["spearman"]):
        return _untestable()
    ok = False if main["spearman"] <= 0 else True if main["low"] > 0 else None
    others = "; ".join(f"{partner}, {points}: {_fmt(t['spearman'])} [{_fmt(t['low'])}, "
                       f"{_fmt(t['high'])}]" for (partner, points), t in trends.items()
                       if (partner, points) != ("independent", "clean") and t["groups"])
    return {"number": main["spearman"],
            "value": f"rho(P, controlled barrier) {_fmt(main['spearman'])} over "
                     f"{main['groups']} groups (independent partner, clean points)",
            "interval": f"[{_fmt(main['low'])}, {_fmt(main['high'])}]; {others}",
            "verdict": _verdict(ok)}


def claim_method(method: str) -> Callable[[Study, Choice], dict]:
    @depends_on("design", "p_column")
    def claim(study: Study, choice: Choice) -> dict:
        """Claim 5 for one method. Supported when its response amplitude rises with P (rho > 0,
        significant); not supported when rho <= 0; inconclusive otherwise."""
        r = _response(study, method, choice)
        q = study.quantiles(method, choice)
        steps_rho = spearman(q.p, q.steps_to_unlearn)[0] if len(q) >= 3 else float("nan")
        if not r or not np.isfinite(r["spearman"]):
            return _untestable()
        ok = False if r["spearman"] <= 0 else True if r["spearman_p"] < SIGNIFICANCE else None
        return {"number": r["spearman"],
                "value": f"rho(A, P) {_fmt(r['spearman'])} (p {_fmt(r['spearman_p'], 3)}); "
                         f"rho(steps, P) {_fmt(steps_rho)}",
                "interval": f"slope of log A on log P {_fmt(r['log_log_slope'])} "
                            f"[{_fmt(r['slope_low'])}, {_fmt(r['slope_high'])}]",
                "verdict": _verdict(ok)}
    return claim


CLAIMS_TESTED = {
    "1. most points unlearn in few steps, a few need ~retraining effort": (
        "share of quantile groups unlearned within K/10 steps; the top-m group's steps",
        claim_quick),
    "2. steps grow like a*log(b*P + 1) in the privacy loss P": (
        "Spearman rho of steps with P over quantile groups; censored log-likelihoods, log law "
        "vs line", claim_log),
    "2b. the response amplitude grows with P at a shared decay rate (the bound's shape)": (
        "Spearman rho of A with P in D(k) = A exp(-ck) + floor; F-test of one shared rate",
        claim_shape),
    "3. P picks out the hard points better than the baseline metrics": (
        "step-0 attack accuracy, group ranked high by P minus group ranked high by the "
        "baseline, on the points where they disagree most (the number: the smallest difference "
        "over the baselines)", claim_metrics),
    "4. harder points sit behind higher loss barriers (against a control)": (
        "Spearman rho of P with the barrier on F minus the barrier on class-matched control "
        "points, mean over model pairs", claim_barriers),
}
METHOD_MEASURE = "Spearman rho of the response amplitude A with P over quantile groups"


# ------------------------------------------------------------------------------ neighbours
def neighbours(study: Study, main: Choice, levels=analysis.LEVELS) -> list[Choice]:
    """The main choice's neighbours: the other levels, half the models, orders alpha/2, 2 alpha."""
    out = [replace(main, level=lv, label=f"level {lv:g}") for lv in levels if lv != main.level]
    if (study.tables.attack.design == "half").any():
        out.append(replace(main, design="half", label="half the models"))
    prefix = "privacy_loss_a"
    if main.p_column.startswith(prefix):
        alpha = float(main.p_column.removeprefix(prefix))
        for other in (alpha / 2, alpha * 2):
            column = f"{prefix}{other:g}"
            if column in study.scores:
                out.append(replace(main, p_column=column, label=f"alpha {other:g}"))
    return out


def claims_table(study: Study) -> pd.DataFrame:
    """Every claim under the main choice (the study's level, all models, the primary score) with
    the verdicts of its neighbours; fragile when any neighbour's verdict differs."""
    main = Choice(study.level, "all", study.primary_score)
    tested = dict(CLAIMS_TESTED)
    for method in study.methods:
        if method != study.primary_method:
            tested[f"5. the trend holds for {method}"] = (METHOD_MEASURE, claim_method(method))
    rows = []
    for claim, (measure, test) in tested.items():
        cache: dict = {}

        def run(choice: Choice) -> dict:
            key = tuple(getattr(choice, f) for f in test.depends_on)
            if key not in cache:
                cache[key] = test(study, choice)
            return cache[key]

        result = run(main)
        others = {c.label: run(c)["verdict"] for c in neighbours(study, main)}
        rows.append({"claim": claim, "measure": measure,
                     **{k: result[k] for k in ("number", "value", "interval", "verdict")},
                     "neighbours": "; ".join(f"{k}: {v}" for k, v in others.items()),
                     "fragile": any(v != result["verdict"] for v in others.values())})
    return CLAIMS.frame(rows)


# ------------------------------------------------------------------------ chapters' findings
def claim_id(claim: str) -> str:
    """The short name of a claim: ``2b`` for ``2b. the response ...``, ``5 (finetune)`` for
    ``5. the trend holds for finetune``."""
    head = claim.split(".", 1)[0]
    return f"{head} ({claim.rsplit(' for ', 1)[1]})" if head == "5" and " for " in claim else head


def verdict_text(verdict: str, fragile: bool) -> str:
    """A verdict as the book writes it: ``, fragile`` added where a neighbour differs."""
    return verdict + (", fragile" if fragile else "")


def verdicts(claims: pd.DataFrame) -> dict[str, str]:
    """Each claim's :func:`verdict_text` by its short name:
    ``{"claim_1": "supported", "claim_5_finetune": "not supported, fragile", ...}``."""
    out = {}
    for row in claims.itertuples():
        key = "claim_" + claim_id(row.claim).replace(" (", "_").rstrip(")")
        out[key] = verdict_text(row.verdict, row.fragile)
    return out


def _status_counts(q: pd.DataFrame) -> dict[str, str]:
    counts = q.status.value_counts()
    return {k.replace(" ", "_"): analysis.fmt(int(counts.get(k, 0)))
            for k in ("unlearned", "censored", "never distinguishable")}


def _shared_rate_clause(r: dict) -> str:
    if r["responding_groups"] < 2 or not np.isfinite(r["shared_rate_p"]):
        return (f"only {r['responding_groups']} group(s) respond above the null at step 0, so "
                "no decay rates are compared")
    outcome = "differ between" if r["shared_rate_p"] < SIGNIFICANCE else \
        "are consistent with one shared rate over"
    return (f"the decay rates {outcome} the {r['responding_groups']} responding groups (F-test "
            f"p = {analysis.fmt(r['shared_rate_p'], 2)})")


def _disagreement_clause(d: pd.DataFrame) -> str:
    if d.empty:
        return "no disagreement groups were unlearned, so the metrics are not compared"
    parts = []
    for r in d.itertuples():
        outcome = "harder" if r.harder == "privacy loss" else \
            "easier" if r.harder == r.baseline else "not measurably harder"
        parts.append(f"against {r.baseline} the group P ranks higher is {outcome} (step-0 "
                     f"accuracy difference {analysis.fmt(r.difference, 2)}, 95% interval "
                     f"[{analysis.fmt(r.low, 2)}, {analysis.fmt(r.high, 2)}])")
    return "; ".join(parts)


def _top_clause(top) -> str:
    if top.status == "never distinguishable":
        return "was never distinguishable from retrained models, not even at step 0"
    if top.censored:
        return "was still distinguishable at the end of the budget (censored)"
    return f"was unlearned after {analysis.fmt(int(top.steps_to_unlearn))} steps"


def unlearning_findings(study: Study, claims: pd.DataFrame) -> dict[str, str]:
    """The numbers of the unlearning chapter's closing paragraph, as the book prints them, from
    the same analyses as claims 1, 2, 2b and 3 under the main choice, with their verdicts."""
    fmt = analysis.fmt
    main = Choice(study.level, "all", study.primary_score)
    q = study.quantiles(study.primary_method, main)
    top = analysis.select(study.steps, study.primary_method, main.level, "all", "top")
    top = top[top.score == study.primary_score].iloc[0]
    f = analysis.steps_fits(q, study.checkpoints)
    r = _response(study, study.primary_method, main) or \
        {"spearman": np.nan, "spearman_p": np.nan, "responding_groups": 0,
         "shared_rate_p": np.nan}
    d = analysis.disagreement_comparison(study.tables, study.steps, study.primary_score,
                                         list(study.baselines), study.primary_method,
                                         main.level)
    ll_log, ll_line = f["log_likelihood_log"], f["log_likelihood_line"]
    fit = "the log law fits at least as well" if ll_log >= ll_line else "a line fits better"
    return {"method": study.primary_method, "budget": fmt(study.budget),
            "tenth": fmt(study.budget / 10), "groups": fmt(len(q)), **_status_counts(q),
            "quick_share": analysis.percent((q.steps_to_unlearn <= study.budget / 10).mean()),
            "top_clause": _top_clause(top),
            "training_steps": fmt(study.training_steps),
            "rho_steps": fmt(f["spearman"], 2), "rho_steps_p": fmt(f["spearman_p"], 2),
            "ll_log": fmt(ll_log), "ll_line": fmt(ll_line), "fit_outcome": fit,
            "rho_amplitude": fmt(r["spearman"], 2), "rho_amplitude_p": fmt(r["spearman_p"], 2),
            "shared_rate_clause": _shared_rate_clause(r),
            "disagreement_clause": _disagreement_clause(d), **verdicts(claims)}


def barrier_findings(study: Study, claims: pd.DataFrame) -> dict[str, str]:
    """The numbers of the loss-barrier chapter's closing paragraph, as the book prints them:
    claim 4's trends of the controlled barrier with P (independent and coupled partner, clean
    and flipped points) and the trends of the loss gap and the distance, with the verdict."""
    fmt = analysis.fmt
    controlled, p, trends = _barrier_trends(
        study, Choice(study.level, "all", study.primary_score))
    out = {}
    for (partner, points), t in trends.items():
        key = f"{partner}_{points}"
        out[f"{key}_rho"] = fmt(t["spearman"], 2)
        out[f"{key}_interval"] = f"[{fmt(t['low'], 2)}, {fmt(t['high'], 2)}]"
        out[f"{key}_trend"] = analysis.trend(t["spearman"], t["low"], t["high"])
        out[f"{key}_groups"] = fmt(t["groups"])
    by_group = analysis.barrier_by_group(controlled, study.tables.groups)
    main = by_group[(by_group.kind == "quantile") & (by_group.partner == "independent")
                    & (by_group.points == "clean")]
    main = main.assign(p=main.group.map(p))
    for column in ("loss_gap", "distance"):
        rho = spearman(main.p, main[column])[0] if len(main) >= 3 else np.nan
        out[f"{column}_rho"] = fmt(rho, 2)
    if out["independent_flipped_groups"] == "0":
        out["flipped_clause"] = "No quantile group holds flipped points, so they are not shown apart."
    else:
        out["flipped_clause"] = (f"On flipped points the controlled barrier "
                                 f"{out['independent_flipped_trend']} (ρ = "
                                 f"{out['independent_flipped_rho']}, "
                                 f"{out['independent_flipped_interval']}).")
    return {**out, **verdicts(claims)}


def summary_findings(claims: pd.DataFrame) -> dict[str, str]:
    """The summary chapter's closing paragraph: which claims each verdict went to and which
    verdicts are fragile."""
    ids = claims.claim.map(claim_id)
    named = {v: analysis.listing(list(ids[claims.verdict == v]))
             for v in (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)}
    fragile = list(ids[claims.fragile.astype(bool)])
    sentence = " ".join(f"{v.capitalize()}: {named[v]}." for v in named)
    return {"claims": analysis.fmt(len(claims)), "verdict_sentence": sentence,
            "fragile_sentence": (f"The verdicts on claims {analysis.listing(fragile)} change "
                                 "under a neighbouring analysis choice, so they are fragile.")
            if fragile else "No verdict changes under a neighbouring analysis choice."}
