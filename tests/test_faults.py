"""Fault injection on a tiny configuration: the run is killed at every stage, every kind of
artifact is corrupted, the disk fills up, a second run shares the output folder. After a rerun
the tables, ledger and models always equal an uninterrupted run's, and the published folder
and chapters always hold the old or the new complete run.

Kills run the command in a child process (``tests/fault_driver.py``, forked from a server that
has imported punl) that sends itself SIGKILL at the chosen point; reruns go through the same
command line.
"""
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch

import fault_driver
from punl.publish import plan
from punl.commands import runner
from punl.publish.book import toc_data
from punl.commands.cli import main
from punl.core.config import load_config
from punl.core.parallel import worker_context
from punl.core.outputs import aside, output_lock, published_record, read_published, recover
from punl.stages.pipeline import TrainedRuns
from punl.core.store import COMPLETE, ArtifactStore

pytestmark = [pytest.mark.faults, pytest.mark.slow]

REPO = Path(__file__).resolve().parent.parent
#: What the fork server imports once, besides what punl's pools have it import (the command line
#: and the stages): each faulty run then starts in a fraction of a second.
FAULT_PRELOAD = ("punl.commands.cli", "punl.stages.pipeline")
FAULT = ["n_train=120", "runs=2", "epochs=5", "record_every=4", "width=8", "batch_size=32",
         "group_size=6", "n_groups=2", "baseline_scores=[avg_grad_norm]", "unlearn_steps=4",
         "n_checkpoints=2", "retrain_seeds=2", "n_bootstrap=10", "law_simulations=20",
         "barrier_points=3", "workers=1", "point_models=32", "forget_probability=0.25",
         "name=fault"]
OTHER = FAULT + ["sigma=1.0"]
KILLED = -signal.SIGKILL


def command(name: str, out: Path, overrides=FAULT, *extra: str) -> list[str]:
    return [name, "digits-quick", *[a for o in overrides for a in ("--set", o)],
            "--out", str(out), *extra]


def drive(point: str, argv: list[str], cwd: Path, notebooks: Path | None = None):
    """Run ``punl argv`` in a child process that kills itself at ``point``
    (:func:`fault_driver.run_child`), forked from the fork server that punl's pools use, with
    punl and torch imported; its return code (negative: the signal that ended it), standard
    output and error."""
    spec = {"point": point, "argv": argv, "notebooks": str(notebooks) if notebooks else None}
    streams = cwd / f".drive-{uuid.uuid4().hex[:8]}"
    out, err = streams.with_suffix(".out"), streams.with_suffix(".err")
    child = worker_context(FAULT_PRELOAD).Process(target=fault_driver.run_child, args=(
        spec, str(cwd), dict(os.environ), str(out), str(err)))
    child.start()
    child.join(timeout=600)
    if child.is_alive():
        child.kill()
        child.join()
        pytest.fail(f"punl {' '.join(argv)} with a fault at {point} ran past 600 s")
    texts = [p.read_text() if p.exists() else "" for p in (out, err)]
    for p in (out, err):
        p.unlink(missing_ok=True)
    return subprocess.CompletedProcess(argv, child.exitcode, *texts)


def warnings_in(stderr: str) -> list[str]:
    """The ``punl: warning:`` lines of a command's stderr."""
    return re.findall(r"punl: warning: [^\r\n]*", stderr)


# ------------------------------------------------------------------------------ comparisons
def snapshot(out: Path, overrides=FAULT) -> dict:
    """The published tables (verified against run.json), the ledger and the models."""
    record = published_record(out)
    names = [n.removesuffix(".parquet") for n in record["tables"]]
    tables = {n: read_published(out, n) for n in names}
    assert all(t is not None for t in tables.values()), "a published table does not verify"
    cfg = load_config("digits-quick", overrides)
    trained = TrainedRuns.load(ArtifactStore(out / "artifacts").stage(cfg, "train"))
    return {"tables": tables, "ledger": trained.ledger, "init": trained.init,
            "final": trained.final}


