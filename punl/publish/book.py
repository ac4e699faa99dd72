"""The book: run chapters, the table of contents and the HTML build (jupyter-book 1.x).

Layout under the book root: ``book/intro.md``, ``book/methods.md``, one chapter per completed
run in ``book/runs/<run>/`` (``index.md`` plus its notebooks in name order; hidden folders such
as a run's staging folder are not chapters), one per sweep in ``book/sweeps/<name>/index.md``,
and ``book/reproduce.md``. :func:`generate_toc` writes ``_toc.yml`` from what exists;
:func:`build_book` writes the landing page's results (:func:`write_landing`:
``book/generated/landing.md``, included by the front page, and its figure) and runs
``jupyter-book build`` with warnings as errors.
"""
from __future__ import annotations

import html
import io
import posixpath
import re
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import numpy as np
import pandas as pd
import yaml

from ..core.config import STAGES, Config
from ..core.outputs import published_record, read_published
from ..core.parallel import run_tied
from .markdown import Markdown, claim_anchor, display_path, json_block, md_cell, md_code, md_table
from .plan import RunPlan, plan_problem, read_plan
from ..core.store import COMPLETE, ArtifactStore, atomic_write_bytes

if TYPE_CHECKING:
    from ..analysis.measures import Headline

FRONT_PAGE = "book/intro"                  # the book's root page; it includes the landing
GENERATED = Path("book") / "generated"
LANDING = GENERATED / "landing.md"
HEADLINE = GENERATED / "headline.png"


class BookBuildError(RuntimeError):
    """``jupyter-book build`` failed or warned; the message carries the tail of its output."""


# ---------------------------------------------------------------------------------- run chapters
def _provenance_section(config: Config, out_dir: Path) -> str:
    """One subsection per complete stage: its key, wall time, commit, versions and machine."""
    store, parts = ArtifactStore(out_dir / "artifacts"), []
    for stage in STAGES:
        sd = store.stage(config, stage)
        if not sd.file(COMPLETE).exists():
            continue
        record = sd.provenance()
        summary = {k: record.get(k) for k in ("key", "wall_time_s", "finished_at", "git_commit")}
        summary["folder"] = sd.path.name
        parts.append(f"### Stage `{stage}`\n\n{md_table([summary])}\n"
                     f"Versions and machine:\n\n"
                     f"{json_block({k: record.get(k) for k in ('versions', 'machine')})}\n"
                     f"Files:\n\n{md_table(_file_rows(record))}")
    return "\n".join(parts) or "No stage artifacts were found.\n"


def _file_rows(record: dict) -> list[dict]:
    return [{"file": f"`{name}`", "bytes": meta["size"], "sha256": f"`{meta['sha256'][:16]}…`"}
            for name, meta in record.get("files", {}).items()]


def chapter_title(name: str, changed: dict[str, Any]) -> str:
    """``Run `digits-quick-1a2b3c4d` (sigma=0.3, label_noise=0.05)``: the run and what it
    changed in its configuration file."""
    what = ", ".join(f"{k}={md_cell(v)}" for k, v in changed.items())
    return f"Run {md_code(name)}" + (f" ({what})" if what else "")


def provenance_box(plan: RunPlan, stage_keys: dict[str, str], commit: str | None) -> str:
    """A small MyST box for the top of each executed notebook: the run, its configuration and
    overrides, the published tables' folder relative to the book root, the code's git commit and
    the stage keys (it stands in for the parameter cells, which the page does not show)."""
    overrides = ", ".join(md_code(o) for o in plan.overrides) or "none"
    keys = " · ".join(f"{stage} `{key}`" for stage, key in stage_keys.items())
    return (":::{admonition} Provenance\n:class: provenance\n\n"
            f"**run** {md_code(plan.name)} · **configuration** "
            f"{md_code(Path(plan.config_source).name)} · **overrides** {overrides}  \n"
            f"**tables** {md_code(plan.relative(plan.out_dir / 'published'))} · "
            f"**commit** `{(commit or 'unknown')[:12]}`  \n"
            f"**stage keys** {keys}\n:::\n")


