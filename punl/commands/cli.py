"""Command line: ``punl train|score|unlearn|predict|run|sweep|book|configs|fields|init|plan``,
one Config for all.

One configuration flows through every stage.

Every subcommand is defined here or, for those that prepare a run without running it, in
:mod:`punl.commands.listing`; the modules they call hold no argument parsing. Everything that
can be checked before work starts is (:mod:`punl.stages.preflight`): a problem ends the command with one
line naming the field and the fix, exit code 2, and nothing created. Stages recomputed because
their artifacts were partial or corrupt say so on the terminal.
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

import pandas as pd

from ..core.config import LEVELS, ConfigError, load_config
from .listing import add_listing_parsers


def add_config_args(p: argparse.ArgumentParser, out_default: str = "runs/<name>") -> None:
    """The arguments every configuration command takes: CONFIG, --set KEY=VALUE, --out DIR."""
    p.add_argument("config", help="a YAML file or the name of one in configs/ (e.g. digits-quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration field (repeatable); values are YAML")
    p.add_argument("--out", default=None,
                   help=f"output folder for tables and artifacts (default: {out_default})")
    p.add_argument("--force", action="store_true", help="run even past the resource check's "
                   "limits on work, memory and files (the field force: true)")


@contextmanager
def stage_inputs(args, through: str):
    """(config, output folder, artifact store) of a stage command running the stages up to
    ``through``: checked first (:func:`~punl.stages.preflight.preflight`), then the output folder is
    created and locked for the command's duration."""
    from ..core.outputs import output_lock
    from ..stages.pipeline import run_folder
    from ..stages.preflight import check_output_folder, preflight
    from ..core.store import ArtifactStore
    config = load_config(args.config, args.overrides)
    out = check_output_folder(run_folder(config, args.out, load_config(args.config)), "--out")
    preflight(config, through)
    with output_lock(out):
        yield config, out, ArtifactStore(out / "artifacts")


# ------------------------------------------------------------------------------------ stages
def cmd_train(args) -> int:
    with stage_inputs(args, "train") as (config, _, store):
        return _train(config, store, progress=not args.quiet)


def _train(config, store, progress: bool = True) -> int:
    from ..stages.pipeline import ensure_trained
    start = time.perf_counter()
    runs = ensure_trained(config, store, progress=progress)
    ledger = runs.ledger
    print(f"config {config.name}: {config.runs} runs, {ledger.total_steps} steps, "
          f"{ledger.records} ledger records x {ledger.n_points} points")
    print("final test accuracy per run: "
          f"{', '.join(f'{a:.3f}' for a in ledger.test_acc[:, -1])}")
    print(f"fraction of (run, record, point) norms clipped at C={config.clip}: "
          f"{ledger.clipped_fraction(config.clip):.3f}")
    print(f"ledger: {runs.dir.file('ledger.npz')}  ({time.perf_counter() - start:.1f} s)")
    return 0


def cmd_score(args) -> int:
    from ..stages.pipeline import publish
    from ..study.scores import spearman_matrix
    with stage_inputs(args, "score") as (config, out, store):
        published = publish(config, store, out, progress=not args.quiet, through="score")
    scores = pd.read_parquet(published / "scores.parquet")
    print(scores.describe().T.to_string())
    print("\nSpearman correlations:\n" + spearman_matrix(scores).round(2).to_string())
    print(f"\nscores: {published / 'scores.parquet'}")
    return 0


def cmd_unlearn(args) -> int:
    from ..analysis.measures import select
    from ..stages.pipeline import publish
    with stage_inputs(args, "unlearn") as (config, out, store):
        published = publish(config, store, out, progress=not args.quiet)
    steps = select(pd.read_parquet(published / "steps.parquet"), config.primary_method,
                   config.level, kind=None)
    cols = ["score", "group", "group_score_median", "status", "steps_to_unlearn",
            "mia_acc_step0"]
    print(f"{config.primary_method}, level {config.level}:")
    print(steps[cols].to_string(index=False))
    claims = pd.read_parquet(published / "claims.parquet")
    print("\n" + claims[["claim", "verdict", "fragile"]].to_string(index=False))
    print(f"\ntables under {published}")
    return 0