def assert_same(got: dict, want: dict) -> None:
    assert list(got["tables"]) == list(want["tables"])
    for name, frame in want["tables"].items():
        pd.testing.assert_frame_equal(got["tables"][name], frame, check_exact=True, obj=name)
    for field in ("clipped_norm", "grad_norm", "loss", "prob", "el2n", "batch_sizes"):
        assert np.array_equal(getattr(got["ledger"], field), getattr(want["ledger"], field)), field
    for kind in ("init", "final"):
        for a, b in zip(got[kind], want[kind], strict=True):
            assert all(torch.equal(a[k], b[k]) for k in b), kind


def published_state(out: Path) -> dict:
    """What a reader of ``<out>/published`` sees: each file's bytes."""
    return {p.name: p.read_bytes() for p in sorted((out / "published").iterdir())}


def chapters(book: Path) -> dict[str, dict[str, bytes]]:
    """Every chapter folder (hidden ones aside) and its files' bytes."""
    return {c.name: {p.name: p.read_bytes() for p in sorted(c.iterdir())}
            for c in sorted(book.iterdir()) if c.is_dir() and not c.name.startswith(".")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> tuple[Path, dict]:
    """An uninterrupted run of the tiny configuration."""
    out = tmp_path_factory.mktemp("reference") / "out"
    assert main(command("unlearn", out)) == 0
    return out, snapshot(out)


# ------------------------------------------------------------------------------------ kills
# In the order a run reaches them: training, the per-point study, then the group study,
# which computes the scores it needs first.
STAGE_KILLS = {"train-run": "train", "train-models": "train", "pointwise-chunk": "pointwise",
               "score": "score", "unlearn-group": "unlearn", "unlearn-tables": "unlearn", "publish-tables": None,
               "publish-record": None, "swap": None}


def test_killed_at_every_stage_a_rerun_equals_an_uninterrupted_run(reference, tmp_path):
    """One output folder, killed at each point in turn: every rerun resumes, says on the
    terminal which partial stage it recomputes, and nothing is published until a run ends."""
    out, expect_warning = tmp_path / "out", None
    for point, stage in STAGE_KILLS.items():
        done = drive(point, command("unlearn", out), tmp_path)
        assert done.returncode == KILLED, (point, done.stderr[-3000:])
        if expect_warning:
            assert any(f"punl: warning: {expect_warning}: artifact folder" in line
                       for line in warnings_in(done.stderr)), (point, done.stderr[-3000:])
        assert not (out / "published").exists(), point
        expect_warning = stage
    done = drive("none", command("unlearn", out), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert_same(snapshot(out), reference[1])


# ----------------------------------------------------------------------------- corruptions
def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def edit_record(folder: Path, **changes) -> None:
    record = json.loads((folder / COMPLETE).read_text())
    (folder / COMPLETE).write_text(json.dumps({**record, **changes}))


def drop_record(folder: Path) -> None:
    (folder / COMPLETE).unlink()


def first_group_table(folder: Path) -> Path:
    return sorted((folder / "groups").glob("*__unlearning.parquet"))[0]


CORRUPTIONS = {
    "stage-file": (lambda s: flip_byte(s["train"] / "ledger.npz"), "train: artifact folder"),
    "stage-file-missing": (lambda s: (s["score"] / "scores.parquet").unlink(),
                           "score: artifact folder"),
    "group-cache": (lambda s: (flip_byte(first_group_table(s["unlearn"])),
                               drop_record(s["unlearn"])), "unlearn: cached group"),
    "record-empty-files": (lambda s: edit_record(s["train"], files={}), "train: artifact folder"),
    "record-list-files": (lambda s: edit_record(s["unlearn"], files=[]),
                          "unlearn: artifact folder"),
    "record-truncated": (lambda s: (s["score"] / COMPLETE).write_text('{"files": {'),
                         "score: artifact folder"),
    "record-wrong-key": (lambda s: edit_record(s["train"], key="0" * 12),
                         "train: artifact folder"),
    "published-table": (lambda s: flip_byte(s["published"] / "steps.parquet"), None),
    "published-record": (lambda s: (s["published"] / "run.json").write_text('{"tables": '), None),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_each_corruption_is_detected_and_recomputed(reference, tmp_path, capsys, kind):
    """A copy of the uninterrupted run, one artifact corrupted: the rerun warns on the
    terminal (for stage files, records and caches), recomputes, and equals the original."""
    out = tmp_path / "out"
    shutil.copytree(reference[0], out)
    folders = {p.name.split("-")[0]: p for p in (out / "artifacts").iterdir()}
    corrupt, warning = CORRUPTIONS[kind]
    corrupt({**folders, "published": out / "published"})
    if kind == "published-table":
        assert read_published(out, "steps") is None
    assert main(command("unlearn", out)) == 0
    found = warnings_in(capsys.readouterr().err)
    if warning:
        assert any(warning in line for line in found), found
    else:
        assert found == []
    assert_same(snapshot(out), reference[1])


SNAPSHOT_CORRUPTIONS = {
    "flipped": (lambda f: flip_byte(f / "snapshot.pt"), "train: cached snapshot does not verify"),
    "digest": (lambda f: (f / ".snapshot.pt.sha256").write_text("{"),
               "train: cached snapshot does not verify"),
    "no-digest": (lambda f: (f / ".snapshot.pt.sha256").unlink(), "no digest record"),
}


@pytest.mark.parametrize("kind", SNAPSHOT_CORRUPTIONS)
def test_a_corrupt_training_snapshot_is_not_resumed_from(reference, tmp_path, kind):
    """Training killed after a snapshot; the snapshot (the resume cache of the training
    stage) corrupted: the rerun warns, trains from the start and equals the original."""
    out = tmp_path / "out"
    done = drive("train-run", command("unlearn", out), tmp_path)
    assert done.returncode == KILLED, done.stderr[-3000:]
    folder = next((out / "artifacts").glob("train-*"))
    assert (folder / "snapshot.pt").exists()
    corrupt, warning = SNAPSHOT_CORRUPTIONS[kind]
    corrupt(folder)
    done = drive("none", command("unlearn", out), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert any(warning in line for line in warnings_in(done.stderr)), done.stderr[-3000:]
    assert_same(snapshot(out), reference[1])


# -------------------------------------------------------------------------- output contract
PARAMETERS = 'config = "digits-quick"\noverrides = []\nout_dir = None'


def make_templates(folder: Path) -> Path:
    """Two small notebook templates: one reads the run's claims, one only prints."""
    folder.mkdir()
    for name, code in (("01_claims.ipynb", "from punl.publish.notebook import open_run\n"
                                           "run = open_run(config, overrides, out_dir)\n"
                                           "print(run.claims.verdict.tolist())"),
                       ("02_done.ipynb", "print(out_dir)")):
        nb = nbformat.v4.new_notebook(metadata={
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"}})
        nb.cells = [nbformat.v4.new_code_cell(PARAMETERS, metadata={"tags": ["parameters"]}),
                    nbformat.v4.new_code_cell(code)]
        nbformat.write(nb, folder / name)
    return folder


def toc_files(toc: dict) -> list[str]:
    """Every file the table of contents lists, chapters and their sections."""
    entries = [c for part in toc["parts"] for c in part["chapters"]]
    return [e["file"] for c in entries for e in (c, *c.get("sections", []))]


def assert_full_disk_and_file_out_change_nothing(out, book, templates, tmp_path, monkeypatch):
    """A full disk during a notebook, and an --out that is a file: nothing published changes,
    and the table of contents lists no staging folder."""
    published, chapter_state = published_state(out), chapters(book)
    real = runner.execute_notebook

    def disk_full(nb, progress=True, kernel=None):
        if nb.template.name == "02_done.ipynb":
            nb.output.write_bytes(nb.template.read_bytes()[:40])   # a truncated notebook
            raise OSError(errno.ENOSPC, "No space left on device", str(nb.output))
        return real(nb, progress, kernel)

    monkeypatch.setattr(runner, "execute_notebook", disk_full)
    monkeypatch.setattr(plan, "NOTEBOOKS_DIR", templates)
    with pytest.raises(OSError, match="No space left"):
        main(command("run", out, FAULT, "--book-dir", str(book), "--quiet"))
    (tmp_path / "afile").write_text("")
    assert main(command("run", tmp_path / "afile", FAULT, "--book-dir", str(book))) == 2
    assert published_state(out) == published and chapters(book) == chapter_state
    listed = toc_files(toc_data(tmp_path))
    assert not any("staging" in f for f in listed)
    assert sum(f.endswith("/index") and f.startswith("book/runs/") for f in listed) == 2


def test_the_published_run_is_always_the_old_or_the_new_one(reference, tmp_path, monkeypatch):
    """Run A completes; run B (sigma 1.0, the same --out) is killed at every point of its way;
    after each kill the published folder is A's and A's chapter is untouched. Only when B
    completes are its tables published and its own chapter added."""
    templates, out, book = make_templates(tmp_path / "templates"), tmp_path / "out", \
        tmp_path / "book" / "runs"

    def run(point: str, overrides: list[str]):
        return drive(point, command("run", out, overrides, "--book-dir", str(book)), tmp_path,
                     templates)

    assert run("none", FAULT).returncode == 0
    old, old_chapters = published_state(out), chapters(book)
    assert json.loads(old["run.json"])["config"]["sigma"] == 0.5 and len(old_chapters) == 1
    expect_warning = None   # `punl run` says on the terminal which stage it recomputes
    for point, stage in (("train-run", "train"), ("unlearn-group", "unlearn"),
                         ("publish-tables", None), ("publish-record", None), ("notebook", None),
                         ("swap", None)):
        done = run(point, OTHER)
        assert done.returncode == KILLED, (point, done.stderr[-3000:])
        assert published_state(out) == old, point
        assert chapters(book) == old_chapters, point
        if expect_warning:
            assert any(f"punl: warning: {expect_warning}: artifact folder" in line
                       for line in warnings_in(done.stderr)), (point, done.stderr[-3000:])
        expect_warning = stage

    # a folder swap by renames, cut between them: the next start puts the old folder back
    assert run("swap-between-renames", OTHER).returncode == KILLED
    assert not (out / "published").exists() and aside(out / "published").exists()
    recover(out / "published")
    assert published_state(out) == old

    # killed after publishing the tables, before the chapter: the new tables, the old chapter
    assert run("chapter-swap", OTHER).returncode == KILLED
    new = published_state(out)
    assert json.loads(new["run.json"])["config"]["sigma"] == 1.0
    assert chapters(book) == old_chapters

    done = run("none", OTHER)
    assert done.returncode == 0, done.stderr[-3000:]
    tables = {k: v for k, v in new.items() if k.endswith(".parquet")}
    assert {k: v for k, v in published_state(out).items() if k in tables} == tables
    now = chapters(book)
    assert len(now) == 2 and {k: now[k] for k in old_chapters} == old_chapters
    fresh = tmp_path / "fresh"
    assert main(command("unlearn", fresh, OTHER)) == 0
    assert_same(snapshot(out, OTHER), snapshot(fresh, OTHER))

    assert_full_disk_and_file_out_change_nothing(out, book, templates, tmp_path, monkeypatch)


def test_a_second_run_on_the_same_output_folder_waits(reference, tmp_path):
    """While one run holds an output folder, a second says it waits and touches nothing; then
    it runs and ends with the same results."""
    out = tmp_path / "out"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with output_lock(out):
        proc = subprocess.Popen([sys.executable, "-m", "punl.commands.cli", *command("unlearn", out)],
                                cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        line = proc.stderr.readline()
        assert "is in use by pid" in line and "waiting" in line, line
        assert sorted(p.name for p in out.iterdir()) == [".lock", ".punl"]
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert_same(snapshot(out), reference[1])
