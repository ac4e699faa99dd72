"""The book's front page: what each run in the book is, the paper's first figure drawn from its
per-point study, the claims of every run side by side with links to where each is decided, and
the two commands that rebuild it with their measured times.

:func:`write_landing` writes ``book/generated/landing.md`` (which ``book/intro.md`` includes) and
its figures from the published tables of the run chapters (:mod:`punl.publish.book`); nothing is
recomputed but the two laws' maximum-likelihood fits of the figure.
"""
from __future__ import annotations

import html
import io
import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd

from ..core.outputs import published_record, read_published
from ..core.store import atomic_write_bytes
from .chapters import (FRONT_PAGE, chapter_notebooks, doc_name, left_out_chapters,
                       run_chapter_plans, warn_left_out)
from .markdown import Markdown, claim_anchor, display_path, md_cell, md_code, md_table
from .plan import RunPlan

if TYPE_CHECKING:
    from ..analysis.measures import Headline
    from ..analysis.pointclaims import PointOverview

GENERATED = Path("book") / "generated"
LANDING = GENERATED / "landing.md"
HEADLINE = GENERATED / "headline.png"
RUNS_FIGURE = GENERATED / "runs.png"
#: The measured times of the README's two commands (columns ``command``, ``seconds``, ``what``,
#: ``measured``), under the book root; the front page quotes them where the file exists.
TIMINGS = Path("results") / "timings.csv"

HEADLINE_TABLES = ("claims", "steps", "points", "scores", "attack")


@dataclass(frozen=True)
class RunResult:
    """What the front page shows of one run chapter (:func:`run_results`)."""

    name: str                           # the chapter folder's name
    index: str                          # the doc of the chapter's index
    config: dict[str, Any]              # the run's configuration, as its run.json records it
    n_train: int                        # its training points
    wall_time_s: float | None           # how long it took (None: not recorded)
    replication: pd.DataFrame | None    # each claim's replication over seeds, where a sweep ran
    doc: str                            # the doc of its summary chapter (its index without one)
    claims: pd.DataFrame                # its claims table
    budget: int                         # its budget K
    method: str                         # its primary method
    score: str                          # its primary score
    headline: Headline                  # :func:`punl.analysis.measures.headline` of method and score
    stages_reused: bool = False         # every stage came from an earlier run's artifacts
    points: PointOverview | None = None  # its per-point study's steps and fits (None: none)


def run_results(root: Path) -> list[RunResult]:
    """What the front page shows of every run chapter whose published tables verify: its
    ``name``, the ``doc`` of its summary chapter (the notebook named ``*summary*``, else its
    index), its ``claims`` table, its ``budget`` K and :func:`punl.analysis.measures.headline`.
    A run that cannot be shown is left out with a :class:`ChapterWarning` (:func:`results_and_problems`)."""
    results, problems = results_and_problems(root)
    warn_left_out(problems, "the front page")
    return results


def results_and_problems(root: Path) -> tuple[list[RunResult], list[tuple[str, str]]]:
    """:func:`run_results` and (chapter, why) for each run chapter whose results cannot be shown."""
    results, problems = [], []
    for folder, plan in run_chapter_plans(root):
        name = f"book/runs/{folder.name}"
        record = published_record(plan.out_dir)
        if not isinstance(record, dict):
            problems.append((name, f"its published run.json in {display_path(plan.out_dir, root)}"
                                   " is missing or unreadable"))
            continue
        tables = {t: read_published(plan.out_dir, t) for t in HEADLINE_TABLES}
        bad = [f"{t}.parquet" for t, v in tables.items() if v is None]
        if bad:
            problems.append((name, f"its published {', '.join(bad)} missing or not as run.json "
                                   "records"))
            continue
        try:
            results.append(_run_result(root, folder, plan, record, tables))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            problems.append((name, f"its published run.json is malformed ({type(err).__name__}: "
                                   f"{err})"))
    return results, problems


