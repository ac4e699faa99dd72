"""The book: run chapters, the table of contents and the HTML build (jupyter-book 1.x).

Layout under the book root: ``book/intro.md``, ``book/methods.md``, one chapter per completed
run in ``book/runs/<run>/`` (``index.md`` plus its notebooks in name order; hidden folders such
as a run's staging folder are not chapters), one per sweep in ``book/sweeps/<name>/index.md``,
and ``book/reproduce.md``. :func:`generate_toc` writes
``_toc.yml`` from what exists; :func:`build_book` runs ``jupyter-book build`` with warnings as
errors.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from .config import STAGES, Config
from .plan import RunPlan, read_plan
from .store import COMPLETE, ArtifactStore, atomic_write_bytes


class BookBuildError(RuntimeError):
    """``jupyter-book build`` failed or warned; the message carries the tail of its output."""


# ---------------------------------------------------------------------------------- run chapters
def md_cell(value: Any) -> str:
    """A value as the text of one markdown table cell."""
    text = "null" if value is None else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)
    return " ".join(text.split()).replace("|", "\\|")


def md_table(rows: list[dict[str, Any]]) -> str:
    """A markdown table from a list of equal-keyed dicts."""
    if not rows:
        return ""
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(md_cell(r.get(k)) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def display_path(path: str | Path) -> str:
    """``path`` relative to the working directory when it lies below it, else absolute."""
    rel = os.path.relpath(Path(path).resolve(), Path.cwd())
    return str(Path(path).resolve()) if rel.startswith("..") else rel


def json_block(obj: Any) -> str:
    return "```json\n" + json.dumps(obj, indent=2, default=str) + "\n```\n"


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
    return f"Run `{name}`" + (f" ({what})" if what else "")


def run_chapter_text(config: Config, out_dir: Path, run: dict, name: str | None = None,
                     changed: dict[str, Any] | None = None) -> str:
    """The markdown of ``book/runs/<run>/index.md``: configuration, what ran, provenance."""
    notebooks = [{"notebook": n, "wall time (s)": s} for n, s in run["notebooks"].items()]
    stages = [{"stage": s, "artifacts": how, "key": run["stage_keys"][s]}
              for s, how in run["stages"].items()]
    plan = run["plan"]
    overrides = ", ".join(f"`{o}`" for o in plan["overrides"]) or "none"
    config_rows = [{"field": f"`{k}`", "value": v} for k, v in config.to_dict().items()]
    return (
        f"# {chapter_title(name or config.name, changed or {})}\n\n"
        f"This chapter holds the executed notebooks of configuration `{config.name}` "
        f"(source `{Path(plan['config_source']).name}`, overrides: {overrides}). "
        f"Tables were published to `{display_path(out_dir / 'published')}`.\n\n"
        f"## Configuration\n\n{md_table(config_rows)}\n"
        f"## What ran\n\nFinished {run['finished_at']} on `{run['machine']}` in "
        f"{run['wall_time_s']:.1f} s.\n\n{md_table(notebooks)}\n{md_table(stages)}\n"
        f"## Provenance\n\nEach stage folder carries a record of what produced it.\n\n"
        f"{_provenance_section(config, out_dir)}")


def write_run_chapter(plan: RunPlan, record: dict, folder: Path | None = None) -> Path:
    """Write ``index.md`` from the run's record into ``folder`` (the chapter's staging folder;
    the chapter folder itself by default)."""
    path = Path(folder or plan.chapter_dir) / "index.md"
    text = run_chapter_text(plan.config, plan.out_dir, record, plan.name, plan.changed_fields())
    atomic_write_bytes(path, text.encode())
    return path


# ------------------------------------------------------------------------------- table of contents
def _doc(path: Path, root: Path) -> str:
    return path.relative_to(root).with_suffix("").as_posix()


def run_chapters(root: Path) -> list[dict]:
    """One chapter per ``book/runs/<run>/`` holding a run plan and an ``index.md``: the index,
    then the plan's executed notebooks in the plan's order. Hidden folders are skipped."""
    chapters = []
    for folder in sorted((root / "book" / "runs").glob("*/")):
        if folder.name.startswith("."):
            continue
        plan = read_plan(folder)
        if plan is None or not (folder / "index.md").exists():
            continue
        entry = {"file": _doc(folder / "index.md", root)}
        notebooks = [folder / run.output.name for run in plan.notebook_runs()
                     if (folder / run.output.name).exists()]
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
    return {"format": "jb-book", "root": "book/intro", "parts": parts}


def generate_toc(book_root: str | Path = ".") -> Path:
    """Write ``<book_root>/_toc.yml``: intro, methods, runs, sweeps, reproduce."""
    root = Path(book_root).resolve()
    for name in ("intro", "methods", "reproduce"):
        if not (root / "book" / f"{name}.md").exists():
            raise FileNotFoundError(f"book chapter book/{name}.md is missing under {root}")
    header = "# Generated by punl.book.generate_toc from the folders under book/.\n"
    text = header + yaml.safe_dump(toc_data(root), sort_keys=False)
    atomic_write_bytes(root / "_toc.yml", text.encode())
    return root / "_toc.yml"


# ------------------------------------------------------------------------------------------ build
def build_book(root: str | Path = ".", all_pages: bool = True) -> Path:
    """``jupyter-book build ROOT -W --keep-going`` into ``ROOT/_build/html``.

    Any Sphinx warning fails the build; the error carries the tail of the output."""
    root = Path(root).resolve()
    exe = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(exe) if exe.exists() else "jupyter-book", "build", str(root), "-W", "--keep-going",
           "--path-output", str(root)]
    if all_pages:
        cmd.append("--all")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=root)
    output = done.stdout + done.stderr
    if done.returncode != 0 or re.search(r"\bWARNING\b", output):
        tail = "\n".join(output.splitlines()[-40:])
        raise BookBuildError(f"jupyter-book build failed (exit {done.returncode}):\n{tail}")
    return root / "_build" / "html"