# ---------------------------------------------------------------------------------- predict
def read_indices(text: str) -> list[int]:
    """A request's indices from ``--indices``: a file (``.npy`` of integers; ``.csv``, its
    ``index`` column when it has a header naming one, else its first; else text, one index
    per line or separated by commas) or a comma list such as ``3,17,256``. Anything that is
    not unambiguously a list of integers is refused: indices separated by spaces on one line,
    a boolean array (a mask), a file that cannot be read."""
    import numpy as np
    from ..analysis.predict import RequestError
    path = Path(text)
    if path.is_file():
        if path.suffix == ".npy":
            values = _npy_indices(path)
        elif path.suffix == ".csv":
            values = _csv_indices(path)
        else:
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError):
                raise RequestError(f"--indices: cannot read {text} as text") from None
            values = [v for line in lines for v in _comma_list(line, text)]
    elif path.suffix in (".npy", ".csv", ".txt") or "/" in text:
        raise RequestError(f"--indices: no file {text!r}")
    else:
        values = _comma_list(text, "the list")
    out = []
    for v in values:
        try:
            number = float(v)
        except (TypeError, ValueError):
            raise RequestError(f"--indices: {v!r} is not a training index") from None
        if not np.isfinite(number) or not number.is_integer():
            raise RequestError(f"--indices: {v!r} is not a training index")
        out.append(int(number))
    return out


def _comma_list(line: str, where: str) -> list[str]:
    """The indices of one line separated by commas (spaces around them allowed); indices
    separated by spaces alone are refused: ``1 2`` could be a typo for 12."""
    from ..analysis.predict import RequestError
    items = [v.strip() for v in line.split(",")]
    if any(" " in v or "\t" in v for v in items):
        raise RequestError(f"--indices: {line.strip()!r} in {where} separates indices by "
                           "spaces; separate them by commas (3,17,256) or put one per line")
    return [v for v in items if v]


def _npy_indices(path: Path) -> list:
    import numpy as np
    from ..analysis.predict import RequestError
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as err:
        raise RequestError(f"--indices: cannot read {path} as a .npy array of integers "
                           f"({' '.join(str(err).split())[:120]})") from None
    if array.dtype.kind == "b":
        raise RequestError(f"--indices: {path} holds booleans, not indices (for a mask, save "
                           "np.flatnonzero(mask))")
    if array.dtype.kind not in "iuf":
        raise RequestError(f"--indices: {path} holds {array.dtype} values, not indices")
    return array.ravel().tolist()


def _csv_indices(path: Path) -> list:
    """The ``index`` column of a CSV with a header, else its first column; a first row of
    numbers is data, not a header."""
    from ..analysis.predict import RequestError
    try:
        frame = pd.read_csv(path, header=None, dtype=str, skip_blank_lines=True)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError, OSError):
        raise RequestError(f"--indices: {path} holds no readable CSV rows") from None
    first = [str(v).strip() for v in frame.iloc[0]]
    try:
        float(first[0])
        return frame[0].tolist()
    except ValueError:
        column = first.index("index") if "index" in first else 0
        return frame[column].iloc[1:].tolist()