def _run_result(root: Path, folder: Path, plan: RunPlan, record: dict,
                tables: dict[str, pd.DataFrame]) -> RunResult:
    """One run's :class:`RunResult` from its published record and tables."""
    from ..analysis.measures import headline
    cfg = record["config"]
    summary = [nb for nb in chapter_notebooks(folder, plan) if "summary" in nb.stem]
    data = headline(tables["steps"], tables["points"], tables["scores"], cfg["primary_method"],
                    cfg["level"], cfg["primary_score"], np.sort(tables["attack"].step.unique()))
    points = _point_overview(plan.out_dir, cfg, tables["scores"])
    return RunResult(
        name=folder.name, index=doc_name(folder / "index.md", root), config=cfg,
        n_train=len(tables["scores"]), wall_time_s=record.get("wall_time_s"),
        replication=replication_for(root, cfg["name"]),
        doc=doc_name(summary[0] if summary else folder / "index.md", root),
        claims=tables["claims"], budget=int(cfg["unlearn_steps"]),
        method=cfg["primary_method"], score=cfg["primary_score"], headline=data,
        stages_reused=_all_reused(record), points=points)


def _point_overview(out_dir: Path, cfg: dict, scores: pd.DataFrame) -> PointOverview | None:
    """The run's per-point steps and claim 2's two fits at its level
    (:func:`punl.analysis.pointclaims.point_overview`), or None without a per-point study."""
    from ..analysis.pointclaims import point_overview
    from ..study.unlearn import checkpoint_steps
    steps = read_published(out_dir, "point_steps")
    if steps is None or not (steps.set == "train").any():
        return None
    checkpoints = checkpoint_steps(int(cfg["unlearn_steps"]), int(cfg["n_checkpoints"]))
    return point_overview(steps, scores, cfg["primary_score"], float(cfg["level"]), checkpoints)


def _all_reused(record: dict) -> bool:
    stages = record.get("stages")
    return isinstance(stages, dict) and bool(stages) and all(
        s in ("reused", "not run") for s in stages.values()) and "reused" in stages.values()


#: The file a sweep over ``seed`` leaves in its chapter folder: each claim's replication
#: (:func:`punl.commands.sweep.replication_table`).
REPLICATION = "replication.parquet"


def replication_for(root: Path, config_name: str) -> pd.DataFrame | None:
    """Each claim's replication over seeds for ``config_name`` (the sweeps over ``seed`` in the
    book, :func:`punl.commands.sweep.replication_table`), or None when the book has none."""
    frames = []
    for path in sorted((Path(root) / "book" / "sweeps").glob(f"*/{REPLICATION}")):
        try:
            frame = pd.read_parquet(path)
            frames.append(frame[frame["config"] == config_name])
        except (OSError, ValueError, KeyError):    # unreadable, or not a replication table
            continue
    frames = [f for f in frames if len(f)]
    return frames[-1] if frames else None


def replication_note(replication: pd.DataFrame | None, claim: str) -> str:
    """``; over 5 seeds: supported 4, inconclusive 1`` for one claim, or empty."""
    if replication is None:
        return ""
    match = replication[replication.claim == claim]
    if match.empty:
        return ""
    r = match.iloc[0]
    counts = ", ".join(f"{v} {int(r[v])}" for v in ("supported", "not supported", "inconclusive")
                       if r[v])
    seeds = f"{int(r.runs)} seed" + ("s" if int(r.runs) != 1 else "")
    return f"; over {seeds}: {counts}"


