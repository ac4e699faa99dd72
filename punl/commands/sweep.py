"""Sweeps: one :func:`~punl.commands.runner.run_config` per point of a grid, run in parallel.

``punl sweep digits-quick --grid label_noise=0,0.1 --grid sigma=0.5,1`` runs the cartesian product
of the grids. Points go to a :class:`concurrent.futures.Executor`: a local process pool, or a
``dask.distributed`` cluster through the client's executor interface when a scheduler address is
given. Every point is validated before any runs (configuration, dataset size, the sweep's name,
workers, the scheduler's address); a point that fails at run time is reported and the others
carry on. Each point gets its own folder, named injectively from its values (``-1`` and ``1``,
or ``[2, 8]`` and ``2_8``, never share one; equal values however spelled are one point and may
be listed once). The sweep writes ``sweep.parquet`` (one row per point) and a book chapter
``book/sweeps/<name>/index.md``: each claim's number and verdict against the swept value (from
the claims table every point published), the privacy loss and the steps to unlearn.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
import socket
import time
import traceback
import uuid
from concurrent.futures import FIRST_COMPLETED, CancelledError, Executor, wait
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import yaml

from ..core.config import ConfigError, check_name, load_config, typed_value, valid_keys
from ..core.yamlfiles import yaml_problem
from ..analysis.measures import select
from ..analysis.findings import verdict_text
from ..core.outputs import StagedFolder, output_lock, published_record, read_published
from ..core.parallel import process_pool
from ..core.tables import privacy_columns
from ..publish.plan import book_root, config_argument
from ..stages.preflight import (check_folder, check_scheduler, check_workers, check_workers_share,
                                preflight)
from .runner import run_config
from ..core.store import COMPLETE, atomic_write_bytes, atomic_write_parquet

MAX_NAME = 100
#: Each start of a point by a worker appends a line to ``<sweep folder>/attempts/<point>.jsonl``:
#: the sweep's invocation, the host and the process; a point a worker started twice in one
#: invocation (the first worker lost, the scheduler retrying it) records ``retries`` in the
#: sweep table.
ATTEMPTS = "attempts"
#: Seconds between two looks at the points in progress, for the sweep's bar.
POLL_S = 2.0
#: The file beside a sweep's chapter holding every claim of every point that published its
#: claims (:func:`sweep_claims`), the table its figures and replication are drawn from.
SWEEP_CLAIMS = "claims.parquet"


# ---------------------------------------------------------------------------------------- grids
def parse_grid(specs: list[str]) -> dict[str, list]:
    """``["sigma=0.5,1", "orders=[2,8],[4]"]`` -> ``{"sigma": [0.5, 1], "orders": [[2, 8], [4]]}``.

    Values are YAML, separated by top-level commas; keys must be configuration fields."""
    grid = {}
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--grid: expected key=v1,v2,..., got {spec!r}")
        key, raw = (s.strip() for s in spec.split("=", 1))
        if key in grid:
            raise ConfigError(f"--grid {key}: given twice; list all its values in one --grid "
                              f"{key}=v1,v2,...")
        try:
            values = yaml.safe_load(f"[{raw}]")
        except yaml.YAMLError as err:
            raise ConfigError(f"--grid {key}: cannot read values {raw!r} "
                              f"({yaml_problem(err)})") from None
        if not values:
            raise ConfigError(f"--grid {key}: no values")
        grid[key] = values
    check_grid_keys(grid)
    return grid


def check_grid_keys(grid: dict[str, list]) -> None:
    """Raise :class:`ConfigError` for swept keys that are not configuration fields (or ``name``)."""
    unknown = sorted(set(grid) - set(valid_keys()))
    if unknown:
        raise ConfigError(f"--grid: unknown key(s) {unknown}; valid keys: {', '.join(valid_keys())}")
    if "name" in grid:
        raise ConfigError("--grid: 'name' cannot be swept; each point is named after its values")


def yaml_text(value: Any) -> str:
    """A value as one line of YAML: ``0.1``, ``[2, 8]``, ``cifar10``, ``null``."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def value_slug(value: Any) -> str:
    """A folder-safe spelling of a grid value, distinct for distinct values: its YAML text when
    that is letters, digits and single dots (``0.5``, ``cifar10``); else a readable version
    (``-`` read as ``m``, other characters as ``_``) followed by ``_`` and 8 hex digits of the
    text (``m1_...`` for ``-1``). Only the second kind holds ``_``, so the two never meet."""
    text = yaml_text(value)
    if re.fullmatch(r"[A-Za-z0-9.]+", text) and ".." not in text:
        return text
    readable = re.sub(r"[^A-Za-z0-9]+", "_", text.replace("-", "m")).strip("_")[:40]
    return f"{readable}_{_digest(text)}"


