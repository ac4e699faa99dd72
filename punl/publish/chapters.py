"""Which run chapters a book holds: the chapter folders ``book/runs/<run>/`` with a run plan and
an ``index.md`` (:func:`run_chapter_plans`), those left out and why (:func:`left_out_chapters`,
warned as :class:`ChapterWarning`), and each one's executed notebooks. The table of contents
(:mod:`punl.publish.book`) and the front page (:mod:`punl.publish.landing`) both read them.
"""
from __future__ import annotations

import warnings
from pathlib import Path

from .plan import RunPlan, plan_problem, read_plan

FRONT_PAGE = "book/intro"                  # the book's root page; it includes the landing


def doc_name(path: Path, root: Path) -> str:
    """The doc name of ``path`` in the book at ``root``: its relative path without suffix."""
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
