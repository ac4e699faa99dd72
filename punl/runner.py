"""One configuration's chapter: compute its stages, publish its tables, execute its notebooks.

The run follows its :class:`~punl.plan.RunPlan`. ``punl run CONFIG`` computes the stages in the terminal (progress bars,
warnings), writes the published tables, then executes every notebook under papermill with three
parameters: ``config`` (a YAML path or a name in ``configs/``), ``overrides`` (``key=value``
strings) and ``out_dir``. The notebooks read what the stages computed.
"""
from __future__ import annotations

import json
import os
import platform
import re
import time
import warnings
from pathlib import Path
from typing import Any

from .book import write_run_chapter
from .config import STAGES, Config
from .plan import RUN_RECORD, NotebookRun, RunPlan
from .store import ArtifactStore, atomic_write_bytes

# Inside a kernel without ipywidgets, tqdm.auto warns on import; notebooks run with progress off.
warnings.filterwarnings("ignore", message="IProgress not found")

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ARROW = re.compile(r"^-+>\s*(\d+)\s(.*)$")


class NotebookError(RuntimeError):
    """A cell of a notebook failed; the message names the notebook, the cell, the failing line
    and the error."""

    def __init__(self, notebook: str, cell_index: int, where: str, ename: str, evalue: str,
                 executed: Path):
        super().__init__(f"notebook {notebook} failed in cell {cell_index} ({where}): "
                         f"{ename}: {evalue}  [executed copy with the traceback: {executed}]")
        self.notebook, self.cell_index, self.ename, self.evalue = notebook, cell_index, ename, evalue


def failing_line(source: str, traceback: list[str]) -> str:
    """``line 11: data = load_data(cfg)`` from an IPython traceback's cell frame, else the
    cell's first line."""
    for frame in reversed(traceback or []):
        text = _ANSI.sub("", frame)
        if text.lstrip().startswith("Cell In["):
            for line in text.splitlines():
                match = _ARROW.match(line.strip())
                if match:
                    return f"line {match[1]}: {match[2].strip()}"
    first = next((line for line in (source or "").splitlines() if line.strip()), "")
    return f"starting {first.strip()!r}"


def stage_status(config: Config, store: ArtifactStore) -> dict[str, bool]:
    """Whether each stage's artifact folder is complete."""
    return {s: store.stage(config, s).is_complete() for s in STAGES}


def stage_report(before: dict[str, bool], after: dict[str, bool]) -> dict[str, str]:
    """``reused`` / ``computed`` / ``not run`` for each stage, from completeness before and after."""
    return {s: "reused" if before[s] else "computed" if after[s] else "not run" for s in before}


def execute_notebook(run: NotebookRun, progress: bool = True) -> float:
    """Run one notebook with papermill; return its wall time or raise :class:`NotebookError`."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    run.output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(run.template), str(run.output), parameters=run.parameters,
                            kernel_name="python3", progress_bar=progress, cwd=os.getcwd())
    except PapermillExecutionError as err:
        raise NotebookError(run.template.name, err.cell_index,
                            failing_line(err.source, err.traceback), err.ename, err.evalue,
                            run.output) from None
    return time.perf_counter() - start


def run_config(config: str | Path, overrides: list[str] | None = None,
               out_dir: str | Path | None = None, book_dir: str | Path = "book/runs",
               progress: bool = True, notebooks_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate ``config`` + ``overrides``, compute and publish the tables, then execute every
    notebook in order.

    Returns the run record also written to ``<out_dir>/run.json`` and the chapter folder. A bad
    key or value raises :class:`~punl.config.ConfigError` before any work; a failing cell raises
    :class:`NotebookError` (after recording the failure)."""
    from tqdm import tqdm

    from .pipeline import publish
    plan = RunPlan.make(config, overrides, out_dir, book_dir, notebooks_dir)
    cfg = plan.config
    store = ArtifactStore(plan.out_dir / "artifacts")
    record = {"plan": plan.to_dict(), "config": cfg.to_dict(), "notebooks": {}, "failed": None}
    before, start = stage_status(cfg, store), time.perf_counter()
    remove_stale_copies(plan.chapter_dir)
    try:
        publish(cfg, store, plan.out_dir, progress)
        for nb in tqdm(plan.notebook_runs(), desc=f"{cfg.name}: notebooks", unit="notebook",
                       disable=not progress):
            record["notebooks"][nb.template.name] = round(execute_notebook(nb, progress), 2)
    except NotebookError as err:
        record["failed"] = {"notebook": err.notebook, "cell": err.cell_index, "error": str(err)}
        raise
    finally:
        _finish_record(record, cfg, store, before, time.perf_counter() - start)
        for folder in (plan.out_dir, plan.chapter_dir):
            atomic_write_bytes(folder / RUN_RECORD, json.dumps(record, indent=2).encode())
        write_run_chapter(plan, record)
    return record


def remove_stale_copies(chapter_dir: Path) -> None:
    """Delete executed notebooks of an earlier run, so the book never mixes two runs."""
    for old in chapter_dir.glob("0*.ipynb"):
        old.unlink()


def _finish_record(record: dict, cfg: Config, store: ArtifactStore, before: dict[str, bool],
                   seconds: float) -> None:
    """Add wall time, stage reuse, stage keys, time and machine to a run record."""
    record.update(wall_time_s=round(seconds, 2),
                  stages=stage_report(before, stage_status(cfg, store)),
                  stage_keys={s: cfg.stage_key(s) for s in STAGES},
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=platform.node())