def cmd_predict(args) -> int:
    """``punl predict RUN --indices ...``: the predicted cost of a deletion request, from the
    run's published tables: per point where the run has a per-point study
    (:func:`punl.analysis.pointpredict.predict_request`), else from its groups; with ``--adaptive`` the
    request is then unlearned adaptively."""
    import json
    from ..stages.pipeline import published_run
    from ..analysis.predict import predict
    if args.adaptive:
        check_adaptive_args(args)
    run = published_run(args.run, args.overrides)
    indices = read_indices(args.indices)
    if per_point(args, run):
        from ..analysis.pointpredict import predict_request
        prediction = predict_request(
            run.point_steps, run.measured.scores, indices, args.score or run.config.primary_score,
            run.config.level if args.level is None else args.level, run.measured.checkpoints,
            args.coverage)
    else:
        prediction = predict(run.measured, indices, args.score, args.aggregate or "mean",
                             args.method, args.level, args.eps, args.coverage)
    if args.json:
        print(json.dumps(prediction.as_dict(), default=float, indent=2))
    else:
        print(prediction.summary())
    if args.adaptive:
        return _adaptive(args, run, indices, prediction)
    return 0


def per_point(args, run) -> bool:
    """Whether ``punl predict`` fits the per-point study (the run has one, and no option asks
    for the group fit: ``--groups``, ``--aggregate``, ``--eps`` or another method)."""
    return (run.has_points and not args.groups and args.aggregate is None and args.eps is None
            and args.method in (None, run.config.primary_method))


def check_adaptive_args(args) -> None:
    from ..analysis.predict import RequestError
    if not args.margin >= 0:
        raise RequestError(f"--margin: must be >= 0 (got {args.margin})")
    if not args.growth > 1:
        raise RequestError(f"--growth: must be > 1 (got {args.growth})")
    if args.budget is not None and args.budget < 0:
        raise RequestError(f"--budget: must be >= 0 (got {args.budget})")


def _adaptive(args, run, indices, prediction) -> int:
    import math
    from ..analysis.adaptive import adaptive_unlearn
    from ..stages.pipeline import TrainedRuns, apply_runtime, load_data, reuse
    from ..analysis.predict import RequestError
    from ..core.store import ArtifactStore
    config = run.config
    apply_runtime(config)
    trained = reuse(config, ArtifactStore(run.folder / "artifacts"), "train", TrainedRuns.load)
    if trained is None:
        raise RequestError(f"--adaptive: {run.folder / 'artifacts'} holds no verified trained "
                           f"models of this run; run `punl train` for it first")
    steps = prediction.steps if math.isfinite(prediction.steps) else config.unlearn_steps
    first = math.ceil((1 + args.margin) * steps)
    start = time.perf_counter()
    result = adaptive_unlearn(config, load_data(config), trained.final, indices,
                              args.method or config.primary_method, first,
                              args.budget, args.growth, level=args.level)
    print(f"\nadaptive: first look at (1 + {args.margin:g}) x {steps:.0f} -> {first} steps")
    print(result.looks.round(4).to_string(index=False))
    print(f"{result.summary()}  ({time.perf_counter() - start:.1f} s)")
    return 0


# ------------------------------------------------------------------------------ run, sweep
def cmd_run(args) -> int:
    """``punl run CONFIG [--set k=v ...]``: execute the notebooks and refresh the table of contents."""
    from ..publish.book import generate_toc
    from .runner import NotebookError, run_config
    try:
        record = run_config(args.config, args.overrides, args.out, book_dir=args.book_dir,
                            progress=not args.quiet,
                            on_forecast=(lambda f: print(f.table(), flush=True))
                            if args.plan else None, rerun=args.rerun)
    except NotebookError as err:
        print(f"punl: {err}; the published tables and chapter are unchanged", file=sys.stderr)
        return 1
    if Path("_config.yml").exists():   # at the book root: keep _toc.yml in step with book/
        generate_toc(".")
    if record.get("up_to_date"):
        print(f"up to date: {record['plan']['chapter_dir']} and {record['plan']['out_dir']}"
              f"/published, finished {record['finished_at']}, are made from the same "
              f"configuration, stages, notebooks, code and libraries; --rerun executes it again")
        return 0
    for name, seconds in record["notebooks"].items():
        print(f"{name}: {seconds:.1f} s")
    plan = record["plan"]
    print(f"stages: {record['stages']}; tables and run.json in {plan['out_dir']}/published; "
          f"chapter {plan['chapter_dir']}")
    return 0


