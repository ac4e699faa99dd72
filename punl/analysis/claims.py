"""Each claim of the study: the number that tests it, its interval, a verdict, its power at the
effect measured, and the verdicts under neighbouring analysis choices.

An analysis *choice* is the level at which a point or group is called distinguishable, the
design (all models, or half of each kind) and the order alpha of the privacy loss P. The main
choice is the configuration's level, all models and the primary score; its neighbours are the
other levels of :data:`punl.core.config.LEVELS`, half the models, and the orders alpha / 2 and
2 alpha. A claim whose verdict changes under a neighbour is reported as fragile.

Claims 1, 2 and 3 are decided on the per-point study where the run has one
(:mod:`punl.analysis.pointclaims` states those rules), on the quantile groups otherwise; claims 2b, 4 and
5 on the groups. Every rule says "supported" only where a test rejects the alternative at
:data:`SIGNIFICANCE` (with checks that must not reject beside it: claim 2's goodness of fit and
claim 2b's shared rate are vetoes, reported with their p-values), "not supported" only where an
interval (or a test) excludes the claim's direction, and "inconclusive" otherwise; the group
rule of claim 1 is the exception, a description of ten groups that tests nothing, which is why
claim 1 is decided on points wherever a run has them:

1. (groups) Supported when at least half of the quantile groups are unlearned within K/10 and
   the top group needs at least T/2 steps or is censored; otherwise inconclusive (a share of
   ten groups has no interval to exclude anything).
2. (groups) The law test of :func:`punl.analysis.lawtest.law_test` over the quantile groups, as on points.
2b. Supported when the response amplitude rises with P (Spearman, significant) and one decay
   rate is not rejected (F-test); not supported when it falls significantly or the rates
   differ (F-test p < 0.05).
3. (groups) On the points where P and a baseline disagree most, the step-0 attack accuracy of
   the group P ranks higher minus the other's, with a 95% interval: supported when every
   interval lies above 0, not supported when one lies below.
4. Harder points sit behind higher loss barriers: Spearman's rho of the quantile groups' P with
   their controlled barrier normalised by the loss gap, with a bootstrap interval over model
   pairs and points; supported above 0, not supported below.
5. The trend holds for each other method: the response amplitude rises with P (Spearman,
   significant); not supported when it falls significantly.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import numpy as np
import pandas as pd

from . import measures, pointclaims
from .barriers import barrier_trends, trend_interval
from .measures import fmt
from .fits import spearman
from .power import spearman_power, z_power
from ..core.tables import CLAIMS, POINT_STEPS, UnlearnTables, privacy_column, privacy_order

SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE = "supported", "not supported", "inconclusive"
SIGNIFICANCE = 0.05  # level of the tests inside the verdict rules


@dataclass(frozen=True)
class Choice:
    """One analysis choice: level, design and the scores column that places points or groups."""

    level: float
    design: str
    p_column: str
    label: str = "main"


@dataclass(frozen=True)
class Study:
    """What the verdicts read: the stages' tables, the derived steps tables and the settings."""

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
    point_steps: pd.DataFrame = field(default_factory=lambda: POINT_STEPS.frame([]))
    point_checkpoints: tuple[int, ...] = ()
    law_simulations: int = pointclaims.LAW_SIMULATIONS   # per side, in claim 2's law test

    @property
    def has_points(self) -> bool:
        """Whether the run has a per-point study (claims 1 to 3 are then decided on it)."""
        return bool((self.point_steps.set == "train").any())

    @property
    def checkpoints(self) -> np.ndarray:
        """The unlearning checkpoints (the per-point study's where the run has one, else the
        group study's; both use the configuration's)."""
        if self.point_checkpoints or not len(self.tables.attack):
            return np.asarray(self.point_checkpoints)
        return np.sort(self.tables.attack.step.unique())

    def quantiles(self, method: str, choice: Choice) -> pd.DataFrame:
        rows = measures.select(self.steps, method, choice.level, choice.design)
        return measures.with_score(rows, self.tables.points, self.scores, choice.p_column)

    def points(self, choice: Choice, kind: str = "train") -> pd.DataFrame:
        """The per-point rows under ``choice`` (training points with their scores: P as ``p``,
        the baselines by name; or the placebo's test points)."""
        rows = pointclaims.select_points(self.point_steps, choice.level, choice.design, kind)
        if kind != "train":
            return rows
        columns = list(dict.fromkeys([choice.p_column, *self.baselines]))
        return pointclaims.with_scores(rows, self.scores, columns).assign(
            p=lambda r: r[choice.p_column])

    def rng(self, *labels) -> np.random.Generator:
        from ..study.groups import stream_seed
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


