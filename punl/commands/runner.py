"""One run's chapter: compute its stages, publish its tables, execute its notebooks.

The run follows its :class:`~punl.publish.plan.RunPlan`. ``punl run CONFIG`` checks everything it can
first (:mod:`punl.stages.preflight`), takes the output folder's lock, computes the stages in the
terminal (progress bars, warnings), writes the tables into the output folder's staging folder,
then executes every notebook under papermill into the chapter's staging folder with three
parameters: ``config`` (a YAML path or a name in ``configs/``), ``overrides`` (``key=value``
strings) and ``out_dir``, paths relative to the book root, where the kernels run. The notebooks
read what the stages computed. Each executed notebook is then prepared for the book
(:func:`prepare_for_book`): the parameter cells are removed from the page in favour of a small
provenance box, and code is hidden behind a toggle. Only when every notebook has run are the
tables (``<out>/published``) and the chapter swapped in, each in one step
(:mod:`punl.core.outputs`); a failing or killed run leaves the published ones as they were.

The notebooks execute one after another in one kernel, reset before each
(:mod:`punl.commands.kernel`).

A run whose published tables and chapter are current is not executed again
(:func:`current_record`): its record keeps a digest of everything they are made from
(:func:`inputs_digest`), and ``rerun=True`` (``punl run --rerun``) executes it anyway.
"""
from __future__ import annotations

import hashlib
import json
import platform
import re
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ..publish.book import provenance_box, write_run_chapter
from .kernel import SharedKernel, ipc_kernel_manager
from ..core.config import STAGES, Config
from ..core.parallel import preload_in_workers, worker_peak_bytes
from ..core.outputs import Publication, chapter_staging, output_lock, write_json
from ..stages.pipeline import run_record, run_tables, stage_complete, stage_seconds
from ..publish.plan import RUN_RECORD, NotebookRun, RunPlan
from ..stages.preflight import check_folder, check_output_folder, preflight
from ..core.store import ArtifactStore, atomic_write_bytes, git_commit

if TYPE_CHECKING:
    from ..stages.forecast import Forecast

# A run's pools (the forecast's probes, the per-point chunks, the forget groups) fork their
# workers from one server that has imported these already.
preload_in_workers("punl.stages.forecast", "punl.study.pointwise", "punl.study.unlearn")

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
    """Whether each stage's artifact folder is complete and verifies."""
    return {s: stage_complete(config, store, s) for s in STAGES}


def peak_memory_bytes() -> dict[str, float]:
    """The peak resident memory so far of this process (``main``) and of the largest of its
    pools' finished workers or its other child processes (``workers``), in bytes."""
    import resource
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024.0
    return {"main": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024.0,
            "workers": max(children, worker_peak_bytes())}


def stage_report(before: dict[str, bool], after: dict[str, bool]) -> dict[str, str]:
    """``reused`` / ``computed`` / ``not run`` for each stage, from completeness before and after."""
    return {s: "reused" if before[s] else "computed" if after[s] else "not run" for s in before}


def execute_notebook(run: NotebookRun, progress: bool = True,
                     kernel: SharedKernel | None = None) -> float:
    """Run one notebook with papermill in the book root, in a fresh kernel or in ``kernel``
    (reset first); return its wall time or raise :class:`NotebookError`."""
    import papermill as pm
    from papermill.exceptions import PapermillExecutionError
    run.output.parent.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if kernel is not None:
        kernel.reset()
        engine = {"km": kernel.manager}
    else:
        engine = {"kernel_manager_class": ipc_kernel_manager()}
    try:
        pm.execute_notebook(str(run.template), str(run.output), parameters=run.parameters,
                            kernel_name="python3", progress_bar=progress, cwd=str(run.cwd),
                            **engine)
    except PapermillExecutionError as err:
        raise NotebookError(run.template.name, err.cell_index,
                            failing_line(err.source, err.traceback), err.ename, err.evalue,
                            run.output) from None
    finally:
        if kernel is not None:
            kernel.after_notebook()
    return time.perf_counter() - start


PARAMETER_TAGS = {"parameters", "injected-parameters"}
HIDING_TAGS = {"remove-cell", "remove-input", "hide-input", "hide-cell", "hide-output",
               "remove-output"}


def book_tags(cells) -> None:
    """Tag cells for the page: the parameter cells (the template's and papermill's) are
    removed, every other code cell without a hiding tag of its own has its input hidden behind a
    toggle (figures and tables stay visible)."""
    for cell in cells:
        tags = cell.metadata.setdefault("tags", [])
        if PARAMETER_TAGS & set(tags):
            tags.append("remove-cell")
        elif cell.cell_type == "code" and not HIDING_TAGS & set(tags):
            tags.append("hide-input")