def cmd_sweep(args) -> int:
    """``punl sweep CONFIG --grid key=v1,v2 ...``: run the grid, print the table, write the chapter."""
    from ..publish.book import generate_toc
    from .sweep import parse_grid, run_sweep
    table = run_sweep(args.config, parse_grid(args.grid), scheduler=args.scheduler,
                      workers=args.workers, out_root=args.out, overrides=args.overrides,
                      name=args.name, scheduler_timeout=args.scheduler_timeout,
                      progress=not args.quiet, rerun=args.rerun)
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(table.drop(columns=["overrides"]).to_string(index=False))
    if Path("_config.yml").exists():   # at the book root: add the sweep chapter to _toc.yml
        generate_toc(".")
    return 0 if (table.status != "failed").all() else 1


def cmd_book(args) -> int:
    """``punl book``: regenerate ``_toc.yml`` and the landing page's results, and build the HTML
    book."""
    from ..publish.book import BookBuildError, build_book, generate_toc
    from ..publish.landing import write_landing
    if not (Path(args.root) / "_config.yml").is_file():
        raise ConfigError(f"--root: {args.root} holds no _config.yml; `punl init {args.root}` "
                          "lays out a book folder there")
    print(f"wrote {generate_toc(args.root)}")
    if args.no_build:
        print(f"wrote {write_landing(args.root)}")
        return 0
    try:
        html = build_book(args.root)
    except BookBuildError as err:
        print(f"punl: {err}", file=sys.stderr)
        return 1
    print(f"book: {html / 'index.html'}")
    return 0