def point_name(base_name: str, values: dict[str, Any]) -> str:
    """``<base>-<key>-<slug>-...``, shortened with a digest of the whole when it would pass
    the 100 characters a name may have."""
    name = "-".join([base_name] + [f"{k}-{value_slug(v)}" for k, v in values.items()])
    return name if len(name) <= MAX_NAME else f"{name[:MAX_NAME - 9]}-{_digest(name)}"


def grid_points(base_name: str, grid: dict[str, list]) -> list[dict[str, Any]]:
    """Every point of the cartesian product: its name, values and ``key=value`` overrides."""
    points = []
    for combo in itertools.product(*grid.values()):
        values = dict(zip(grid, combo))
        name = point_name(base_name, values)
        overrides = [f"{k}={yaml_text(v)}" for k, v in values.items()]
        points.append({"point": name, "values": values, "overrides": overrides + [f"name={name}"]})
    if len({p["point"] for p in points}) != len(points):
        raise ConfigError("--grid: two points would share a folder; list each value once")
    return points


def check_grid_values(grid: dict[str, list]) -> None:
    """Raise :class:`ConfigError` when a key lists one value twice (``0.1`` and ``.1``, ``1``
    and ``1.0`` for a float field): equal values are one point."""
    for key, values in grid.items():
        typed = [typed_value(key, v) for v in values]
        for i, value in enumerate(typed):
            if typed.index(value) != i:
                raise ConfigError(f"--grid {key}: the value {yaml_text(values[i])} is listed "
                                  "twice (equal values, however spelled, are one point); list "
                                  "each value once")


# ---------------------------------------------------------------------------------- one point
def record_attempt(out_dir: str | Path, invocation: str) -> int:
    """Append this start of the point (its folder ``out_dir``) to its :data:`ATTEMPTS` file;
    return how many starts
    the invocation ``invocation`` of the sweep has made of it (1 on a first start)."""
    path = Path(out_dir).parent / ATTEMPTS / f"{Path(out_dir).name}.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps({"invocation": invocation, "host": socket.gethostname(),
                       "pid": os.getpid(), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    with open(path, "a") as f:
        f.write(line + "\n")
    starts = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    return sum(1 for x in starts if x.get("invocation") == invocation)


def run_point(config: str, overrides: list[str], out_dir: str, book_dir: str,
              notebooks_dir: str | None = None, invocation: str = "",
              rerun: bool = False) -> dict[str, Any]:
    """Run one grid point in a worker; never raises: failures come back as ``status='failed'``.
    A point started again in the same sweep (its first worker lost) counts a retry, and is
    ``ran`` even when every stage was left complete by the lost attempt. A point that is up to
    date (:func:`~punl.commands.runner.current_record`) is ``reused`` without executing."""
    start = time.perf_counter()
    retries = record_attempt(out_dir, invocation) - 1
    try:
        record = run_config(config, overrides, out_dir=out_dir, book_dir=book_dir,
                            progress=False, notebooks_dir=notebooks_dir, rerun=rerun)
    except Exception as err:  # noqa: BLE001 - a failed point is data, not a crash
        last = traceback.format_exception_only(type(err), err)[-1].strip()
        return {"status": "failed", "wall_s": time.perf_counter() - start, "error": last,
                "retries": retries}
    stages = [s for s in record["stages"].values() if s != "not run"]
    reused = (record.get("up_to_date") or stages and all(s == "reused" for s in stages)) \
        and not retries
    return {"status": "reused" if reused else "ran", "wall_s": time.perf_counter() - start,
            "error": "", "retries": retries}