@dataclass(frozen=True)
class ClaimResult:
    """One claim tested under one analysis choice: the claims table's columns of it."""

    number: float        # the number that tests the claim (NaN: nothing to test it on)
    value: str           # the measurement, in words
    interval: str        # its interval and what stands beside it, in words
    verdict: str         # SUPPORTED, NOT_SUPPORTED or INCONCLUSIVE
    power: float         # the test's power at the effect measured (NaN: no power model)


def _untestable(why: str = "nothing in this run to test it on") -> ClaimResult:
    """A claim's result where the run has nothing to test it on."""
    return ClaimResult(number=np.nan, value=why, interval="", verdict=INCONCLUSIVE, power=np.nan)


def _pct(x: float) -> str:
    return measures.percent(x, 2)


# ------------------------------------------------------------------------------ claim 1
@depends_on("level", "design")
def claim_quick(study: Study, choice: Choice) -> ClaimResult:
    """Claim 1: on points where the run has a per-point study (:mod:`punl.analysis.pointclaims`), else on
    the quantile groups (module docstring)."""
    if study.has_points:
        return _quick_points(study, choice)
    q = study.quantiles(study.primary_method, choice)
    top = measures.select(study.steps, study.primary_method, choice.level, choice.design, "top")
    top = top[top.score == study.primary_score]
    if q.empty or top.empty:
        return _untestable()
    quick = float((q.steps_to_unlearn <= study.budget / 10).mean())
    never = int((q.status == "never distinguishable").sum())
    top = top.iloc[0]
    hard = bool(top.censored or top.steps_to_unlearn >= study.training_steps / 2)
    measurable = (q.adjusted_p_step0 <= choice.level).any() or top.adjusted_p_step0 <= choice.level
    pts = measures.point_fractions(study.tables, choice.level, study.checkpoints, study.budget)
    pts = pts[(pts.method == study.primary_method) & pts.group.isin(q.group)]
    return ClaimResult(
        number=quick,
        value=f"{quick:.2f} of quantile groups within K/10 ({never} of {len(q)} never "
              f"distinguishable); top group {top.status}, {top.steps_to_unlearn} steps",
        interval=f"points: step 0 {pts.step0_fraction.mean():.2f} (null "
                 f"{pts.null_step0_fraction.mean():.2f}), censored "
                 f"{pts.censored_fraction.mean():.2f} (null "
                 f"{pts.null_censored_fraction.mean():.2f})",
        verdict=_verdict(True if measurable and quick >= 0.5 and hard else None), power=np.nan)


def _quick_points(study: Study, choice: Choice) -> ClaimResult:
    r = pointclaims.quick_claim(study.points(choice), study.points(choice, "placebo"),
                                study.budget, study.training_steps)
    return ClaimResult(
        number=r.quick,
        value=f"{_pct(r.quick)} of {measures.fmt(r.points)} points unlearned within "
              f"K/10 = {measures.fmt(study.budget / 10)} steps; {_pct(r.hard)} need at "
              f"least T/2 = {measures.fmt(study.training_steps / 2)} steps or are "
              f"censored (placebo {_pct(r.hard_placebo)})",
        interval=f"quick share [{_pct(r.quick_low)}, {_pct(r.quick_high)}]; hard "
                 f"share above the placebo's {_pct(r.excess)} "
                 f"[{_pct(r.excess_low)}, {_pct(r.excess_high)}]",
        verdict=_verdict(r.ok), power=r.power)


# ------------------------------------------------------------------------------ claim 2
def law_result(study: Study, choice: Choice) -> pointclaims.LogLawClaim | None:
    """Claim 2's measurement under ``choice`` (:func:`punl.analysis.pointclaims.log_law_claim` over the
    points, or the quantile groups, with its ``rows``); None with fewer than 3 rows. The
    chapters call it too, so their numbers are the claims table's."""
    rows = study.points(choice) if study.has_points else \
        study.quantiles(study.primary_method, choice)
    if len(rows) < 3:
        return None
    return pointclaims.log_law_claim(
        rows, "p", study.checkpoints,
        study.rng("law", choice.level, choice.design, choice.p_column), study.law_simulations,
        study.points(choice, "placebo") if study.has_points else None)