def verdict_cell(row, doc: str, replication: pd.DataFrame | None = None) -> str:
    """A claim's verdict (:func:`punl.analysis.findings.verdict_text`) linking to the claim's
    block in the page ``doc`` (:func:`claim_anchor`; the link is relative to the front page,
    which shows the verdicts), with its power at the effect measured where the claims table
    has one."""
    from ..analysis.measures import percent
    from ..analysis.findings import verdict_text
    power = getattr(row, "power", float("nan"))
    notes = (f"power {percent(power)}" if isinstance(power, float) and np.isfinite(power)
             else "") + replication_note(replication, row.claim)
    notes = f" ({notes.lstrip('; ')})" if notes else ""
    text = verdict_text(row.verdict, row.fragile)
    if getattr(row, "id", None) is None or "summary" not in posixpath.basename(doc):
        return Markdown(f"{{doc}}`{text} </{doc}>`{notes}")
    page = posixpath.relpath(doc, posixpath.dirname(FRONT_PAGE))
    href = html.escape(f"{quote(page)}.html#{claim_anchor(row.id)}", quote=True)
    return Markdown(f'<a class="verdict" href="{href}">{html.escape(text)}</a>{notes}')


#: Formulas the claims table writes as text, and as the front page typesets them.
CLAIM_MATH = {"a*log(b*P + 1)": "$a \\log(bP + 1)$", "privacy loss P": "privacy loss $P$",
              "grows with P": "grows with $P$", "P picks out": "$P$ picks out"}


def claim_markdown(claim: str) -> Markdown:
    """A claim's text as a table cell (:func:`punl.publish.markdown.md_cell`) with its formulas
    typeset (:data:`CLAIM_MATH`)."""
    text = md_cell(claim)
    for plain, math in CLAIM_MATH.items():
        text = text.replace(md_cell(plain), math)
    return Markdown(text)


def claims_side_by_side(results: list[RunResult]) -> str:
    """A markdown table: one row per claim, one column per run, each verdict linking to the
    run's summary chapter (a dash where a run does not test the claim)."""
    claims = list(dict.fromkeys(c for r in results for c in r.claims.claim))
    rows = []
    for claim in claims:
        row = {"claim": claim_markdown(claim)}
        for r in results:
            match = r.claims[r.claims.claim == claim]
            row[f"{{doc}}`{r.name} </{r.index}>`"] = (
                verdict_cell(next(match.itertuples()), r.doc, r.replication)
                if len(match) else "—")
        rows.append(row)
    return md_table(rows)


def point_caption(result: RunResult) -> str:
    """The caption of the front figure of ``result``'s per-point study: what is drawn, then
    claim 2's measurement and verdict on the run as its claims table states them."""
    from ..analysis.findings import verdict_text
    from ..analysis.measures import fmt
    law = result.claims[result.claims.id.astype(str) == "2"]
    finding = ""
    if len(law):
        row = law.iloc[0]
        finding = (f" Claim 2 on this run: {md_cell(row.value)}; {md_cell(row.interval)}. "
                   f"Verdict: *{verdict_text(row.verdict, row.fragile)}*.")
    return (f"`{result.name}` (`{result.method}`, $K = {result.budget}$): each of its "
            f"{fmt(len(result.points.rows))} training points' steps to unlearn (the first "
            "checkpoint after which models that forgot it are never distinguishable from models "
            "retrained without it) against its privacy loss `" + result.score + "`, on a log "
            "axis; grey dots: never distinguishable, blue: unlearned within the budget, red "
            "triangles: still distinguishable at the budget (censored). Lines: the log law "
            "$\\max(0, a \\log bP)$ and the line $c + dP$, fitted by maximum likelihood to the "
            "recorded intervals. Right: the share of points distinguishable at some checkpoint per "
            "tenth of $P$, against the placebo's floor (test points no model trained on)."
            + finding)


def headline_caption(results: list[RunResult]) -> str:
    """The caption of the figure of every run's groups, naming the method and the
    privacy-loss column each run places its groups by."""
    placed = listing_runs(results)
    return (f"Each colour is one run ({placed}). Left: steps to unlearn of each quantile group "
            "against the group's median privacy loss, with the censoring-aware fit of "
            "the log law $\\max(0, a \\log bP)$; filled markers: unlearned within the budget, open: still "
            "distinguishable at the budget $K$ (dotted line, censored), crosses: never "
            "distinguishable from retrained models. Right: the amplitude $A$ of the divergence "
            "response $D(k) = A e^{-ck} + \\text{floor}$ against the same $P$, with the "
            "least-squares line of $\\log A$ on $\\log P$.")