def point_progress(out_dir: Path, stages: int) -> float:
    """The share of one point done, read off its folder: 1 / (stages + 1) for each complete
    stage folder, the last share for its notebooks and publishing."""
    done = len(list((out_dir / "artifacts").glob(f"*/{COMPLETE}")))
    return min(done, stages) / (stages + 1)


@contextmanager
def make_executor(scheduler: str = "local", workers: int = 2,
                  timeout: float = 10.0) -> Iterator[Executor]:
    """A local process pool, or the executor of a dask client connected to ``scheduler``
    (given ``timeout`` seconds to answer)."""
    if scheduler == "local":
        with process_pool(workers, (__name__,)) as pool:
            yield pool
        return
    from distributed import Client
    with Client(scheduler, timeout=timeout) as client:
        yield client.get_executor(pure=False)


# --------------------------------------------------------------------------------------- sweep
def run_sweep(config: str, grid: dict[str, list], scheduler: str = "local", workers: int = 2,
              out_root: str | Path | None = None, overrides: list[str] | None = None,
              name: str | None = None, book_root: str | Path = ".",
              notebooks_dir: str | Path | None = None, progress: bool = True,
              scheduler_timeout: float = 10.0, rerun: bool = False) -> pd.DataFrame:
    """Run every grid point as its own :func:`~punl.commands.runner.run_config`; return the sweep table.

    Everything is checked first (:func:`check_sweep`: nothing runs and no folder is created
    when anything is wrong). Results are written to ``<out_root>/sweep.parquet`` and the
    chapter ``<book_root>/book/sweeps/<name>/index.md``, swapped in whole."""
    from tqdm import tqdm
    overrides = list(overrides or [])
    base, points = validated_points(config, grid, overrides, device=scheduler == "local")
    name = name or "-".join([base.name, *grid])
    out_root = Path(out_root or Path("runs") / "sweeps" / name).resolve()
    chapter_dir = Path(book_root) / "book" / "sweeps" / name
    check_sweep(name, out_root, chapter_dir, scheduler, workers, scheduler_timeout)
    config_arg = config_argument(config)
    nb_dir = str(Path(notebooks_dir).resolve()) if notebooks_dir else None
    rows, invocation = [], uuid.uuid4().hex
    stages = 4 if base.point_models else 3
    with output_lock(out_root):
        with make_executor(scheduler, workers, scheduler_timeout) as pool, \
                tqdm(total=len(points), desc=f"sweep {name}", unit="point",
                     disable=not progress) as bar:
            futures = {pool.submit(run_point, config_arg, overrides + p["overrides"],
                                   str(out_root / p["point"]), str(out_root / "notebooks"),
                                   nb_dir, invocation, rerun): p for p in points}
            pending = set(futures)
            while pending:
                done, pending = wait(pending, timeout=POLL_S, return_when=FIRST_COMPLETED)
                rows += [_row(futures[fut], fut) for fut in done]
                partial = sum(point_progress(out_root / futures[f]["point"], stages)
                              for f in pending)
                bar.n = round(len(rows) + partial, 2)   # progress within the points running
                bar.refresh()
        order = {p["point"]: i for i, p in enumerate(points)}
        table = pd.DataFrame(rows).sort_values("point", key=lambda c: c.map(order),
                                               ignore_index=True)
        atomic_write_parquet(out_root / "sweep.parquet", table)
        write_sweep_chapter(name, table, grid, out_root, chapter_dir, base.name)
    return table