@depends_on("level", "design", "p_column")
def claim_log(study: Study, choice: Choice) -> ClaimResult:
    """Claim 2: the log law against a line (:func:`punl.analysis.pointclaims.log_law_claim`), over the
    points where the run has a per-point study, else over the quantile groups."""
    r = law_result(study, choice)
    if r is None:
        return _untestable()
    law = r.law
    what = "points" if study.has_points else "quantile groups"
    return ClaimResult(
        number=law.statistic,
        value=f"log-likelihood of the log law minus the line's {fmt(law.statistic, 2)} "
              f"over {measures.fmt(len(r.rows))} {what}: line rejected p "
              f"{fmt(law.p_line, 3)}, log law rejected p {fmt(law.p_log, 3)}; "
              f"rho(steps, P) {fmt(r.spearman)}",
        interval=f"goodness of fit p: log law {fmt(law.gof_log, 3)}, line "
                 f"{fmt(law.gof_line, 3)}"
                 f"{' (neither law fits)' if max(law.gof_log, law.gof_line) <= SIGNIFICANCE else ''}"
                 f"; fitted a = {fmt(law.log_law.a, 3)}, "
                 f"b = {measures.fmt(law.log_law.b, 3)}",
        verdict=_verdict(r.ok), power=r.power)


# ------------------------------------------------------------------------------ claim 2b
def response(study: Study, method: str, choice: Choice) -> measures.ResponseSummary | None:
    """:func:`punl.analysis.measures.response_summary` of ``method``'s quantile groups under ``choice``;
    None with fewer than 3 groups."""
    q = study.quantiles(method, choice)
    return measures.response_summary(q, study.tables.attack) if len(q) >= 3 else None


def _correlation_verdict(rho: float, p: float) -> bool | None:
    """True when rho > 0 at SIGNIFICANCE, False when rho < 0 at SIGNIFICANCE, else None."""
    if not np.isfinite(rho) or not np.isfinite(p) or p > SIGNIFICANCE:
        return None
    return bool(rho > 0)


@depends_on("design", "p_column")
def claim_shape(study: Study, choice: Choice) -> ClaimResult:
    """Claim 2b (module docstring)."""
    r = response(study, study.primary_method, choice)
    if r is None or not np.isfinite(r.spearman):
        return _untestable()
    rates_differ = np.isfinite(r.shared_rate_p) and r.shared_rate_p < SIGNIFICANCE
    trend = _correlation_verdict(r.spearman, r.spearman_p)
    ok = False if (trend is False or rates_differ) else \
        True if trend and np.isfinite(r.shared_rate_p) else None
    groups = len(study.quantiles(study.primary_method, choice))
    return ClaimResult(
        number=r.spearman,
        value=f"rho(A, P) {fmt(r.spearman)} (p {fmt(r.spearman_p, 4)}); shared "
              f"rate {fmt(r.shared_rate, 4)}, F-test p {fmt(r.shared_rate_p, 4)} "
              f"over {r.responding_groups} responding groups",
        interval=f"slope of log A on log P {fmt(r.log_log_slope)} "
                 f"[{fmt(r.slope_low)}, {fmt(r.slope_high)}]",
        verdict=_verdict(ok), power=spearman_power(r.spearman, groups, SIGNIFICANCE))


# ------------------------------------------------------------------------------ claim 3
@depends_on("level", "design", "p_column")
def claim_metrics(study: Study, choice: Choice) -> ClaimResult:
    """Claim 3: the hardest m points by P against the hardest m by each baseline where the run
    has a per-point study (:func:`punl.analysis.pointclaims.hardest_claim`), else the disagreement
    groups (module docstring)."""
    if study.has_points:
        return _metrics_points(study, choice)
    d, partial = disagreement_result(study, choice)
    if d.empty:
        return _untestable()
    value = "; ".join(f"vs {r.baseline}: {fmt(r.difference, 4)} [{fmt(r.low, 4)}, "
                      f"{fmt(r.high, 4)}]" for r in d.itertuples())
    interval = "; ".join(f"partial rho(D, P | {r.baseline}) {fmt(r.p_given_baseline)} "
                         f"[{fmt(r.low)}, {fmt(r.high)}]" for r in partial.itertuples())
    ok = False if (d.harder.isin(d.baseline)).any() else \
        True if (d.harder == "privacy loss").all() else None
    power = min(float(z_power(r.difference, (r.high - r.low) / 3.92, SIGNIFICANCE))
                for r in d.itertuples())
    return ClaimResult(number=float(d.difference.min()), value=value, interval=interval,
                       verdict=_verdict(ok), power=power)


