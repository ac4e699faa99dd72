"""End to end: papermill executes the notebooks, the book builds with warnings as errors."""
import ast
import json

import nbformat
import pandas as pd
import pytest

from pathlib import Path

from bookutil import NOTEBOOKS, REPO, TINY, make_book_root, make_notebooks_dir
from punl.book import build_book, generate_toc, toc_data
from punl.config import ConfigError
from punl.plan import RunPlan
from punl.cli import build_parser, cmd_run
from punl.data import DatasetUnavailable
from punl.runner import NotebookError, run_config

FIRST_TWO = ("01_train.ipynb", "02_score.ipynb")


@pytest.fixture(scope="module")
def book(tiny_run):
    """One tiny run executed into a fresh book root, then executed again."""
    root, first, kw = tiny_run["root"], tiny_run["first"], tiny_run["kw"]
    complete = root / "runs/tiny/artifacts" / f"train-{first['stage_keys']['train']}/_complete.json"
    before = (complete.read_bytes(), complete.stat().st_mtime_ns)
    second = run_config("digits-quick", TINY, **kw)
    chapter = Path(first["plan"]["chapter_dir"])
    return {"root": root, "first": first, "second": second, "complete": complete,
            "complete_before": before, "kw": kw, "chapter": chapter}


def test_templates_have_parameters_cell_and_no_outputs():
    for path in sorted((REPO / "notebooks").glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert "parameters" in code[0].metadata.get("tags", []), path.name
        names = {t.id for node in ast.parse(code[0].source).body for t in node.targets}
        assert names == {"config", "overrides", "out_dir"}, path.name
        assert all(not c.outputs and c.execution_count is None for c in code), path.name


@pytest.mark.slow
def test_run_executes_notebooks_and_writes_tables(book):
    root, first, chapter = book["root"], book["first"], book["chapter"]
    assert list(first["notebooks"]) == list(NOTEBOOKS)
    assert first["stages"] == {"train": "computed", "score": "computed", "unlearn": "computed"}
    published = root / "runs/tiny/published"
    record = json.loads((published / "run.json").read_text())
    assert record["notebooks"] == book["second"]["notebooks"]
    scores = pd.read_parquet(published / "scores.parquet")
    assert len(scores) == 200 and {"privacy_loss_a8", "avg_grad_norm", "flipped"} <= set(scores)
    tables = ("groups", "unlearning", "attack", "points", "point_null", "barriers", "paths",
              "steps", "claims", "heldout_predictions", "prediction_validation", "adaptive")
    for table in tables:
        assert len(pd.read_parquet(published / f"{table}.parquet")) > 0, table
    assert set(record["tables"]) == {f"{t}.parquet" for t in ("scores", *tables)}
    # the chapter is named after the run: the name plus a digest of what it changed and where
    assert chapter.parent == root / "book/runs" and chapter.name.startswith("tiny-")
    assert sorted(p.name for p in chapter.parent.iterdir()) == [chapter.name]
    for name in (*NOTEBOOKS, "index.md", "run.json"):
        assert (chapter / name).exists(), name
    index = (chapter / "index.md").read_text()
    assert "## Provenance" in index and "Stage `train`" in index and "git_commit" in index
    assert index.startswith(f"# Run `{chapter.name}` (n_train=200, ")


@pytest.mark.slow
def test_rerun_reuses_artifacts(book):
    second, complete = book["second"], book["complete"]
    assert second["stages"] == {"train": "reused", "score": "reused", "unlearn": "reused"}
    assert (complete.read_bytes(), complete.stat().st_mtime_ns) == book["complete_before"]
    print(f"first run {book['first']['notebooks']} s, rerun {second['notebooks']} s")


@pytest.mark.slow
def test_book_builds_without_warnings_and_shows_figures(book):
    root, run = book["root"], f"book/runs/{book['chapter'].name}"
    staged = root / "book/runs/.staging-killed"   # a run stopped by a full disk mid-notebook
    staged.mkdir()
    (staged / "01_train.ipynb").write_text('{"cells": [')
    generate_toc(root)
    html = build_book(root)
    pages = {"book/intro": 0, "book/methods": 0, "book/reproduce": 0, f"{run}/index": 0,
             f"{run}/01_train": 3, f"{run}/02_score": 3, f"{run}/03_unlearn": 4,
             f"{run}/04_loss_barriers": 3, f"{run}/05_summary": 0, f"{run}/06_predict": 4}
    for page, figures in pages.items():
        text = (html / f"{page}.html").read_text()
        assert text.count("<img") >= figures, page
    assert "Langevin" in (html / "book/intro.html").read_text()
    assert "supported" in (html / f"{run}/05_summary.html").read_text()
    assert "measured:" in (html / f"{run}/06_predict.html").read_text()


def test_bad_key_or_value_stops_before_any_notebook(tmp_path):
    kw = dict(out_dir=tmp_path / "out", book_dir=tmp_path / "book", progress=False)
    with pytest.raises(ConfigError, match=r"no_such_key.*valid keys"):
        run_config("digits-quick", ["no_such_key=1"], **kw)
    with pytest.raises(ConfigError, match="sigma"):
        run_config("digits-quick", ["sigma=-1"], **kw)
    with pytest.raises(ConfigError, match="runs"):
        run_config("digits-quick", ["runs=two"], **kw)
    assert not (tmp_path / "out").exists() and not (tmp_path / "book").exists()


@pytest.mark.slow
def test_failing_cell_names_notebook_cell_and_error(tmp_path):
    nb_dir = make_notebooks_dir(tmp_path / "templates", FIRST_TWO)
    broken = nbformat.read(nb_dir / "01_train.ipynb", as_version=4)
    broken.cells.append(nbformat.v4.new_code_cell("ratio = run.config.lr\nassert ratio < 0, 'lr'"))
    nbformat.write(broken, nb_dir / "01_train.ipynb")
    overrides = TINY[:-1] + ["name=broken"]
    with pytest.raises(NotebookError) as info:
        run_config("digits-quick", overrides, out_dir=tmp_path / "out",
                   book_dir=tmp_path / "book", progress=False, notebooks_dir=nb_dir)
    message = str(info.value)
    # the last cell; papermill's injected parameters cell shifts every index by one
    assert "01_train.ipynb" in message and f"cell {len(broken.cells)} " in message
    assert "AssertionError" in message and "line 2: assert ratio < 0, 'lr'" in message
    assert info.value.ename == "AssertionError"
    # nothing is published: no chapter, no published tables; the attempt stays in staging
    assert not [p for p in (tmp_path / "book").iterdir() if not p.name.startswith(".")]
    assert not (tmp_path / "out/published").exists()
    staged = next((tmp_path / "book").glob(".staging-broken-*"))
    assert str(staged / "01_train.ipynb") in message
    assert not (staged / "02_score.ipynb").exists()
    record = json.loads((tmp_path / "out/.staging/run.json").read_text())
    assert record["failed"]["notebook"] == "01_train.ipynb" and record["notebooks"] == {}


def test_missing_dataset_stops_before_any_notebook(tmp_path):
    (tmp_path / "empty").mkdir()
    overrides = TINY[:-1] + ["dataset=cifar10", f"data_root={tmp_path / 'empty'}"]
    with pytest.raises(DatasetUnavailable, match="cifar10.*data_root"):
        run_config("digits-quick", overrides, out_dir=tmp_path / "out",
                   book_dir=tmp_path / "book", progress=False)
    assert not list((tmp_path / "book").glob("*/*.ipynb"))


def test_cli_subcommands_parse():
    parser = build_parser()
    assert parser.parse_args(["unlearn", "digits-quick"]).command == "unlearn"
    args = parser.parse_args(["run", "digits-quick", "--set", "sigma=0.5", "--out", "x"])
    assert args.func is cmd_run and args.overrides == ["sigma=0.5"] and args.out == "x"
    args = parser.parse_args(["sweep", "digits-quick", "--grid", "sigma=0.5,1",
                              "--scheduler", "tcp://h:8786"])
    assert args.grid == ["sigma=0.5,1"] and args.scheduler == "tcp://h:8786"
    assert parser.parse_args(["book", "--no-build"]).no_build


def test_toc_lists_runs_in_order_and_sweeps(tmp_path):
    root = make_book_root(tmp_path)
    run = root / "book/runs/a"
    run.mkdir(parents=True)
    for name in ("index.md", "02_score.ipynb", "01_train.ipynb", "09_extra.ipynb"):
        (run / name).write_text("")
    plan = RunPlan("digits-quick", (), root / "runs/a", run,
                   (Path("t/02_score.ipynb"), Path("t/01_train.ipynb"), Path("t/03_unlearn.ipynb")))
    (run / "run.json").write_text(json.dumps({"plan": plan.to_dict()}))
    (root / "book/runs/orphan").mkdir()          # no index.md: not a chapter
    (root / "book/sweeps/s").mkdir(parents=True)
    (root / "book/sweeps/s/index.md").write_text("# s\n")
    toc = toc_data(root)
    assert toc["root"] == "book/intro"
    captions = [p["caption"] for p in toc["parts"]]
    assert captions == ["Background", "Experiments", "Sweeps", "Reproducing"]
    runs = toc["parts"][1]["chapters"]
    # the plan's notebooks that exist, in the plan's order; files outside the plan are not listed
    assert runs == [{"file": "book/runs/a/index", "sections": [
        {"file": "book/runs/a/02_score"}, {"file": "book/runs/a/01_train"}]}]
    assert (generate_toc(root)).read_text().startswith("# Generated")