def check_sweep(name: str, out_root: Path, chapter_dir: Path, scheduler: str, workers: int,
                timeout: float) -> None:
    """The sweep's own arguments: a simple name, usable folders, workers, a reachable
    scheduler."""
    check_name("--name", name)
    check_folder(out_root, "--out")
    check_folder(chapter_dir.parent, "book folder")
    if scheduler == "local":
        check_workers(workers)
    check_scheduler(scheduler, timeout)
    check_workers_share(scheduler, out_root, timeout)


def validated_points(config: str, grid: dict[str, list], overrides: list[str],
                     device: bool = True):
    """The base configuration and every grid point, each validated and preflighted
    (:func:`~punl.stages.preflight.preflight`); raises ConfigError first."""
    check_grid_keys(grid)
    check_grid_values(grid)
    set_keys = {o.split("=", 1)[0].strip() for o in overrides}
    for key in [k for k in grid if k in set_keys] + (["name"] if "name" in set_keys else []):
        raise ConfigError(f"--grid {key}: also given with --set; sweep it or set it, not both"
                          if key != "name" else "--set name: a sweep names each point itself")
    base = load_config(config, overrides)
    points = grid_points(base.name, grid)
    for p in points:
        preflight(load_config(config, overrides + p["overrides"]), "unlearn", device=device)
    return base, points


def _row(point: dict, future) -> dict[str, Any]:
    try:
        result = future.result()
    except Exception as err:  # noqa: BLE001 - a worker that died is a failed point
        why = str(err) or "no message"
        if isinstance(err, CancelledError):
            why = f"the dask scheduler or its worker was lost before the point finished ({why})"
        result = {"status": "failed", "wall_s": float("nan"), "retries": float("nan"),
                  "error": f"{type(err).__name__}: {why}"}
    values = {k: yaml_text(v) for k, v in point["values"].items()}
    return {"point": point["point"], **values, "overrides": " ".join(point["overrides"]),
            "status": result["status"], "wall_s": round(result["wall_s"], 2),
            "retries": result["retries"], "error": result["error"]}


# ----------------------------------------------------------------------------- sweep chapter
def point_summary(out_dir: Path) -> dict[str, float]:
    """Numbers per point from the tables it published (scores, and steps if any), each
    checked against the digest its run.json records: the mean privacy loss of clean and
    flipped points, its rank correlation with the average gradient norm, and the median steps
    to unlearn of the quantile groups of the run's primary method at its level."""
    summary = {}
    config = (published_record(out_dir) or {}).get("config", {})
    scores = read_published(out_dir, "scores")
    if scores is not None:
        main = config.get("primary_score") or \
            privacy_columns(scores.columns)[0]
        summary["score"] = main
        summary["mean privacy loss"] = scores[main].mean()
        flipped = scores["flipped"].astype(bool)
        for kind, mask in (("clean", ~flipped), ("flipped", flipped)):
            summary[f"mean privacy loss ({kind})"] = scores.loc[mask, main].mean() \
                if mask.any() else float("nan")
        summary["spearman vs avg_grad_norm"] = scores[main].corr(scores["avg_grad_norm"],
                                                                 method="spearman")
    steps = read_published(out_dir, "steps")
    if steps is not None and config:
        rows = select(steps, config["primary_method"], config["level"])
        summary["median steps_to_unlearn"] = rows["steps_to_unlearn"].median()
    return summary


def sweep_summary(table: pd.DataFrame, grid: dict[str, list], out_root: Path) -> pd.DataFrame:
    """The sweep table joined with each successful point's summary numbers."""
    rows = []
    for row in table.itertuples(index=False):
        extra = point_summary(out_root / row.point) if row.status != "failed" else {}
        rows.append({**{k: getattr(row, k) for k in ("point", *grid, "status")}, **extra})
    return pd.DataFrame(rows)


