"""Command line: ``punl train|score|unlearn|run|sweep|book``; one Config flows through every stage."""
from __future__ import annotations

import argparse
import sys

from .config import ConfigError, load_config


def add_config_args(p: argparse.ArgumentParser, out_default: str = "runs/<name>") -> None:
    """The arguments every configuration command takes: CONFIG, --set KEY=VALUE, --out DIR."""
    p.add_argument("config", help="a YAML file or the name of one in configs/ (e.g. digits-quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration field (repeatable); values are YAML")
    p.add_argument("--out", default=None,
                   help=f"output folder for tables and artifacts (default: {out_default})")


def cmd_train(args) -> int:
    import time
    from .pipeline import ensure_trained
    from .train import clipped_fraction
    config, _, store = _stage_inputs(args)
    start = time.perf_counter()
    runs = ensure_trained(config, store)
    ledger = runs.ledger
    print(f"config {config.name}: {config.runs} runs, {ledger['steps_per_record'].sum()} steps, "
          f"{len(ledger['steps'])} ledger records x {ledger['grad_norm'].shape[-1]} points")
    print(f"final test accuracy per run: {', '.join(f'{a:.3f}' for a in ledger['test_acc'][:, -1])}")
    print(f"fraction of (run, record, point) norms clipped at C={config.clip}: "
          f"{clipped_fraction(ledger, config.clip):.3f}")
    print(f"ledger: {runs.dir.file('ledger.npz')}  ({time.perf_counter() - start:.1f} s)")
    return 0


def _stage_inputs(args):
    """(config, output folder, artifact store) of a stage command; the folder is created."""
    from .store import ArtifactStore
    config = load_config(args.config, args.overrides)
    from .runner import default_out_dir
    out = default_out_dir(config, args.out)
    out.mkdir(parents=True, exist_ok=True)
    return config, out, ArtifactStore(out / "artifacts")


def cmd_score(args) -> int:
    from .pipeline import ensure_scored
    from .scores import spearman_matrix
    config, out, store = _stage_inputs(args)
    scores = ensure_scored(config, store)
    scores.to_parquet(out / "scores.parquet", index=False)
    print(scores.describe().T.to_string())
    print("\nSpearman correlations:\n" + spearman_matrix(scores).round(2).to_string())
    print(f"\nscores: {out / 'scores.parquet'}")
    return 0


def cmd_unlearn(args) -> int:
    from .analysis import hardest_m
    from .pipeline import UNLEARN_TABLES, ensure_unlearned
    config, out, store = _stage_inputs(args)
    tables = ensure_unlearned(config, store)
    for name in UNLEARN_TABLES:
        tables[name].to_parquet(out / f"{name}.parquet", index=False)
    cols = ["score", "group", "method", "group_score_median", "steps_to_unlearn", "censored"]
    print(tables["steps"][cols].to_string(index=False))
    print("\nhardest-m by each score (steps to unlearn):\n" + hardest_m(tables["steps"]).to_string())
    print(f"\ntables under {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="punl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("train", help="train the R noisy-SGD runs and write the ledger")
    add_config_args(p)
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("score", help="per-instance privacy losses and baseline metrics")
    add_config_args(p)
    p.set_defaults(func=cmd_score)
    p = sub.add_parser("unlearn", help="unlearn forget groups, MIA against retrained models")
    add_config_args(p)
    p.set_defaults(func=cmd_unlearn)
    from .runner import add_subcommands
    add_subcommands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as err:
        print(f"punl: configuration error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