def run_chapter_text(config: Config, out_dir: Path, run: dict, name: str | None = None,
                     changed: dict[str, Any] | None = None, root: Path | None = None) -> str:
    """The markdown of ``book/runs/<run>/index.md``: configuration, what ran, provenance (paths
    relative to the book root ``root``)."""
    notebooks = [{"notebook": n, "wall time (s)": s} for n, s in run["notebooks"].items()]
    stages = [{"stage": s, "artifacts": how, "key": run["stage_keys"][s]}
              for s, how in run["stages"].items()]
    plan = run["plan"]
    overrides = ", ".join(md_code(o) for o in plan["overrides"]) or "none"
    config_rows = [{"field": f"`{k}`", "value": v} for k, v in config.to_dict().items()]
    return (
        f"# {chapter_title(name or config.name, changed or {})}\n\n"
        f"This chapter holds the executed notebooks of configuration {md_code(config.name)} "
        f"(source {md_code(Path(plan['config_source']).name)}, overrides: {overrides}). "
        f"Tables were published to {md_code(display_path(out_dir / 'published', root))}.\n\n"
        f"## Configuration\n\n{md_table(config_rows)}\n"
        f"## What ran\n\nFinished {md_cell(run['finished_at'])} on {md_code(run['machine'])} in "
        f"{run['wall_time_s']:.1f} s.\n\n{md_table(notebooks)}\n{md_table(stages)}\n"
        f"## Provenance\n\nEach stage folder carries a record of what produced it.\n\n"
        f"{_provenance_section(config, out_dir)}")


def write_run_chapter(plan: RunPlan, record: dict, folder: Path | None = None) -> Path:
    """Write ``index.md`` from the run's record into ``folder`` (the chapter's staging folder;
    the chapter folder itself by default)."""
    path = Path(folder or plan.chapter_dir) / "index.md"
    text = run_chapter_text(plan.config, plan.out_dir, record, plan.name, plan.changed_fields(),
                            plan.root)
    atomic_write_bytes(path, text.encode())
    return path