def swept_axis(table: pd.DataFrame, grid: dict[str, list]) -> tuple[str, pd.Series, bool]:
    """What the sweep's figures put on the x axis: the swept key and its values as numbers
    when one numeric key is swept (on a log scale when they are positive and span a factor of
    4 or more), else the points' names."""
    if len(grid) == 1:
        key = next(iter(grid))
        values = pd.to_numeric(table[key], errors="coerce")
        if values.notna().all():
            log = bool((values > 0).all() and values.max() >= 4 * values.min())
            return key, values, log
    return "point", table["point"], False


def sweep_claims(table: pd.DataFrame, x: str, values: pd.Series, out_root: Path) -> pd.DataFrame:
    """Every claim of every successful point: the point, its value ``values[i]`` of the swept
    axis ``x`` (:func:`swept_axis`), the claim's number, verdict, power and fragility, and the
    texts that state them (value, interval, neighbours' verdicts), from the claims table each
    point published, checked against its run.json."""
    frames = []
    for row, value in zip(table.itertuples(index=False), values):
        claims = read_published(out_root / row.point, "claims") if row.status != "failed" else None
        if claims is not None:
            frames.append(claims[["id", "claim", "measure", "number", "verdict", "power",
                                  "fragile", "value", "interval", "neighbours"]].assign(
                **{"point": row.point, x: value}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def verdict_grid(claims: pd.DataFrame, x: str) -> pd.DataFrame:
    """Claims by swept value: each cell the verdict (``, fragile`` where a neighbour
    differs)."""
    cells = claims.assign(cell=[verdict_text(v, f) for v, f in zip(claims.verdict,
                                                                     claims.fragile)])
    grid = cells.pivot_table(index="claim", columns=x, values="cell", aggfunc="first",
                             sort=False)
    grid.columns = [str(c) if x == "point" else f"{x} = {c:g}" if isinstance(c, float)
                    else f"{x} = {c}" for c in grid.columns]
    return grid.reindex(list(dict.fromkeys(claims.claim)))


def replication_table(claims: pd.DataFrame, config: str) -> pd.DataFrame:
    """Per claim over the points of a sweep (seeds, in a replication): how many points reached
    each verdict, how many were fragile, the median and range of its number and the median
    power."""
    from ..analysis.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
    rows = []
    for (key, claim), c in claims.groupby(["id", "claim"], sort=False):
        counts = c.verdict.value_counts()
        rows.append({"config": config, "id": key, "claim": claim, "runs": len(c),
                     **{v: int(counts.get(v, 0)) for v in (SUPPORTED, NOT_SUPPORTED,
                                                           INCONCLUSIVE)},
                     "fragile": int(c.fragile.astype(bool).sum()),
                     "number_median": float(c.number.median()),
                     "number_min": float(c.number.min()), "number_max": float(c.number.max()),
                     "power_median": float(c.power.median())})
    return pd.DataFrame(rows)


def replication_text(table: pd.DataFrame) -> str:
    """One line per claim: ``2: supported 3 of 5, inconclusive 2 of 5 (fragile in 1); number
    0.41 [0.2, 0.6]; median power 81%``."""
    from ..analysis.measures import fmt, percent
    lines = []
    for r in table.to_dict("records"):
        verdicts = ", ".join(f"{v} {r[v]} of {r['runs']}"
                             for v in ("supported", "not supported", "inconclusive") if r[v])
        lines.append(f"- {r['id']}: {verdicts} (fragile in {r['fragile']}); "
                     f"number {fmt(r['number_median'])} [{fmt(r['number_min'])}, "
                     f"{fmt(r['number_max'])}]; median power {percent(r['power_median'])}.")
    return "\n".join(lines) + "\n"


def sweep_findings(claims: pd.DataFrame, x: str) -> str:
    """One sentence per claim: at which swept values each verdict was reached."""
    from ..analysis.measures import fmt, listing
    sentences = []
    for key, c in claims.groupby("id", sort=False):
        parts = [f"{verdict} at {x} = {listing([fmt(v) for v in part[x]])}"
                 for verdict, part in c.groupby("verdict", sort=False)]
        sentences.append(f"- {key}: {'; '.join(parts)}.")
    return "\n".join(sentences) + "\n"


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=2 * fig.dpi)
    plt.close(fig)


def write_sweep_chapter(name: str, table: pd.DataFrame, grid: dict[str, list], out_root: Path,
                        chapter_dir: Path, config_name: str | None = None) -> Path:
    """``book/sweeps/<name>/index.md``: what was swept, each claim's number and verdict against
    the swept value, the privacy loss and the steps, the per-point tables and what was found;
    beside it every point's claims (:data:`SWEEP_CLAIMS`) and, over seeds, their replication
    (:func:`replication_table`); written into a staging folder and swapped in whole."""
    import matplotlib
    matplotlib.use("Agg")
    from ..publish.landing import REPLICATION
    from ..publish.markdown import display_path, md_table
    from ..publish.plots import claims_against, set_style, sweep_overview
    staged = StagedFolder(chapter_dir, chapter_dir.parent / f".staging-{chapter_dir.name}")
    folder = staged.begin()
    set_style()
    summary = sweep_summary(table, grid, out_root)
    x, values, log_x = swept_axis(table, grid)
    claims = sweep_claims(table, x, values, out_root)
    summary[x] = values.to_numpy()
    swept = ", ".join(f"`{k}` in {v}" for k, v in grid.items())
    text = (f"# Sweep `{name}`\n\nEvery combination of {swept} was run as a separate "
            f"configuration; outputs are under `{display_path(out_root, book_root(chapter_dir))}`. "
            "This chapter shows how each claim's number and verdict, the privacy loss and the "
            f"steps to unlearn change with `{x}`.\n\n")
    if claims.empty:
        text += "No point published its claims, so there is nothing to plot.\n\n"
    else:
        claims.to_parquet(folder / SWEEP_CLAIMS, index=False)
        _save(claims_against(claims, x, log_x), folder / "claims.png")
        _save(sweep_overview(summary[summary.status != "failed"], x, log_x),
              folder / "sweep.png")
        text += (f"## The claims against `{x}`\n\n```{{figure}} claims.png\n:name: claims-{name}"
                 f"\n:width: 100%\n\nEach panel is one claim: the number that tests it (see the "
                 "summary chapter's measure) at each swept value; the marker gives the verdict and "
                 f"a black ring marks a fragile one.\n```\n\n"
                 f"{md_table(verdict_grid(claims, x).reset_index().to_dict('records'))}\n"
                 f"## Privacy loss and steps to unlearn\n\n```{{figure}} sweep.png\n"
                 f":name: sweep-{name}\n:width: 100%\n\nLeft: mean per-instance privacy loss of "
                 "clean and of flipped points (log scale). Right: median steps to unlearn of the "
                 f"quantile groups (primary method, the run's level).\n```\n\n"
                 f"## What we found\n\n{sweep_findings(claims, x)}\n")
        if x == "seed":
            replication = replication_table(claims, config_name or name)
            replication.to_parquet(folder / REPLICATION, index=False)
            text += ("## Over seeds\n\nThe same configuration at every seed: how often each "
                     "verdict came out, the median and range of each claim's number and the "
                     "median power at the effects measured.\n\n"
                     f"{replication_text(replication)}\n")
    numbers = summary.round(4).to_dict("records")
    status = table[["point", "status", "wall_s", "retries", "error"]].to_dict("records")
    text += (f"## Numbers per point\n\n{md_table(numbers)}\n"
             f"## Status\n\n{md_table(status)}")
    atomic_write_bytes(folder / "index.md", text.encode())
    return staged.commit() / "index.md"
