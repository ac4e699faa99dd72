"""Execute the parameterised notebooks for one configuration: ``punl run CONFIG``.

Every notebook in ``notebooks/`` whose name starts with ``0`` runs in order under papermill with
three parameters: ``config`` (a YAML path or a name in ``configs/``), ``overrides`` (``key=value``
strings) and ``out_dir``. The executed copies land in ``book/runs/<name>/``; artifacts live in
``<out_dir>/artifacts`` (reused by later runs) and tables directly in ``<out_dir>``. ``run.json``
records what ran, the wall time of each notebook and which stages were reused.
"""
from __future__ import annotations

import json
import os
import platform
import re
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import STAGES, Config, load_config
from .store import ArtifactStore, atomic_write_bytes

NOTEBOOKS_DIR = Path(__file__).resolve().parent.parent / "notebooks"
RUN_RECORD = "run.json"

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


@dataclass
class NotebookContext:
    """What a notebook's second cell needs: the validated config, its store and output folder."""

    config: Config
    store: ArtifactStore
    out_dir: Path

    def __iter__(self):
        return iter((self.config, self.store, self.out_dir))


def default_out_dir(config: Config, out_dir: str | Path | None = None) -> Path:
    """``out_dir`` or ``runs/<config.name>``."""
    return Path(out_dir) if out_dir else Path("runs") / config.name


