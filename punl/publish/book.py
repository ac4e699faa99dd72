"""The book: run chapters, the table of contents and the HTML build (jupyter-book 1.x).

Layout under the book root: ``book/intro.md``, ``book/methods.md``, one chapter per completed
run in ``book/runs/<run>/`` (``index.md`` plus its notebooks in name order; hidden folders such
as a run's staging folder are not chapters), one per sweep in ``book/sweeps/<name>/index.md``,
and ``book/reproduce.md``. :func:`generate_toc` writes ``_toc.yml`` from what exists;
:func:`build_book` writes the front page's results (:func:`punl.publish.landing.write_landing`:
``book/generated/landing.md``, included by the front page, and its figures) and runs
``jupyter-book build`` with warnings as errors.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import yaml

from ..core.config import STAGES, Config, field_meanings
from ..core.parallel import run_tied
from .markdown import display_path, json_block, md_cell, md_code, md_table
from .plan import RunPlan
from .chapters import (FRONT_PAGE, chapter_notebooks, doc_name, left_out_chapters,
                       run_chapter_plans, warn_left_out)
from .landing import write_landing
from ..core.store import COMPLETE, ArtifactStore, atomic_write_bytes

class BookBuildError(RuntimeError):
    """``jupyter-book build`` failed or warned; the message carries the tail of its output."""


# ---------------------------------------------------------------------------------- run chapters
def stage_records(config: Config, out_dir: Path) -> dict[str, dict]:
    """Each complete stage's provenance record (:func:`punl.core.store.provenance`)
    with its folder's name, by stage, in the order a run computes them."""
    store, records = ArtifactStore(out_dir / "artifacts"), {}
    for stage in STAGES:
        sd = store.stage(config, stage)
        if sd.file(COMPLETE).exists():
            records[stage] = {**sd.provenance(), "folder": sd.path.name}
    return records


def _stage_rows(run: dict, records: dict[str, dict]) -> list[dict]:
    """One row per stage: computed or reused, its key (its folder is ``<stage>-<key>``) and,
    where its folder is complete, its wall time and when it finished; with the run's forecast
    (``punl run --plan``), each computed stage's predicted time beside it."""
    rows = []
    predicted = run.get("forecast", {}).get("stages", {})
    for stage, how in run["stages"].items():
        record = records.get(stage, {})
        row = {"stage": stage, "artifacts": how, "key": f"`{run['stage_keys'][stage]}`",
               "wall time (s)": record.get("wall_time_s")}
        if predicted:
            row["predicted (s)"] = (predicted[stage]["seconds"] if how == "computed"
                                    and stage in predicted else "")
        rows.append({**row, "finished": record.get("finished_at")})
    return rows


def _grouped(records: dict[str, dict], what) -> dict[str, list[str]]:
    """The distinct values of ``what(record)`` over the stages, each with its stages."""
    groups: dict[str, list[str]] = {}
    for stage, record in records.items():
        groups.setdefault(what(record), []).append(stage)
    return groups


def _environment_section(records: dict[str, dict]) -> str:
    """The commit, versions and machine that produced the stages, each distinct one once with
    the stages it produced."""
    if not records:
        return "No stage artifacts were found.\n"
    named = lambda stages: ", ".join(md_code(s) for s in stages)  # noqa: E731
    commits = _grouped(records, lambda r: r.get("git_commit") or "unknown")
    blocks = _grouped(records, lambda r: json_block({k: r.get(k) for k in ("versions", "machine")}))
    return ("".join(f"Stages {named(stages)} were computed from commit {md_code(commit)}.\n\n"
                    for commit, stages in commits.items())
            + "\n".join(f"Versions and machine of {named(stages)}:\n\n{block}"
                         for block, stages in blocks.items()))


def _file_rows(records: dict[str, dict]) -> list[dict]:
    return [{"stage": stage, "file": f"`{name}`", "bytes": meta["size"],
             "sha256": f"`{meta['sha256'][:16]}…`"}
            for stage, record in records.items() for name, meta in record.get("files", {}).items()]


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
    records = stage_records(config, out_dir)
    stages = _stage_rows(run, records)
    plan = run["plan"]
    overrides = ", ".join(md_code(o) for o in plan["overrides"]) or "none"
    meanings = field_meanings()
    config_rows = [{"field": f"`{k}`", "value": v, "meaning": meanings.get(k, "")}
                   for k, v in config.to_dict().items()]
    return (
        f"# {chapter_title(name or config.name, changed or {})}\n\n"
        f"This chapter holds the executed notebooks of configuration {md_code(config.name)} "
        f"(source {md_code(Path(plan['config_source']).name)}, overrides: {overrides}). "
        f"Tables were published to {md_code(display_path(out_dir / 'published', root))}.\n\n"
        f"## Configuration\n\n{md_table(config_rows)}\n"
        f"## What ran\n\nFinished {md_cell(run['finished_at'])} on {md_code(run['machine'])} in "
        f"{run['wall_time_s']:.1f} s.\n\n{md_table(notebooks)}\n"
        f"## Provenance\n\nEach stage folder carries a record of what produced it: the stage's "
        f"key (a hash of the fields it depends on), when it was computed and from which "
        f"commit.\n\n{md_table(stages)}\n{_environment_section(records)}\n"
        f"Files:\n\n{md_table(_file_rows(records))}")


def write_run_chapter(plan: RunPlan, record: dict, folder: Path | None = None) -> Path:
    """Write ``index.md`` from the run's record into ``folder`` (the chapter's staging folder;
    the chapter folder itself by default)."""
    path = Path(folder or plan.chapter_dir) / "index.md"
    text = run_chapter_text(plan.config, plan.out_dir, record, plan.name, plan.changed_fields(),
                            plan.root)
    atomic_write_bytes(path, text.encode())
    return path


# ------------------------------------------------------------------------------- table of contents
def run_chapters(root: Path) -> list[dict]:
    """One chapter per run (:func:`run_chapter_plans`): the index, then the plan's executed
    notebooks in the plan's order."""
    chapters = []
    for folder, plan in run_chapter_plans(root):
        entry = {"file": doc_name(folder / "index.md", root)}
        notebooks = chapter_notebooks(folder, plan)
        if notebooks:
            entry["sections"] = [{"file": doc_name(nb, root)} for nb in notebooks]
        chapters.append(entry)
    return chapters


def toc_data(root: Path) -> dict:
    """The ``_toc.yml`` content for what exists under ``root/book``."""
    book = root / "book"
    parts = [{"caption": "Background", "chapters": [{"file": "book/methods"}]}]
    runs = run_chapters(root)
    if runs:
        parts.append({"caption": "Experiments", "chapters": runs})
    sweeps = [{"file": doc_name(p, root)} for p in sorted(book.glob("sweeps/*/index.md"))
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