def listing_runs(results: list[RunResult]) -> str:
    """``digits-quick: sgld, privacy_loss_a8, K = 400; ...``."""
    return "; ".join(f"`{r.name}`: `{r.method}`, `{r.score}`, $K = {r.budget}$"
                     for r in results)


def run_sentence(result: RunResult) -> str:
    """What one run is, in one sentence: its data and size, model, training, the models the
    per-point and group studies compare, the budget and how long the run took."""
    from ..analysis.measures import fmt
    from ..core.catalog import DATASET_NAMES, MODEL_NAMES
    c = result.config
    data = (f"{fmt(result.n_train)} training images of "
            f"{DATASET_NAMES.get(c['dataset'], c['dataset'])}"
            + (f" ({fmt(100 * c['label_noise'])}% of their labels flipped)"
               if c.get("label_noise") else ""))
    model = MODEL_NAMES.get(c["model"], c["model"]) + (
        f" of width {c['width']}" if c["model"] != "logreg" else "")
    training = (f"{c['runs']} runs of noisy SGD ($\\sigma = {fmt(c['sigma'])}$, "
                f"$C = {fmt(c['clip'])}$, {fmt(c['epochs'])} epochs)")
    models = c.get("point_models") or 0
    points = (f"per point, {fmt(models)} models each forgetting every point with probability "
              f"{fmt(c['forget_probability'])} (about {fmt(round(models * c['forget_probability']))}"
              f" unlearned against as many retrained models for each point); "
              if models else "")
    groups = f"per group, {c['runs']} unlearned against {c['retrain_seeds']} retrained models"
    took = (f"; the run took {fmt(result.wall_time_s / 60, 3)} min" if result.wall_time_s
            else "")
    if took and result.stages_reused:
        took += " (its stages computed by an earlier run and reused, so only the chapters ran)"
    return (f"`{result.name}`: {data}, {model}, {training}; {points}{groups}; budget "
            f"$K = {fmt(c['unlearn_steps'])}$ steps of `{c['primary_method']}`{took}.")


def left_out_text(left_out: list[tuple[str, str]]) -> str:
    """The landing page's note of the chapters and runs it cannot show, with why."""
    if not left_out:
        return ""
    items = "\n".join(f"- {md_code(name)}: {md_cell(why)}" for name, why in left_out)
    return f"\n\nNot shown, because they cannot be read:\n\n{items}\n"


def figure_block(path: str, name: str, alt: str, caption: str) -> str:
    """A MyST figure of the image ``path`` (from the book root) at the column's width."""
    return (f"```{{figure}} /{path}\n:name: {name}\n:width: 100%\n:alt: {alt}\n\n"
            f"{caption}\n```\n\n")


def front_figures(results: list[RunResult]) -> tuple[RunResult | None, bool]:
    """Which run's per-point study the front figure draws (the first run that has one, else
    None), and whether the figure of every run's groups is shown too (with more than one run,
    or where no run has a per-point study)."""
    pointed = next((r for r in results if r.points is not None), None)
    return pointed, bool(results) and (pointed is None or len(results) > 1)


def duration_text(seconds: float) -> str:
    """``3 min 48 s`` (``45 s`` under a minute), as the README and the front page state times."""
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest} s" if minutes else f"{rest} s"


def commands_text(timings: pd.DataFrame | None) -> str:
    """The two commands that rebuild the book and run every test, each with its measured time
    where ``timings`` (the :data:`TIMINGS` table) records it."""
    lines, notes = [], []
    for command, what in (("make book", "the main job: this book's quick configuration, end to "
                                        "end"),
                          ("make test-all", "every test, as CI runs them")):
        row = None if timings is None else timings[timings.command == command]
        took = ""
        if row is not None and len(row):
            r = row.iloc[0]
            took = f", {duration_text(float(r.seconds))}"
            notes.append(f"`{command}`: {md_cell(r.what)} ({md_cell(r.measured)})")
        lines.append(f"{command:<14}# {what}{took}")
    block = "```bash\n" + "\n".join(lines) + "\n```\n"
    measured = (" The times were measured on " + "; ".join(notes) + ".") if notes else ""
    return ("To rebuild this book from a clone of the repository, or to run every test, on a "
            "machine with Python 3.11 (each command first creates the environment it needs):"
            f"\n\n{block}\n{measured}".rstrip() + "\n\n")


