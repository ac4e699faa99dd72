"""Run one punl command with a fault injected: the process kills itself (SIGKILL) at a named
point, as a power cut or an out-of-memory kill would.

    python tests/fault_driver.py '{"point": "unlearn-group", "argv": ["unlearn", ...],
                                  "notebooks": "/path/to/templates"}'

``point`` is one of :data:`POINTS` (or ``none``); ``argv`` is the ``punl`` command line;
``notebooks`` (optional) replaces the notebook templates ``punl run`` executes.

:func:`run_child` runs the same in a process forked from a server that has already imported
torch and punl (``tests/test_faults.py`` starts each faulty run so, saving the seconds of
imports a fresh interpreter spends): its own working folder, environment and output files, and
its exit status that of the command, or death by SIGKILL.
"""
from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path


def kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_on_call(owner, name: str, nth: int = 1, when=lambda *a, **k: True,
                 after: bool = False) -> None:
    """Replace ``owner.name`` so that its ``nth`` call matching ``when`` kills the process,
    before the call or, with ``after``, once it has returned."""
    original, seen = getattr(owner, name), []

    def wrapper(*args, **kwargs):
        hit = when(*args, **kwargs) and (seen.append(1) or len(seen) == nth)
        if hit and not after:
            kill()
        result = original(*args, **kwargs)
        if hit and after:
            kill()
        return result

    setattr(owner, name, wrapper)


def _named(filename: str, folder: str | None = None):
    def when(path, *_, **__):
        path = Path(path)
        return path.name == filename and (folder is None or path.parent.name == folder)
    return when


def _swap_cut_between_renames() -> None:
    from punl.core import outputs
    outputs.exchange = lambda a, b: False
    kill_on_call(os, "rename", when=lambda src, dst: str(dst).endswith(".old"), after=True)


def _kill_after_a_training_snapshot() -> None:
    from punl.stages import pipeline
    from punl.engine import train
    train.SNAPSHOT_SECONDS = -1.0          # a snapshot after every segment of training
    kill_on_call(pipeline.TrainingSnapshots, "save", after=True)


def _points():
    from punl.core import outputs, store
    from punl.stages import pipeline
    from punl.commands import runner
    from punl.study import scores
    return {
        "train-run": _kill_after_a_training_snapshot,
        "train-models": lambda: kill_on_call(
            store.StageDir, "save_torch", when=lambda self, name, obj: name == "models.pt"),
        "score": lambda: kill_on_call(scores, "score_table"),
        "pointwise-chunk": lambda: kill_on_call(pipeline.ChunkCache, "save", after=True),
        "unlearn-group": lambda: kill_on_call(pipeline.GroupCache, "save", nth=2, after=True),
        "unlearn-tables": lambda: kill_on_call(
            store.StageDir, "save_parquet",
            when=lambda self, name, frame: name == "attack.parquet"),
        "publish-tables": lambda: kill_on_call(outputs, "atomic_write_bytes",
                                               when=_named("steps.parquet", ".staging")),
        "publish-record": lambda: kill_on_call(outputs.Publication, "write_record"),
        "notebook": lambda: kill_on_call(runner, "execute_notebook", nth=2),
        "swap": lambda: kill_on_call(outputs, "swap_in"),
        "chapter-swap": lambda: kill_on_call(outputs, "swap_in", nth=2),
        "swap-between-renames": _swap_cut_between_renames,
        "none": lambda: None,
    }


POINTS = ("train-run", "train-models", "score", "unlearn-group", "unlearn-tables",
          "publish-tables", "publish-record", "notebook", "swap", "chapter-swap",
          "swap-between-renames", "none")


def main(spec: dict) -> int:
    from punl.publish import plan
    from punl.commands.cli import main as punl
    if spec.get("notebooks"):
        plan.NOTEBOOKS_DIR = Path(spec["notebooks"])
    _points()[spec["point"]]()
    return punl(spec["argv"])


def run_child(spec: dict, cwd: str, env: dict[str, str], stdout: str, stderr: str) -> None:
    """In a forked child: work in ``cwd`` with environment ``env``, write standard output and
    error to the files ``stdout`` and ``stderr``, run :func:`main` and exit with its status."""
    for fd, path in ((1, stdout), (2, stderr)):     # first, so that any error lands there
        with open(path, "wb") as file:
            os.dup2(file.fileno(), fd)
    os.chdir(cwd)
    os.environ.clear()
    os.environ.update(env)
    sys.exit(main(spec))


if __name__ == "__main__":
    sys.exit(main(json.loads(sys.argv[1])))