def prepare_for_book(path: Path, box: str, paths: dict[str, str]) -> None:
    """Rewrite the executed notebook ``path`` for the book: :func:`book_tags`, the markdown
    ``box`` right after the parameter cells, and papermill's record of the input and output
    files replaced by ``paths`` (``input_path``, ``output_path``: relative to the book root)."""
    import nbformat
    nb = nbformat.read(path, as_version=4)
    book_tags(nb.cells)
    params = [i for i, c in enumerate(nb.cells) if PARAMETER_TAGS & set(c.metadata["tags"])]
    at = params[-1] + 1 if params else 1
    nb.cells.insert(at, nbformat.v4.new_markdown_cell(box, metadata={"tags": ["provenance"]}))
    nb.metadata.get("papermill", {}).update(paths)
    atomic_write_bytes(path, nbformat.writes(nb).encode())


def run_config(config: str | Path, overrides: list[str] | None = None,
               out_dir: str | Path | None = None, book_dir: str | Path = "book/runs",
               progress: bool = True, notebooks_dir: str | Path | None = None,
               on_forecast: Callable[[Forecast], None] | None = None,
               rerun: bool = False) -> dict[str, Any]:
    """Validate ``config`` + ``overrides``, compute and stage the tables, execute every notebook
    in order, then publish tables and chapter.

    Returns the run record, written as ``run.json`` into ``<out_dir>/published`` and the
    chapter folder. A bad key or value, or anything else :func:`~punl.stages.preflight.preflight`
    finds, raises :class:`~punl.core.config.ConfigError` before any folder is created; a failing
    cell raises :class:`NotebookError` and leaves the published outputs as they were (the
    failed attempt stays in ``<out_dir>/.staging`` and the chapter's staging folder).

    With ``on_forecast``, the stages are first probed (:func:`punl.stages.forecast.forecast`;
    stages whose artifacts verify count as reused), the forecast is passed to ``on_forecast``
    before any stage runs, and the record keeps it beside the measured stage times.

    A run that is up to date (:func:`current_record`) returns its published record at once,
    marked ``"up_to_date": True``, unless ``rerun``."""
    plan = RunPlan.make(config, overrides, out_dir, book_dir, notebooks_dir)
    check_run(plan)
    with output_lock(plan.out_dir):
        inputs = inputs_digest(plan)
        if not rerun:
            current = current_record(plan, ArtifactStore(plan.out_dir / "artifacts"), inputs)
            if current is not None:
                return {**current, "up_to_date": True}
        return _run_locked(plan, progress, on_forecast, inputs)


#: The libraries whose versions a run's tables and chapter depend on: they compute the tables,
#: draw the figures and write the notebooks.
LIBRARIES = ("numpy", "pandas", "pyarrow", "scipy", "scikit-learn", "torch", "dp-accounting",
             "matplotlib", "seaborn", "papermill", "nbformat", "ipykernel", "myst-nb")


def _version(distribution: str) -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "absent"


