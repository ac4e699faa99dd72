"""The commands that prepare a run without running it: ``punl configs`` and ``punl fields`` (what
a user can run and set), ``punl init`` (a book folder to start from) and ``punl plan`` (what a
configuration will cost on this machine, from a short probe: :mod:`punl.stages.forecast`)."""
from __future__ import annotations

import json

from ..core.config import ConfigError, load_config


def cmd_configs(args) -> int:
    """``punl configs``: each configuration punl ships, with the first sentence of the comment
    at its top (cut at 80 characters)."""
    from ..core.yamlfiles import builtin_configs
    for name, path in builtin_configs().items():
        lines = path.read_text(errors="replace").splitlines()
        comment = " ".join(line.lstrip("# ").strip() for line in
                           lines[:next((i for i, x in enumerate(lines) if not x.startswith("#")),
                                       len(lines))])
        first = comment.split(". ")[0].rstrip(".")
        print(f"{name:<18} {first if len(first) <= 80 else first[:77] + '...'}")
    return 0


def cmd_fields(args) -> int:
    """``punl fields``: every field ``--set`` accepts (of one stage with ``--stage``): its
    stage, default and meaning."""
    import dataclasses

    from ..core.config import Config, field_meanings
    meanings = field_meanings()
    for f in dataclasses.fields(Config):
        if args.stage in (None, f.metadata["stage"]):
            default = f.default if not isinstance(f.default, tuple) else list(f.default)
            print(f"{f.name:<22} {f.metadata['stage']:<10} {str(default):<30} "
                  f"{meanings.get(f.name, '')}".rstrip())
    return 0


def cmd_init(args) -> int:
    """``punl init DIR``: lay out a book folder (configuration, extension, stylesheet, prose
    chapters) that ``punl run`` and ``punl book`` fill, refusing to overwrite anything."""
    from ..core.resources import init_book
    try:
        written = init_book(args.folder)
    except FileExistsError as err:
        raise ConfigError(f"init: {err}") from None
    print(f"wrote {len(written)} files and folders into {args.folder}; next, there: "
          "punl run digits-quick, then punl book")
    return 0


def cmd_plan(args) -> int:
    """``punl plan CONFIG [--set k=v ...] [--json]``: probe the configuration's stages on this
    machine and print each one's predicted time and memory (:mod:`punl.stages.forecast`)."""
    from ..stages.forecast import forecast
    from ..stages.preflight import preflight
    config = load_config(args.config, args.overrides)
    preflight(config, "unlearn")
    result = forecast(config, progress=not args.quiet)
    print(json.dumps(result.as_dict(), indent=2) if args.json else result.table())
    return 0


def add_listing_parsers(sub) -> None:
    """``punl configs``, ``punl fields`` and ``punl init``: what a user can run and set, and a
    book folder to start from."""
    from ..core.config import ANALYSIS, RUNTIME, STAGES
    p = sub.add_parser("init", help="lay out a book folder to run configurations into")
    p.add_argument("folder", help="the folder (created if needed; nothing in it is overwritten)")
    p.set_defaults(func=cmd_init)
    p = sub.add_parser("configs", help="list the configurations punl ships")
    p.set_defaults(func=cmd_configs)
    p = sub.add_parser("fields", help="list every field --set accepts: stage, default, meaning")
    p.add_argument("--stage", choices=[*STAGES, ANALYSIS, RUNTIME], default=None,
                   help="only the fields of this stage")
    p.set_defaults(func=cmd_fields)
    p = sub.add_parser("plan", help="predict each stage's time and memory on this machine from "
                       "a short probe")
    p.add_argument("config", help="a YAML file or the name of one in configs/ (e.g. digits-quick)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one configuration field (repeatable); values are YAML")
    p.add_argument("--json", action="store_true", help="print the forecast as JSON")
    p.add_argument("--force", action="store_true", help="probe even a configuration past the "
                   "resource check's limits")
    p.set_defaults(func=cmd_plan)
