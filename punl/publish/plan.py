"""A run's plan: which notebook templates execute (all of them, less those showing the per-point
study in a run without one), with what parameters, into which chapter.

A :class:`RunPlan` describes one run's chapter (notebook x configuration). The chapter is named
after the run (:func:`punl.stages.pipeline.run_name`): the configuration's name alone for the
configuration file as it is with its default output folder, else the name plus a short digest
of the changed fields and the output folder, so that runs with different results or outputs
get different chapters. The runner (:mod:`punl.commands.runner`) executes its :class:`NotebookRun` s
under papermill into the chapter's staging folder; the same plan, stored in the chapter's
``run.json``, gives the chapter's entry in the book's table of contents (:mod:`punl.publish.book`).
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..core.config import Config, load_config
from ..core.outputs import RUN_RECORD
from ..core.resources import resource
from ..stages.pipeline import overridden_fields, run_folder, run_name

#: Where the notebook templates are read from when none is given: None for punl's own
#: (:func:`punl.core.resources.resource`).
NOTEBOOKS_DIR: Path | None = None


def list_notebooks(notebooks_dir: str | Path | None = None) -> list[Path]:
    """The notebook templates to execute, in name order: ``0*.ipynb`` in ``notebooks_dir``
    (punl's own templates by default)."""
    folder = Path(notebooks_dir) if notebooks_dir else NOTEBOOKS_DIR or resource("notebooks")
    found = sorted(folder.glob("0*.ipynb"))
    if not found:
        raise FileNotFoundError(f"no notebooks 0*.ipynb in {folder}")
    return found


def needs_point_study(template: Path) -> bool:
    """Whether a notebook template shows the per-point study (its metadata ``punl.needs``
    lists ``pointwise``), so that a run without one (``point_models: 0``) leaves it out."""
    import json
    metadata = json.loads(Path(template).read_text()).get("metadata", {})
    return "pointwise" in metadata.get("punl", {}).get("needs", [])


def config_argument(config: str | Path) -> str:
    """What to hand a worker: an absolute path for a file, else the config name."""
    return str(Path(config).resolve()) if Path(config).is_file() else str(config)


BOOK_CONFIG = "_config.yml"


def book_root(folder: str | Path) -> Path:
    """The book root above ``folder``: the nearest folder (``folder`` included) holding a
    ``_config.yml``, else the working directory."""
    folder = Path(folder).resolve()
    for candidate in (folder, *folder.parents):
        if (candidate / BOOK_CONFIG).is_file():
            return candidate
    return Path.cwd().resolve()


def relative_to(path: str | Path, root: Path) -> str:
    """``path`` relative to ``root`` (with ``..`` where it lies outside), so that no absolute
    path of the machine ends up in a notebook or a page."""
    return Path(os.path.relpath(Path(path).resolve(), root)).as_posix()


@dataclass(frozen=True)
class NotebookRun:
    """One template executed with the run's parameters into the chapter folder."""

    template: Path
    output: Path
    parameters: dict
    cwd: Path


@dataclass(frozen=True)
class RunPlan:
    """A configuration's chapter: the notebooks it executes, with what, into where."""

    config_source: str
    overrides: tuple[str, ...]
    out_dir: Path
    chapter_dir: Path
    templates: tuple[Path, ...] = field(default_factory=tuple)

    @classmethod
    def make(cls, config: str | Path, overrides: list[str] | None, out_dir: str | Path | None,
             book_dir: str | Path, notebooks_dir: str | Path | None = None) -> "RunPlan":
        cfg, base = load_config(config, overrides), load_config(config)
        templates = [t for t in list_notebooks(notebooks_dir)
                     if cfg.point_models or not needs_point_study(t)]
        return cls(config_argument(config), tuple(overrides or ()),
                   run_folder(cfg, out_dir, base).resolve(),
                   Path(book_dir).resolve() / run_name(cfg, base, out_dir), tuple(templates))

    @property
    def config(self) -> Config:
        return load_config(self.config_source, list(self.overrides))

    @property
    def name(self) -> str:
        """The run's name, which is also its chapter folder's."""
        return self.chapter_dir.name

    def changed_fields(self) -> dict:
        """The fields where this run differs from its configuration file (runtime ones aside)."""
        return overridden_fields(self.config, load_config(self.config_source))

    @property
    def root(self) -> Path:
        """The book root the chapter belongs to; notebooks run there and every path handed to
        them is relative to it."""
        return book_root(self.chapter_dir.parent)

    def relative(self, path: str | Path) -> str:
        """``path`` relative to the book root."""
        return relative_to(path, self.root)

    @property
    def parameters(self) -> dict:
        """The notebooks' parameters: a configuration file and the output folder relative to
        the book root (a configuration name as it is)."""
        source = Path(self.config_source)
        config = self.relative(source) if source.is_file() else self.config_source
        return {"config": config, "overrides": list(self.overrides),
                "out_dir": self.relative(self.out_dir)}

    def notebook_runs(self, into: Path | None = None) -> list[NotebookRun]:
        """The notebooks, executed into ``into`` (the chapter folder by default)."""
        folder = self.chapter_dir if into is None else Path(into)
        parameters, root = self.parameters, self.root
        return [NotebookRun(t, folder / t.name, dict(parameters), root) for t in self.templates]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(out_dir=str(self.out_dir), chapter_dir=str(self.chapter_dir),
                 templates=[str(t) for t in self.templates], overrides=list(self.overrides))
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RunPlan":
        return cls(d["config_source"], tuple(d["overrides"]), Path(d["out_dir"]),
                   Path(d["chapter_dir"]), tuple(Path(t) for t in d["templates"]))


def read_plan(chapter_dir: Path) -> RunPlan | None:
    """The plan recorded in a chapter folder's ``run.json`` (None when there is none or it
    cannot be read: :func:`plan_problem` says why)."""
    try:
        return RunPlan.from_dict(json.loads((chapter_dir / RUN_RECORD).read_text())["plan"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


def plan_problem(chapter_dir: Path) -> str | None:
    """Why :func:`read_plan` finds no plan in ``chapter_dir`` (None when it finds one)."""
    path = chapter_dir / RUN_RECORD
    if not path.exists():
        return f"it has no {RUN_RECORD}"
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        return f"its {RUN_RECORD} is not text"
    except ValueError as err:
        return f"its {RUN_RECORD} is not valid JSON ({err})"
    except OSError as err:
        return f"its {RUN_RECORD} cannot be read ({err.strerror})"
    if read_plan(chapter_dir) is None:
        what = type(record).__name__ if not isinstance(record, dict) else "a record"
        return f"its {RUN_RECORD} holds {what} without a complete run plan"
    return None