def inputs_digest(plan: RunPlan) -> str:
    """A digest of everything a run's published tables and chapter are made from: the plan
    (configuration, overrides, folders, templates), the whole configuration and its stage keys,
    the template notebooks' bytes, punl's own source files, the configuration's replication
    over seeds that the summary chapter reads (:func:`~punl.publish.landing.replication_for`;
    another configuration's replication changes nothing), and the versions of Python and of
    :data:`LIBRARIES`. SHA-256 over (name, SHA-256 of bytes) pairs, in a fixed order."""
    from ..publish.landing import replication_for
    cfg, digest = plan.config, hashlib.sha256()

    def add(name: str, data: bytes) -> None:
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())

    add("plan", json.dumps(plan.to_dict(), sort_keys=True).encode())
    add("config", json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    add("stage keys", json.dumps({s: cfg.stage_key(s) for s in STAGES}).encode())
    for template in plan.templates:
        add(f"template {template.name}", template.read_bytes())
    package = Path(__file__).resolve().parents[1]
    for source in sorted(package.rglob("*.py")):
        add(f"punl {source.relative_to(package).as_posix()}", source.read_bytes())
    replication = replication_for(plan.root, cfg.name)
    if replication is not None:
        add("replication", replication.to_csv(index=False).encode())
    versions = {lib: _version(lib) for lib in LIBRARIES} | {"python": platform.python_version()}
    add("versions", json.dumps(versions).encode())
    return digest.hexdigest()


def current_record(plan: RunPlan, store: ArtifactStore,
                   inputs: str | None = None) -> dict[str, Any] | None:
    """The published record of ``plan``'s run when its tables and chapter are current, else
    None. Current: the published ``run.json`` and the chapter's are the same finished run (not
    failed, not running), made from the same inputs (``inputs``, :func:`inputs_digest` of
    ``plan`` unless given), every notebook it
    lists is in the chapter, and every stage it computed or reused still verifies."""
    try:
        record = json.loads((plan.out_dir / "published" / RUN_RECORD).read_text())
        shown = json.loads((plan.chapter_dir / RUN_RECORD).read_text())
        notebooks, stages = dict(record["notebooks"]), dict(record["stages"])
    except (OSError, ValueError, TypeError, KeyError):   # none, or not a record punl wrote
        return None
    if (record != shown or record.get("failed") or record.get("status")
            or record.get("inputs") != (inputs or inputs_digest(plan))
            or set(notebooks) != {t.name for t in plan.templates}
            or not all((plan.chapter_dir / name).is_file() for name in notebooks)):
        return None
    done = stage_status(plan.config, store)
    if not all(done.get(s) for s, how in stages.items() if how != "not run"):
        return None
    return record


def check_run(plan: RunPlan) -> None:
    """Every check before a run: its folders and :func:`~punl.stages.preflight.preflight`."""
    check_output_folder(plan.out_dir, "--out")
    check_folder(plan.chapter_dir.parent, "--book-dir")
    preflight(plan.config, "unlearn")


def _run_locked(plan: RunPlan, progress: bool, on_forecast, inputs: str) -> dict[str, Any]:
    """The run itself, under the output folder's lock: (forecast,) stage, execute, publish;
    ``inputs``: the plan's :func:`inputs_digest`, kept in the record."""
    from tqdm import tqdm
    cfg = plan.config
    store = ArtifactStore(plan.out_dir / "artifacts")
    publication, chapter = Publication(plan.out_dir), chapter_staging(plan.chapter_dir)
    publication.begin()
    chapter.begin()
    record = run_record(cfg, "run", plan=plan.to_dict(), notebooks={}, failed=None,
                        inputs=inputs)
    before = stage_status(cfg, store)
    if on_forecast is not None:
        from ..stages.forecast import forecast
        predicted = forecast(cfg, tuple(s for s, done in before.items() if done), progress)
        record["forecast"] = predicted.as_dict()
        on_forecast(predicted)
    start = time.perf_counter()
    try:
        record["tables"] = publication.write_tables(run_tables(cfg, store, "unlearn", progress))
        record["peak_memory_bytes"] = peak_memory_bytes()
        running = {k: v for k, v in record.items() if k != "finished_at"}
        publication.write_record({**running, "status": "running"})   # what notebooks open
        box = provenance_box(plan, record["stage_keys"], git_commit())
        with SharedKernel(plan.root) as kernel:
            for nb in tqdm(plan.notebook_runs(into=chapter.staging),
                           desc=f"{plan.name}: notebooks", unit="notebook", disable=not progress):
                record["notebooks"][nb.template.name] = round(
                    execute_notebook(nb, progress, kernel), 2)
                prepare_for_book(nb.output, box, {
                    "input_path": plan.relative(nb.template),
                    "output_path": plan.relative(plan.chapter_dir / nb.output.name)})
    except NotebookError as err:
        record["failed"] = {"notebook": err.notebook, "cell": err.cell_index, "error": str(err)}
        _finish_record(record, cfg, store, before, time.perf_counter() - start)
        publication.write_record(record)   # the failed attempt, kept in <out>/.staging
        raise
    _finish_record(record, cfg, store, before, time.perf_counter() - start)
    publication.write_record(record)
    write_json(chapter.staging / RUN_RECORD, record)
    write_run_chapter(plan, record, chapter.staging)
    publication.commit()
    chapter.commit()
    return record


def _finish_record(record: dict, cfg: Config, store: ArtifactStore, before: dict[str, bool],
                   seconds: float) -> None:
    """Add wall time, stage reuse, each computed stage's time and the finishing time to a run
    record."""
    after = stage_status(cfg, store)
    computed = [s for s in STAGES if after[s] and not before[s]]
    record.update(wall_time_s=round(seconds, 2), stages=stage_report(before, after),
                  stage_seconds=stage_seconds(cfg, store, computed),
                  finished_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