# ------------------------------------------------------------------------------------ parser
def add_predict_parser(sub) -> None:
    """The ``predict`` command's options: the request, the fit, and the adaptive unlearning."""
    p = sub.add_parser("predict", help="predict what deleting some training points will cost")
    p.add_argument("run", metavar="RUN",
                   help="a finished run: its output folder (runs/<name>) or its configuration")
    p.add_argument("--indices", required=True, metavar="FILE_OR_LIST",
                   help="the request: a comma list (3,17,256) or a file (.npy, .csv, or one "
                        "index per line)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="with a configuration as RUN: override one field (repeatable)")
    p.add_argument("--method", default=None, help="the unlearning method (default: primary)")
    p.add_argument("--score", default=None,
                   help="the per-point score predicting (default: the primary score)")
    p.add_argument("--groups", action="store_true", help="fit the group study's measured groups "
                   "even where the run has a per-point study")
    p.add_argument("--aggregate", default=None, help="with the group fit: mean (default), max "
                   "or median of the score over the request")
    p.add_argument("--level", type=float, default=None, help="the attack's level (default: the "
                   f"run's; one of {', '.join(map(str, LEVELS))}, the levels measured)")
    p.add_argument("--eps", type=float, default=None, help="with the group fit: predict the "
                   "steps until the excess divergence falls to EPS instead of the attack's "
                   "verdict")
    p.add_argument("--coverage", type=float, default=0.9, help="of the prediction intervals")
    p.add_argument("--json", action="store_true", help="print the prediction as JSON (null: more than "
                   "the budget)")
    p.add_argument("--adaptive", action="store_true", help="then unlearn the request: run the "
                   "method for the predicted steps plus a margin, check with the attack, and "
                   "continue until it passes or the budget ends")
    p.add_argument("--margin", type=float, default=0.25, help="first look at (1 + MARGIN) x "
                   "the predicted steps (default 0.25)")
    p.add_argument("--growth", type=float, default=2.0, help="each further look at GROWTH x the "
                   "last (default 2)")
    p.add_argument("--budget", type=int, default=None, help="the most steps (default: the "
                   "run's K)")
    p.set_defaults(func=cmd_predict)


DESCRIPTION = ("punl: per-instance privacy for machine unlearning. Train with noisy SGD, score "
               "every point's privacy loss, unlearn and test with membership inference, and "
               "publish it all as a book.")


class _QuietSubparsers(argparse._SubParsersAction):
    """Subcommands that each take ``--quiet`` (no progress bars; results and errors are still
    printed), before or after their other arguments."""

    def add_parser(self, name, **kwargs):
        parser = super().add_parser(name, **kwargs)
        parser.add_argument("--quiet", action="store_true",
                            help="no progress bars (results and errors are still printed)")
        return parser


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    parser = argparse.ArgumentParser(prog="punl", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"punl {__version__}")
    parser.register("action", "parsers", _QuietSubparsers)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in [
            ("train", cmd_train, "train the R noisy-SGD runs and write the ledger"),
            ("score", cmd_score, "per-instance privacy losses and baseline metrics"),
            ("unlearn", cmd_unlearn, "unlearn forget groups, MIA against retrained models")]:
        p = sub.add_parser(name, help=text)
        add_config_args(p)
        p.set_defaults(func=func)
    add_predict_parser(sub)
    p = sub.add_parser("run", help="execute the notebooks for one configuration into book/runs/")
    add_config_args(p)
    p.add_argument("--book-dir", default="book/runs", help="where executed notebooks go")
    p.add_argument("--plan", action="store_true", help="first probe the stages and print each "
                   "one's predicted time and memory (as punl plan; kept in run.json)")
    p.add_argument("--rerun", action="store_true", help="execute the notebooks even when the "
                   "published chapter is up to date")
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("sweep", help="run a grid of configurations, locally or on a dask cluster")
    add_config_args(p, out_default="runs/sweeps/<sweep name>")
    p.add_argument("--grid", action="append", default=[], required=True, metavar="KEY=V1,V2",
                   help="one swept field and its values as YAML (repeatable: cartesian product)")
    p.add_argument("--scheduler", default="local",
                   help="'local' (process pool) or a dask scheduler address, e.g. tcp://host:8786")
    p.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="SECONDS",
                   help="how long a dask scheduler may take to answer (default 10)")
    p.add_argument("--workers", type=int, default=2, help="local worker processes")
    p.add_argument("--name", default=None, help="sweep name (default: <config>-<swept keys>)")
    p.add_argument("--rerun", action="store_true", help="execute every point's notebooks, "
                   "also those whose chapter is up to date")
    p.set_defaults(func=cmd_sweep)
    p = sub.add_parser("book", help="write _toc.yml and build the HTML book into _build/html")
    p.add_argument("--root", default=".", help="book root holding _config.yml")
    p.add_argument("--no-build", action="store_true", help="only write _toc.yml and the landing page's results")
    p.set_defaults(func=cmd_book)
    add_listing_parsers(sub)
    return parser


def show_recompute_warnings() -> None:
    """Print every :class:`~punl.core.store.RecomputeWarning` and
    :class:`~punl.publish.chapters.ChapterWarning` as one line on stderr."""
    from tqdm import tqdm

    from ..core.store import RecomputeWarning
    from ..publish.chapters import ChapterWarning
    shown = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (RecomputeWarning, ChapterWarning)):   # one line, above bars
            tqdm.write(f"punl: warning: {message}", file=sys.stderr)
        else:
            shown(message, category, filename, lineno, file, line)

    warnings.simplefilter("always", RecomputeWarning)
    warnings.simplefilter("always", ChapterWarning)
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "force", False):
        args.overrides = [*args.overrides, "force=true"]
    from ..engine.data import DatasetUnavailable
    from ..stages.convergence import Diverged
    from ..analysis.predict import RequestError
    try:
        with warnings.catch_warnings():
            show_recompute_warnings()
            return args.func(args)
    except RequestError as err:
        print(f"punl: {err}", file=sys.stderr)
        return 2
    except (ConfigError, DatasetUnavailable) as err:
        print(f"punl: configuration error: {err}", file=sys.stderr)
        return 2
    except Diverged as err:
        print(f"punl: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