def read_timings(root: Path) -> pd.DataFrame | None:
    """The :data:`TIMINGS` table under ``root``, or None where it is missing or unreadable."""
    try:
        frame = pd.read_csv(Path(root) / TIMINGS)
    except (OSError, ValueError):
        return None
    return frame if {"command", "seconds", "what", "measured"} <= set(frame.columns) else None


def landing_text(results: list[RunResult], figures: dict[str, str] | None = None,
                 left_out: list[tuple[str, str]] = (), timings: pd.DataFrame | None = None) -> str:
    """The landing page's results: what was run, the per-point figure (``figures["points"]``),
    the claims side by side, the figure of every run's groups (``figures["runs"]``), the two
    commands with their measured times, then the chapters and runs left out
    (``left_out``: (name, why))."""
    figures = figures or {}
    commands = commands_text(timings)
    if not results:
        return ("No run is in the book yet: `make book` computes the quick configuration and "
                "builds the book with it.\n\n" + commands + left_out_text(list(left_out)))
    pointed, _ = front_figures(results)
    points = (figure_block(figures["points"], "fig-headline",
                           "Steps to unlearn of every training point against its privacy loss",
                           point_caption(pointed))
              if pointed is not None and "points" in figures else "")
    groups = (figure_block(figures["runs"], "fig-runs", "Steps to unlearn and response amplitude "
                           "of each quantile group against the privacy loss",
                           headline_caption(results)) if "runs" in figures else "")
    runs = "one run" if len(results) == 1 else f"{len(results)} runs"
    what = "\n".join(f"- {run_sentence(r)}" for r in results)
    return (f"What was run:\n\n{what}\n\n{points}The claims of the study, as tested on the "
            f"{runs} in this book. Each verdict links to its claim in the run's summary chapter, "
            "which gives the number behind it, its interval and the verdicts under neighbouring "
            "analysis choices; *fragile* marks a verdict that one of those choices changes.\n\n"
            f"{claims_side_by_side(results)}\n{groups}{commands}"
            f"{left_out_text(list(left_out))}")


def _save_png(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=2 * fig.dpi)
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())


def write_landing(root: str | Path = ".") -> Path:
    """Write ``book/generated/landing.md`` (and its figures ``headline.png``, the per-point
    figure, and ``runs.png``, every run's groups) from the runs in the book; the front page
    includes it."""
    import matplotlib
    matplotlib.use("Agg")
    from .plots import headline_figure, set_style
    from .pointplots import steps_against_privacy
    root = Path(root).resolve()
    results, problems = results_and_problems(root)
    warn_left_out(problems, "the front page")
    left_out = left_out_chapters(root) + problems
    (root / GENERATED).mkdir(parents=True, exist_ok=True)
    figures = {}
    pointed, show_groups = front_figures(results)
    set_style()
    if pointed is not None:
        p = pointed.points
        _save_png(steps_against_privacy(p.rows, p.placebo, p, p.checkpoints, pointed.score),
                  root / HEADLINE)
        figures["points"] = HEADLINE.as_posix()
    if show_groups:
        _save_png(headline_figure({r.name: r.headline for r in results},
                                  {r.name: r.budget for r in results}), root / RUNS_FIGURE)
        figures["runs"] = RUNS_FIGURE.as_posix()
    text = landing_text(results, figures, left_out, read_timings(root))
    atomic_write_bytes(root / LANDING, text.encode())
    return root / LANDING