def disagreement_result(study: Study, choice: Choice) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Claim 3's measurement on the disagreement groups under ``choice``: the comparison of
    :func:`punl.analysis.measures.disagreement_comparison` and the per-point partial correlations (empty
    without disagreement groups). The group chapter calls it too."""
    d = measures.disagreement_comparison(study.tables, study.steps, study.primary_score,
                                         list(study.baselines), study.primary_method,
                                         choice.level, choice.design)
    if d.empty:
        return d, pd.DataFrame()
    partial = measures.partial_correlations(
        measures.point_response(study.tables, study.primary_method), study.scores,
        choice.p_column, list(d.baseline), study.rng("partial", choice.p_column), n_boot=200)
    return d, partial


def hardest_result(study: Study, choice: Choice) -> pointclaims.HardestClaim | None:
    """Claim 3's measurement on points under ``choice`` (:func:`punl.analysis.pointclaims.hardest_claim`);
    None without baselines or with fewer than 20 points."""
    rows = study.points(choice)
    if not study.baselines or len(rows) < 20:
        return None
    return pointclaims.hardest_claim(rows, "p", list(study.baselines), study.budget,
                                     study.rng("hardest", choice.level, choice.design,
                                               choice.p_column))


def _metrics_points(study: Study, choice: Choice) -> ClaimResult:
    r = hardest_result(study, choice)
    if r is None:
        return _untestable("no baseline score to compare with")
    d = r.comparison
    value = "; ".join(f"hardest {measures.fmt(int(x.m))} by P {fmt(x.steps_p, 2)} steps vs "
                      f"by {x.baseline} {fmt(x.steps_baseline, 2)}: {fmt(x.difference, 2)} "
                      f"[{fmt(x.low, 2)}, {fmt(x.high, 2)}]" for x in d.itertuples())
    interval = "; ".join(f"partial rho(steps, P | {x.baseline}) {fmt(x.partial_rho)} "
                         f"[{fmt(x.low)}, {fmt(x.high)}]" for x in r.partial.itertuples())
    if r.equivalent:
        interval += (f"; within +-{measures.percent(pointclaims.EQUIVALENCE)} of P's steps at "
                     f"every m: {', '.join(r.equivalent)}")
    return ClaimResult(number=float(d.difference.min()), value=value, interval=interval,
                       verdict=_verdict(r.ok), power=r.power)


# ------------------------------------------------------------------------------ claim 4
@depends_on("p_column")
def claim_barriers(study: Study, choice: Choice) -> ClaimResult:
    """Claim 4 on clean points at step 0 with the independent partner (module docstring)."""
    trends = barrier_trends(study, choice).trends
    main = trends[("independent", "clean")]
    if not np.isfinite(main.spearman):
        return _untestable()
    ok = True if main.low > 0 else False if main.high < 0 else None
    others = "; ".join(f"{partner}, {points}: {trend_interval(t)}"
                       for (partner, points), t in trends.items()
                       if (partner, points) != ("independent", "clean") and t.groups)
    return ClaimResult(
        number=main.spearman,
        value=f"rho(P, controlled barrier / loss gap) {fmt(main.spearman)} over "
              f"{main.groups} groups (independent partner, clean points; groups of "
              f"fewer than {measures.MIN_BARRIER_POINTS} such points left out)",
        interval=f"[{fmt(main.low)}, {fmt(main.high)}]; {others}",
        verdict=_verdict(ok),
        power=float(z_power(main.spearman, (main.high - main.low) / 3.92, SIGNIFICANCE)))


# ------------------------------------------------------------------------------ claim 5
def claim_method(method: str) -> Callable[[Study, Choice], ClaimResult]:
    @depends_on("design", "p_column")
    def claim(study: Study, choice: Choice) -> ClaimResult:
        """Claim 5 for one method (module docstring)."""
        r = response(study, method, choice)
        q = study.quantiles(method, choice)
        steps_rho = spearman(q.p, q.steps_to_unlearn)[0] if len(q) >= 3 else float("nan")
        if r is None or not np.isfinite(r.spearman):
            return _untestable()
        return ClaimResult(
            number=r.spearman,
            value=f"rho(A, P) {fmt(r.spearman)} (p {fmt(r.spearman_p, 4)}); "
                  f"rho(steps, P) {fmt(steps_rho)}",
            interval=f"slope of log A on log P {fmt(r.log_log_slope)} "
                     f"[{fmt(r.slope_low)}, {fmt(r.slope_high)}]",
            verdict=_verdict(_correlation_verdict(r.spearman, r.spearman_p)),
            power=spearman_power(r.spearman, len(q), SIGNIFICANCE))
    return claim


# ------------------------------------------------------------------------------ the claims
@dataclass(frozen=True)
class Claim:
    """One claim: its id, statement, what measures it (on points, and on groups) and its test."""

    id: str
    statement: str
    measure: str
    group_measure: str
    test: Callable[[Study, Choice], ClaimResult]
    method: str = ""        # the unlearning method a claim about one method is about

    @property
    def key(self) -> str:
        """The claims table's ``id``: ``2b``, or ``5 (finetune)`` for a claim about one method."""
        return f"{self.id} ({self.method})" if self.method else self.id

    @property
    def title(self) -> str:
        """``2b. the response amplitude ...``: the claims table's ``claim`` column."""
        return f"{self.id}. {self.statement}"