# ------------------------------------------------------------------------------- table of contents
def _doc(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


class ChapterWarning(UserWarning):
    """A chapter or a run's results that the book cannot show, and why (``punl book`` prints
    it; the front page lists it)."""


def run_chapter_plans(root: Path) -> list[tuple[Path, RunPlan]]:
    """Every chapter folder ``book/runs/<run>/`` holding a run plan and an ``index.md``, with
    its plan, in name order. Hidden folders are skipped; the others are left out with a reason
    (:func:`left_out_chapters`)."""
    found = []
    for folder in sorted((root / "book" / "runs").glob("*/")):
        if folder.name.startswith("."):
            continue
        plan = read_plan(folder)
        if plan is not None and (folder / "index.md").exists():
            found.append((folder, plan))
    return found


def left_out_chapters(root: Path) -> list[tuple[str, str]]:
    """(chapter folder, why) for every folder under ``book/runs`` that the table of contents
    leaves out: an unreadable or incomplete ``run.json``, or no ``index.md``."""
    out = []
    for folder in sorted((root / "book" / "runs").glob("*/")):
        if folder.name.startswith("."):
            continue
        why = plan_problem(folder) or (None if (folder / "index.md").exists()
                                       else "it has no index.md")
        if why:
            out.append((f"book/runs/{folder.name}", why))
    return out


def warn_left_out(items: list[tuple[str, str]], what: str) -> None:
    for name, why in items:
        warnings.warn(f"{name} is left out of {what}: {why}", ChapterWarning, stacklevel=2)


def chapter_notebooks(folder: Path, plan: RunPlan) -> list[Path]:
    """The plan's executed notebooks present in ``folder``, in the plan's order."""
    return [folder / run.output.name for run in plan.notebook_runs()
            if (folder / run.output.name).exists()]


def run_chapters(root: Path) -> list[dict]:
    """One chapter per run (:func:`run_chapter_plans`): the index, then the plan's executed
    notebooks in the plan's order."""
    chapters = []
    for folder, plan in run_chapter_plans(root):
        entry = {"file": _doc(folder / "index.md", root)}
        notebooks = chapter_notebooks(folder, plan)
        if notebooks:
            entry["sections"] = [{"file": _doc(nb, root)} for nb in notebooks]
        chapters.append(entry)
    return chapters


def toc_data(root: Path) -> dict:
    """The ``_toc.yml`` content for what exists under ``root/book``."""
    book = root / "book"
    parts = [{"caption": "Background", "chapters": [{"file": "book/methods"}]}]
    runs = run_chapters(root)
    if runs:
        parts.append({"caption": "Experiments", "chapters": runs})
    sweeps = [{"file": _doc(p, root)} for p in sorted(book.glob("sweeps/*/index.md"))
              if not p.parent.name.startswith(".")]
    if sweeps:
        parts.append({"caption": "Sweeps", "chapters": sweeps})
    parts.append({"caption": "Reproducing", "chapters": [{"file": "book/reproduce"}]})
    return {"format": "jb-book", "root": FRONT_PAGE, "parts": parts}


def generate_toc(book_root: str | Path = ".") -> Path:
    """Write ``<book_root>/_toc.yml`` (intro, methods, runs, sweeps, reproduce)."""
    root = Path(book_root).resolve()
    for name in ("intro", "methods", "reproduce"):
        if not (root / "book" / f"{name}.md").exists():
            raise FileNotFoundError(f"book chapter book/{name}.md is missing under {root}")
    warn_left_out(left_out_chapters(root), "the table of contents")
    header = "# Generated by punl.publish.book.generate_toc from the folders under book/.\n"
    text = header + yaml.safe_dump(toc_data(root), sort_keys=False)
    atomic_write_bytes(root / "_toc.yml", text.encode())
    return root / "_toc.yml"


# ------------------------------------------------------------------------------ landing page
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
    return RunResult(
        name=folder.name, index=_doc(folder / "index.md", root), config=cfg,
        n_train=len(tables["scores"]), wall_time_s=record.get("wall_time_s"),
        replication=replication_for(root, cfg["name"]),
        doc=_doc(summary[0] if summary else folder / "index.md", root),
        claims=tables["claims"], budget=int(cfg["unlearn_steps"]),
        method=cfg["primary_method"], score=cfg["primary_score"], headline=data,
        stages_reused=_all_reused(record))


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
        except (OSError, ValueError):
            continue
        frames.append(frame[frame.config == config_name])
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
    return f"; over {int(r.runs)} seeds: {counts}"


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


def claims_side_by_side(results: list[RunResult]) -> str:
    """A markdown table: one row per claim, one column per run, each verdict linking to the
    run's summary chapter (a dash where a run does not test the claim)."""
    claims = list(dict.fromkeys(c for r in results for c in r.claims.claim))
    rows = []
    for claim in claims:
        row = {"claim": claim}
        for r in results:
            match = r.claims[r.claims.claim == claim]
            row[f"{{doc}}`{r.name} </{r.index}>`"] = (
                verdict_cell(next(match.itertuples()), r.doc, r.replication)
                if len(match) else "—")
        rows.append(row)
    return md_table(rows)


def headline_caption(results: list[RunResult]) -> str:
    """The front figure's caption, naming the method and the privacy-loss column each run
    places its groups by."""
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


def landing_text(results: list[RunResult], figure: str | None,
                 left_out: list[tuple[str, str]] = ()) -> str:
    """The landing page's results: the headline figure and the claims side by side, then the
    chapters and runs left out (``left_out``: (name, why))."""
    if not results:
        return ("No run is in the book yet: `make book` computes the quick configuration and "
                "builds the book with it.\n" + left_out_text(list(left_out)))
    figure_block = (f"```{{figure}} /{figure}\n:name: fig-headline\n:width: 100%\n:alt: Steps to unlearn "
                    f"and response amplitude against the privacy loss\n\n"
                    f"{headline_caption(results)}\n```\n\n") if figure else ""
    runs = "one run" if len(results) == 1 else f"{len(results)} runs"
    what = "\n".join(f"- {run_sentence(r)}" for r in results)
    what = f"What was run:\n\n{what}\n\n" if what else ""
    return (f"{what}{figure_block}The claims of the study, as tested on the {runs} in this book. "
            "Each verdict links to its claim in the run's summary chapter, which gives the number behind "
            "it, its interval and the verdicts under neighbouring analysis choices; "
            "*fragile* marks a verdict that one of those choices changes.\n\n"
            f"{claims_side_by_side(results)}{left_out_text(list(left_out))}")


def write_landing(root: str | Path = ".") -> Path:
    """Write ``book/generated/landing.md`` (and its figure ``headline.png``) from the runs in
    the book; the front page includes it."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from .plots import headline_figure, set_style
    root = Path(root).resolve()
    results, problems = results_and_problems(root)
    warn_left_out(problems, "the front page")
    left_out = left_out_chapters(root) + problems
    (root / GENERATED).mkdir(parents=True, exist_ok=True)
    figure = None
    if results:
        set_style()
        fig = headline_figure({r.name: r.headline for r in results},
                              {r.name: r.budget for r in results})
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=2 * fig.dpi)
        plt.close(fig)
        atomic_write_bytes(root / HEADLINE, buffer.getvalue())
        figure = HEADLINE.as_posix()
    atomic_write_bytes(root / LANDING, landing_text(results, figure, left_out).encode())
    return root / LANDING


# ------------------------------------------------------------------------------------------ build
def build_book(root: str | Path = ".", all_pages: bool = True) -> Path:
    """The landing page's results (:func:`write_landing`), then ``jupyter-book build ROOT -W
    --keep-going`` into ``ROOT/_build/html``.

    Any Sphinx warning fails the build; the error carries the tail of the output."""
    root = Path(root).resolve()
    write_landing(root)
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "-W", "--keep-going",
           "--path-output", str(root)]
    if all_pages:
        cmd.append("--all")
    done = run_tied(cmd, capture_output=True, text=True, cwd=root)
    output = done.stdout + done.stderr
    if done.returncode != 0 or re.search(r"\bWARNING\b", output):
        tail = "\n".join(output.splitlines()[-40:])
        raise BookBuildError(f"jupyter-book build failed (exit {done.returncode}):\n{tail}")
    return root / "_build" / "html"