def notebook_context(config: str, overrides: list[str] | None = None,
                     out_dir: str | None = None) -> NotebookContext:
    """Called by each notebook: ``cfg, store, out = notebook_context(config, overrides, out_dir)``.

    Validates the configuration, creates the output folder and sets a quiet plotting style."""
    import matplotlib
    import seaborn as sns
    cfg = load_config(config, overrides)
    out = default_out_dir(cfg, out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sns.set_theme(context="notebook", style="whitegrid")
    matplotlib.rcParams.update({"figure.dpi": 90, "savefig.bbox": "tight"})
    return NotebookContext(cfg, ArtifactStore(out / "artifacts"), out)


def list_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The notebooks to execute, in name order: ``0*.ipynb`` in ``notebooks_dir``."""
    folder = Path(notebooks_dir) if notebooks_dir else NOTEBOOKS_DIR
    found = sorted(folder.glob("0*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks 0*.ipynb in {folder}")
    return found


def stage_status(config: Config, store: ArtifactStore) -> dict[str, bool]:
    """Whether each stage's artifact folder is complete."""
    return {s: store.stage(config, s).is_complete() for s in STAGES}


def stage_report(before: dict[str, bool], after: dict[str, bool]) -> dict[str, str]:
    """``reused`` / ``computed`` / ``not run`` for each stage, from completeness before and after."""
    return {s: "reused" if before[s] else "computed" if after[s] else "not run" for s in before}


def execute_notebook(template: Path, output: Path, parameters: dict[str, Any],
                     progress: bool = True) -> float:
    """Run one notebook with papermill; return its wall time or raise :class:`NotebookError`."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(template), str(output), parameters=parameters,
                            kernel_name="python3", progress_bar=progress, cwd=os.getcwd())
    except PapermillExecutionError as err:
        raise NotebookError(template.name, err.cell_index, failing_line(err.source, err.traceback),
                            err.ename, err.evalue, output) from None
    return time.perf_counter() - start


def run_config(config: str | Path, overrides: list[str] | None = None,
               out_dir: str | Path | None = None, book_dir: str | Path = "book/runs",
               progress: bool = True, notebooks_dir: str | Path | None = None) -> dict[str, Any]:
    """Validate ``config`` + ``overrides``, then execute every notebook in order.

    Returns the run record also written to ``<out_dir>/run.json``. A bad key or value raises
    :class:`~punl.config.ConfigError` before any notebook starts; a failing cell raises
    :class:`NotebookError` (after recording the failure in ``run.json``)."""
    from tqdm import tqdm
    overrides = list(overrides or [])
    cfg = load_config(config, overrides)
    notebooks = list_notebooks(notebooks_dir)
    out = default_out_dir(cfg, out_dir).resolve()
    executed_dir = Path(book_dir).resolve() / cfg.name
    store = ArtifactStore(out / "artifacts")
    config_arg = config_argument(config)
    params = {"config": config_arg, "overrides": overrides, "out_dir": str(out)}
    record = {"config": cfg.to_dict(), "config_source": config_arg, "overrides": overrides,
              "out_dir": str(out), "notebooks_dir": str(notebooks[0].parent),
              "executed_dir": str(executed_dir), "notebooks": {}, "failed": None}
    before, start = stage_status(cfg, store), time.perf_counter()
    remove_stale_copies(executed_dir)
    try:
        for nb in tqdm(notebooks, desc=f"{cfg.name}: notebooks", unit="notebook",
                       disable=not progress):
            seconds = execute_notebook(nb, executed_dir / nb.name, params, progress)
            record["notebooks"][nb.name] = round(seconds, 2)
    except NotebookError as err:
        record["failed"] = {"notebook": err.notebook, "cell": err.cell_index, "error": str(err)}
        raise
    finally:
        _finish_record(record, cfg, store, before, time.perf_counter() - start)
        atomic_write_bytes(out / RUN_RECORD, json.dumps(record, indent=2).encode())
        from .book import write_run_chapter
        write_run_chapter(cfg, out, executed_dir)
    if load_config(config, overrides) != cfg:
        warnings.warn(f"{config}: the configuration changed while the notebooks ran; rerun so "
                      f"that every notebook uses the same values", stacklevel=2)
    return record


def config_argument(config: str | Path) -> str:
    """What to hand a notebook or a worker: an absolute path for a file, else the config name."""
    return str(Path(config).resolve()) if Path(config).is_file() else str(config)


def remove_stale_copies(executed_dir: Path) -> None:
    """Delete executed notebooks of an earlier run, so the book never mixes two runs."""
    for old in executed_dir.glob("0*.ipynb"):
        old.unlink()


def _finish_record(record: dict, cfg: Config, store: ArtifactStore, before: dict[str, bool],
                   seconds: float) -> None:
    """Add wall time, stage reuse, stage keys, time and machine to a run record."""
    record.update(wall_time_s=round(seconds, 2),
                  stages=stage_report(before, stage_status(cfg, store)),
                  stage_keys={s: cfg.stage_key(s) for s in STAGES},
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"), machine=platform.node())


# ----------------------------------------------------------------------------------- command line
def cmd_run(args) -> int:
    """``punl run CONFIG [--set k=v ...]``: execute the notebooks and refresh the table of contents."""
    from .book import generate_toc
    try:
        record = run_config(args.config, args.overrides, args.out, book_dir=args.book_dir,
                            progress=not args.quiet)
    except NotebookError as err:
        print(f"punl: {err}", file=sys.stderr)
        return 1
    finally:
        if Path("_config.yml").exists():   # at the book root: keep _toc.yml in step with book/
            generate_toc(".")
    for name, seconds in record["notebooks"].items():
        print(f"{name}: {seconds:.1f} s")
    print(f"stages: {record['stages']}; tables and run.json in {record['out_dir']}")
    return 0


def add_subcommands(sub) -> None:
    """Register ``run``, ``sweep`` and ``book`` on an argparse subparsers object."""
    from .book import cmd_book
    from .cli import add_config_args
    from .sweep import cmd_sweep
    p = sub.add_parser("run", help="execute the notebooks for one configuration into book/runs/")
    add_config_args(p)
    p.add_argument("--book-dir", default="book/runs", help="where executed notebooks go")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sweep", help="run a grid of configurations, locally or on a dask cluster")
    add_config_args(p, out_default="runs/sweeps/<sweep name>")
    p.add_argument("--grid", action="append", default=[], required=True, metavar="KEY=V1,V2",
                   help="one swept field and its values as YAML (repeatable: cartesian product)")
    p.add_argument("--scheduler", default="local",
                   help="'local' (process pool) or a dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--name", default=None, help="sweep name (default: <config>-<swept keys>)")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("book", help="write _toc.yml and build the HTML book into _build/html")
    p.add_argument("--root", default=".", help="book root holding _config.yml")
    p.add_argument("--no-build", action="store_true", help="only write _toc.yml")
    p.set_defaults(func=cmd_book)
