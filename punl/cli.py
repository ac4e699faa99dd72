"""Command line: ``punl train|score|unlearn|run|sweep|book``; one Config flows through every stage.

Every subcommand is defined here; the modules it calls hold no argument parsing.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

from .config import ConfigError, load_config


def add_config_args(p: argparse.ArgumentParser, out_default: str = "runs/<name>") -> None:
    """The arguments every configuration command takes: CONFIG, --set KEY=VALUE, --out DIR."""
    p.add_argument("config", help="a YAML file or the name of one in configs/ (e.g. digits-quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration field (repeatable); values are YAML")
    p.add_argument("--out", default=None,
                   help=f"output folder for tables and artifacts (default: {out_default})")


def _stage_inputs(args):
    """(config, output folder, artifact store) of a stage command; the folder is created."""
    from .pipeline import run_folder
    from .store import ArtifactStore
    config = load_config(args.config, args.overrides)
    out = run_folder(config, args.out)
    out.mkdir(parents=True, exist_ok=True)
    return config, out, ArtifactStore(out / "artifacts")


# ------------------------------------------------------------------------------------ stages
def cmd_train(args) -> int:
    from .pipeline import ensure_trained
    config, _, store = _stage_inputs(args)
    start = time.perf_counter()
    runs = ensure_trained(config, store)
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
    from .pipeline import ensure_scored
    from .scores import spearman_matrix
    from .store import atomic_write_parquet
    config, out, store = _stage_inputs(args)
    scores = ensure_scored(config, store)
    atomic_write_parquet(out / "scores.parquet", scores)
    print(scores.describe().T.to_string())
    print("\nSpearman correlations:\n" + spearman_matrix(scores).round(2).to_string())
    print(f"\nscores: {out / 'scores.parquet'}")
    return 0


def cmd_unlearn(args) -> int:
    from .analysis import select
    from .pipeline import publish
    config, out, store = _stage_inputs(args)
    publish(config, store, out)
    steps = select(pd.read_parquet(out / "steps.parquet"), config.primary_method, config.level,
                   kind=None)
    cols = ["score", "group", "group_score_median", "status", "steps_to_unlearn",
            "mia_acc_step0"]
    print(f"{config.primary_method}, level {config.level}:")
    print(steps[cols].to_string(index=False))
    claims = pd.read_parquet(out / "claims.parquet")
    print("\n" + claims[["claim", "verdict", "fragile"]].to_string(index=False))
    print(f"\ntables under {out}")
    return 0


# ------------------------------------------------------------------------------ run, sweep
def cmd_run(args) -> int:
    """``punl run CONFIG [--set k=v ...]``: execute the notebooks and refresh the table of contents."""
    from .book import generate_toc
    from .runner import NotebookError, run_config
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
    print(f"stages: {record['stages']}; tables and run.json in {record['plan']['out_dir']}")
    return 0


def cmd_sweep(args) -> int:
    """``punl sweep CONFIG --grid key=v1,v2 ...``: run the grid, print the table, write the chapter."""
    from .book import generate_toc
    from .sweep import parse_grid, run_sweep
    table = run_sweep(args.config, parse_grid(args.grid), scheduler=args.scheduler,
                      workers=args.workers, out_root=args.out, overrides=args.overrides,
                      name=args.name)
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(table.drop(columns=["overrides"]).to_string(index=False))
    if Path("_config.yml").exists():   # at the book root: add the sweep chapter to _toc.yml
        generate_toc(".")
    return 0 if (table.status != "failed").all() else 1


def cmd_book(args) -> int:
    """``punl book``: regenerate ``_toc.yml`` and build the HTML book."""
    from .book import BookBuildError, build_book, generate_toc
    toc = generate_toc(args.root)
    print(f"wrote {toc}")
    if not args.no_build:
        try:
            html = build_book(args.root)
        except BookBuildError as err:
            print(f"punl: {err}", file=sys.stderr)
            return 1
        print(f"book: {html / 'index.html'}")
    return 0


# ------------------------------------------------------------------------------------ parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="punl", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, func, text in [
            ("train", cmd_train, "train the R noisy-SGD runs and write the ledger"),
            ("score", cmd_score, "per-instance privacy losses and baseline metrics"),
            ("unlearn", cmd_unlearn, "unlearn forget groups, MIA against retrained models")]:
        p = sub.add_parser(name, help=text)
        add_config_args(p)
        p.set_defaults(func=func)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from .data import DatasetUnavailable
    try:
        return args.func(args)
    except (ConfigError, DatasetUnavailable) as err:
        print(f"punl: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