CLAIMS_TESTED = (
    Claim("1", "most points unlearn in few steps, a few need ~retraining effort",
          "share of training points unlearned within K/10 steps; share needing at least T/2 "
          "steps or censored, against the placebo's",
          "share of quantile groups unlearned within K/10 steps; the top-m group's steps",
          claim_quick),
    Claim("2", "steps grow like a*log(b*P + 1) in the privacy loss P",
          "log-likelihood of the log law minus the line's over the training points' censored "
          "steps, by a parametric-bootstrap test",
          "log-likelihood of the log law minus the line's over the quantile groups' censored "
          "steps, by a parametric-bootstrap test", claim_log),
    Claim("2b", "the response amplitude grows with P at a shared decay rate (the bound's shape)",
          "Spearman rho of A with P in D(k) = A exp(-ck) + floor over quantile groups; F-test "
          "of one shared rate", "", claim_shape),
    Claim("3", "P picks out the hard points better than the baseline metrics",
          "mean steps of the hardest m points by P minus the hardest m by each baseline "
          "(m = 5% and 10% of N; the number: the smallest difference)",
          "step-0 attack accuracy, group ranked high by P minus group ranked high by the "
          "baseline, on the points where they disagree most (the number: the smallest "
          "difference over the baselines)", claim_metrics),
    Claim("4", "harder points sit behind higher loss barriers (against a control)",
          "Spearman rho of P with the barrier on F minus the barrier on class-matched control "
          "points over the loss gap on F (means over model pairs; bootstrap over pairs and "
          "points)", "", claim_barriers),
)
METHOD_MEASURE = "Spearman rho of the response amplitude A with P over quantile groups"


def claims_for(study: Study) -> list[Claim]:
    """The claims a study tests: the five, then claim 5 for each method but the primary."""
    return [*CLAIMS_TESTED,
            *(Claim("5", f"the trend holds for {m}", METHOD_MEASURE, "", claim_method(m), m)
              for m in study.methods if m != study.primary_method)]


# ------------------------------------------------------------------------------ neighbours
def neighbours(study: Study, main: Choice, levels=measures.LEVELS) -> list[Choice]:
    """The main choice's neighbours: the other levels, half the models, orders alpha/2, 2 alpha."""
    out = [replace(main, level=lv, label=f"level {lv:g}") for lv in levels if lv != main.level]
    if (study.tables.attack.design == "half").any() or (study.point_steps.design == "half").any():
        out.append(replace(main, design="half", label="half the models"))
    alpha = privacy_order(main.p_column)
    if alpha is not None:
        for other in (alpha / 2, alpha * 2):
            column = privacy_column(other)
            if column in study.scores:
                out.append(replace(main, p_column=column, label=f"alpha {other:g}"))
    return out


def claims_table(study: Study) -> pd.DataFrame:
    """Every claim under the main choice (the study's level, all models, the primary score) with
    the verdicts of its neighbours; fragile when any neighbour's verdict differs."""
    main = Choice(study.level, "all", study.primary_score)
    rows = []
    for claim in claims_for(study):
        cache: dict = {}

        def run(choice: Choice) -> ClaimResult:
            key = tuple(getattr(choice, f) for f in claim.test.depends_on)
            if key not in cache:
                cache[key] = claim.test(study, choice)
            return cache[key]

        result = run(main)
        others = {c.label: run(c).verdict for c in neighbours(study, main)}
        on_points = study.has_points and claim.group_measure
        rows.append({"id": claim.key, "claim": claim.title,
                     "measure": claim.measure if on_points or not claim.group_measure
                     else claim.group_measure,
                     **asdict(result),
                     "neighbours": "; ".join(f"{k}: {v}" for k, v in others.items()),
                     "fragile": any(v != result.verdict for v in others.values())})
    return CLAIMS.frame(rows)
