"""End to end: papermill executes the notebooks, the book builds with warnings as errors."""
import ast
import json
import re
import shutil
from dataclasses import replace

import nbformat
import numpy as np
import pandas as pd
import pytest

from pathlib import Path

from bookutil import (MARKUP, NOTEBOOKS, REPO, TINY, make_book_root, make_notebooks_dir,
                      tiny_run_kwargs, tiny_without)
from punl.analysis import claims as claims_module
from punl.analysis import findings
from punl.publish.book import build_book, generate_toc, toc_data
from punl.publish.chapters import ChapterWarning
from punl.publish.landing import RunResult, claims_side_by_side, landing_text, write_landing
from punl.core.config import ConfigError
from punl.publish.markdown import claim_anchor
from punl.publish import plan as plan_module
from punl.publish.plan import RunPlan
from punl.commands.cli import build_parser, cmd_run, main
from punl.engine.data import DatasetUnavailable
from punl.commands import runner
from punl.commands.sweep import replication_table
from punl.commands.runner import (NotebookError, current_record, execute_notebook,
                                   inputs_digest, run_config)

FIRST_TWO = ("01_train.ipynb", "02_score.ipynb")


@pytest.fixture(scope="module")
def book(tiny_run):
    """One tiny run executed into a fresh book root, then executed again (``rerun``: it is
    up to date)."""
    root, first, kw = tiny_run["root"], tiny_run["first"], tiny_run["kw"]
    complete = root / "runs/tiny/artifacts" / f"train-{first['stage_keys']['train']}/_complete.json"
    before = (complete.read_bytes(), complete.stat().st_mtime_ns)
    published = {p.name: p.read_bytes() for p in (root / "runs/tiny/published").glob("*.parquet")}
    second = run_config("digits-quick", TINY, rerun=True, **kw)
    chapter = Path(first["plan"]["chapter_dir"])
    return {"root": root, "first": first, "second": second, "complete": complete,
            "complete_before": before, "kw": kw, "chapter": chapter,
            "first_published": published}


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
    assert first["stages"] == {"train": "computed", "score": "computed", "pointwise": "computed",
                               "unlearn": "computed"}
    published = root / "runs/tiny/published"
    record = json.loads((published / "run.json").read_text())
    assert record["notebooks"] == book["second"]["notebooks"]
    scores = pd.read_parquet(published / "scores.parquet")
    assert len(scores) == 200 and {"privacy_loss_a8", "avg_grad_norm", "flipped"} <= set(scores)
    tables = ("groups", "unlearning", "attack", "points", "point_null", "barriers", "paths",
              "steps", "claims", "heldout_predictions", "prediction_validation", "adaptive",
              "point_tests", "point_utility", "point_steps", "point_predictions",
              "point_prediction_validation", "barrier_points")
    for table in tables:
        assert len(pd.read_parquet(published / f"{table}.parquet")) > 0, table
    assert set(record["tables"]) == {f"{t}.parquet" for t in ("scores", *tables)}
    # the chapter is named after the run: the name plus a digest of what it changed and where
    assert chapter.parent == root / "book/runs" and chapter.name.startswith("tiny-")
    assert sorted(p.name for p in chapter.parent.iterdir()) == [chapter.name]
    for name in (*NOTEBOOKS, "index.md", "run.json"):
        assert (chapter / name).exists(), name
    index = (chapter / "index.md").read_text()
    assert "## Provenance" in index
    assert re.search(r"^\| `coupled` \| \w+ \| MIA reference", index, re.M)   # each field explained
    provenance = index[index.index("## Provenance"):index.index("Files:")]
    record = json.loads((chapter / "run.json").read_text())
    for stage in record["stages"]:       # each stage's row once
        assert len(re.findall(rf"^\| {stage} \|", provenance, re.M)) == 1, stage
    assert provenance.count('"versions"') == 1       # one environment produced every stage
    assert len(re.findall(r"computed from commit `([0-9a-f]{40}|unknown)`", provenance)) == 1
    assert index.startswith(f"# Run `{chapter.name}` (n_train=200, ")


@pytest.mark.slow
def test_run_keeps_its_forecast_beside_the_measured_stage_times(book):
    from punl.core.config import load_config
    from punl.publish.book import run_chapter_text
    root, first, second = book["root"], book["first"], book["second"]
    forecast = first["forecast"]
    assert set(forecast["stages"]) == {"train", "score", "pointwise", "unlearn"}
    assert forecast["reused"] == []
    records = {s: json.loads((root / "runs/tiny/artifacts" / f"{s}-{key}/_complete.json")
                             .read_text()) for s, key in first["stage_keys"].items()}
    assert first["stage_seconds"] == {s: r["wall_time_s"] for s, r in records.items()}
    groups = pd.read_parquet(root / "runs/tiny/published/groups.parquet")
    assert forecast["stages"]["unlearn"]["jobs"] == groups.group.nunique()
    chunks = list((root / "runs/tiny/artifacts" /
                   f"pointwise-{first['stage_keys']['pointwise']}/chunks").glob("*.npz"))
    assert forecast["stages"]["pointwise"]["jobs"] == len(chunks)
    for study in ("pointwise", "unlearn"):     # each probed on a fresh pool of two workers
        predicted = forecast["stages"][study]
        assert predicted["workers"] == min(2, predicted["jobs"]) == 2
        assert predicted["start_seconds"] > 0
        assert predicted["seconds"] == pytest.approx(
            predicted["rounds"] * predicted["job_seconds"] + predicted["start_seconds"]
            + predicted["first_call_seconds"], abs=0.01)     # rounded to 0.01 s in run.json
    assert first["peak_memory_bytes"]["main"] > 50 * 2**20
    # the second run reused every stage, so it measured none and forecast none
    assert second["stage_seconds"] == {} and "forecast" not in second
    config = load_config("digits-quick", TINY)
    text = run_chapter_text(config, root / "runs/tiny", first)
    provenance = text[text.index("## Provenance"):text.index("Files:")]
    assert "| predicted (s) |" in provenance
    unlearn_row = next(line for line in provenance.splitlines() if line.startswith("| unlearn |"))
    assert f"| {forecast['stages']['unlearn']['seconds']} |" in unlearn_row


@pytest.mark.slow
def test_run_without_a_point_study_leaves_its_chapter_out(tmp_path):
    """A configuration with ``point_models: 0`` (digits-lownoise, digits, mnist5k) executes
    every chapter but the per-point study's, each of which says what the run lacks."""
    root = make_book_root(tmp_path)
    kw = tiny_run_kwargs(root)
    record = run_config("digits-quick", tiny_without("point_models") + ["point_models=0"], **kw)
    assert list(record["notebooks"]) == [n for n in NOTEBOOKS if n != "03_points.ipynb"]
    chapter = Path(record["plan"]["chapter_dir"])
    assert not (chapter / "03_points.ipynb").exists()
    predict = nbformat.read(chapter / "07_predict.ipynb", as_version=4)
    shown = "".join(o.get("data", {}).get("text/markdown", "") for c in predict.cells
                    for o in c.get("outputs", []))
    assert "This run has no per-point study" in shown


GLUE_ROLE = re.compile(r"\{glue:text\}`([A-Za-z0-9_]+)")
HIDDEN = {"remove-cell", "remove-input", "hide-input"}


def glued(nb) -> dict[str, str]:
    """The text glued under each name in an executed notebook."""
    found = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            name = out.get("metadata", {}).get("scrapbook", {}).get("name")
            if name:
                found[name] = ast.literal_eval(
                    out["data"]["application/papermill.record/text/plain"])
    return found


def test_templates_close_with_what_we_found():
    for path in sorted((REPO / "notebooks").glob("0*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
        assert "## What we found" in text, path.name
        closing = nb.cells[-1]
        assert closing.cell_type == "markdown" and GLUE_ROLE.search(closing.source), path.name
        assert "glue_all(" in nb.cells[-2].source, path.name
        assert "remove-cell" in nb.cells[-2].metadata.get("tags", []), path.name


@pytest.mark.slow
def test_executed_notebooks_are_prepared_for_the_page(book):
    """Parameter cells removed in favour of a provenance box, code behind a toggle, and no
    absolute path: the notebooks ran in the book root with paths relative to it."""
    root, chapter = book["root"], book["chapter"]
    for name in NOTEBOOKS:
        nb = nbformat.read(chapter / name, as_version=4)
        tags = [c.metadata.get("tags", []) for c in nb.cells]
        params = [i for i, t in enumerate(tags) if "parameters" in t or "injected-parameters" in t]
        assert len(params) == 2 and all("remove-cell" in tags[i] for i in params), name
        box = nb.cells[params[-1] + 1]
        assert box.cell_type == "markdown" and box.source.startswith(":::{admonition} Provenance")
        assert "`runs/tiny/published`" in box.source and "stage keys" in box.source
        assert all(HIDDEN & set(t) for c, t in zip(nb.cells, tags) if c.cell_type == "code"), name
        record = nb.metadata.papermill
        assert record.parameters["out_dir"] == "runs/tiny"
        assert record.input_path == f"templates/{name}"
        assert record.output_path == f"book/runs/{chapter.name}/{name}"
        assert str(root) not in (chapter / name).read_text(), name


def cell_outputs(path: Path) -> dict[str, tuple]:
    """Each code cell's count and outputs (type, stream, text, data) by cell id, papermill's
    injected parameter cell left out."""
    nb = nbformat.read(path, as_version=4)
    return {c.id: (c.execution_count, [(o.output_type, o.get("name"), o.get("text"),
                                        dict(o.get("data", {}))) for o in c.outputs])
            for c in nb.cells
            if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])}


@pytest.mark.slow
def test_each_chapter_shows_what_its_notebook_shows_alone(book, tmp_path):
    """A run executes its notebooks in one kernel, reset before each: every notebook executed
    alone in a fresh kernel gives the same outputs, cell for cell, byte for byte (figures and
    table HTML included)."""
    plan = RunPlan.from_dict(book["second"]["plan"])
    for nb in plan.notebook_runs(into=tmp_path):
        execute_notebook(nb, progress=False)
        alone, shared = cell_outputs(nb.output), cell_outputs(book["chapter"] / nb.output.name)
        assert alone == shared, nb.template.name


@pytest.mark.slow
def test_closing_paragraphs_glue_numbers_from_the_tables(book):
    chapter, published = book["chapter"], book["root"] / "runs/tiny/published"
    for name in NOTEBOOKS:
        nb = nbformat.read(chapter / name, as_version=4)
        used = set(GLUE_ROLE.findall(nb.cells[-1].source))
        assert used and used <= set(glued(nb)), (name, used - set(glued(nb)))
    summary = glued(nbformat.read(chapter / "06_summary.ipynb", as_version=4))
    table = pd.read_parquet(published / "claims.parquet")
    assert summary == findings.summary_findings(table)
    scores = pd.read_parquet(published / "scores.parquet")
    found = glued(nbformat.read(chapter / "02_score.ipynb", as_version=4))
    assert found["median"] == claims_module.measures.fmt(scores.privacy_loss_a8.median())
    assert found["points"] == "200"


@pytest.mark.slow
def test_chapters_state_the_claims_tables_numbers(book):
    """What a chapter's prose says of a claim is the published claims table's number, as the
    chapter prints it: the chapters call the claims' own analyses (with their random streams)
    instead of recomputing them."""
    chapter, published = book["chapter"], book["root"] / "runs/tiny/published"
    table = pd.read_parquet(published / "claims.parquet").set_index("id")
    number = table.number
    fmt, percent = claims_module.measures.fmt, claims_module.measures.percent
    points = glued(nbformat.read(chapter / "03_points.ipynb", as_version=4))
    assert points["quick_share"] == percent(number["1"])
    assert f"log-likelihood difference {fmt(number['2'], 3)};" in points["law_clause"]
    unlearning = glued(nbformat.read(chapter / "04_unlearn.ipynb", as_version=4))
    if np.isfinite(number["2b"]):
        clause = f"Spearman ρ = {fmt(number['2b'], 2)} (p = "
        assert unlearning["amplitude_rho_clause"].startswith(clause)
    else:
        assert unlearning["amplitude_rho_clause"].startswith("no rank correlation")
    barriers = glued(nbformat.read(chapter / "05_loss_barriers.ipynb", as_version=4))
    assert barriers["independent_clean_rho"] == fmt(number["4"], 2)
    result = barriers["independent_clean_result"]
    if not np.isfinite(number["4"]):
        # too few groups for a trend: the table leaves the interval empty, the chapter says why
        assert table.interval["4"] == "" and result.startswith("no trend can be measured")
    else:
        low, high = re.match(r"\[([^,]+), ([^\]]+)\]", table.interval["4"]).groups()
        shown = re.search(r"interval of \[([^,]+), ([^\]]+)\]", result).groups()
        # the table prints 3 significant digits and the chapter 2: equal within its rounding
        for table_end, chapter_end in zip((low, high), shown):
            assert float(chapter_end) == pytest.approx(float(table_end), abs=0.0051)
    for name, found in (("03_points", points), ("04_unlearn", unlearning),
                        ("05_loss_barriers", barriers)):
        for key in ("claim_1", "claim_2", "claim_4"):
            if key in found:
                row = table.loc[key.removeprefix("claim_")]
                assert found[key] == findings.verdict_text(row.verdict, row.fragile), (name, key)


@pytest.mark.slow
def test_rerun_reuses_artifacts(book):
    second, complete = book["second"], book["complete"]
    assert second["stages"] == {"train": "reused", "score": "reused", "pointwise": "reused",
                                "unlearn": "reused"}
    assert (complete.read_bytes(), complete.stat().st_mtime_ns) == book["complete_before"]
    # the tables published from computed stages and from reused ones are the same files
    published = book["root"] / "runs/tiny/published"
    first = book["first_published"]
    assert len(first) > 10 and sorted(first) == sorted(p.name for p in published.glob("*.parquet"))
    for name, data in first.items():
        assert (published / name).read_bytes() == data, name
    print(f"first run {book['first']['notebooks']} s, rerun {second['notebooks']} s")


@pytest.mark.slow
def test_an_up_to_date_run_is_not_executed_again(book, monkeypatch, capsys, tmp_path):
    """Run again with nothing changed, the run returns its published record at once: no stage
    or notebook runs, and no published file or chapter file is written."""
    root, kw = book["root"], book["kw"]
    files = [p for folder in (root / "runs/tiny/published", book["chapter"])
             for p in sorted(folder.rglob("*")) if p.is_file()]
    before = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files}

    def must_not_run(*args, **kwargs):
        raise AssertionError("an up-to-date run executed")

    monkeypatch.setattr(runner, "execute_notebook", must_not_run)
    monkeypatch.setattr(runner, "run_tables", must_not_run)
    record = run_config("digits-quick", TINY, **kw)
    assert record["up_to_date"] is True
    assert record["finished_at"] == book["second"]["finished_at"]
    # the same from the command line, which says so
    monkeypatch.setattr(plan_module, "NOTEBOOKS_DIR", kw["notebooks_dir"])
    monkeypatch.chdir(tmp_path)   # outside the book root, as the run was made
    assert main(["run", "digits-quick", *[a for o in TINY for a in ("--set", o)], "--out",
                 str(kw["out_dir"]), "--book-dir", str(kw["book_dir"]), "--quiet"]) == 0
    assert "up to date: " in capsys.readouterr().out
    assert {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in files} == before


@pytest.mark.slow
def test_what_a_run_is_made_from_decides_whether_it_is_current(book, tmp_path):
    """The digest changes with a template's bytes, the replication over seeds of the run's own
    configuration (not another's, nor an unreadable file) and an override; a run is not
    current when its chapter lost a notebook, when the chapter's record is another run's, when
    the digest differs, or when its records are not records punl wrote (each undone after)."""
    plan = RunPlan.from_dict(book["second"]["plan"])
    store = runner.ArtifactStore(plan.out_dir / "artifacts")
    digest = inputs_digest(plan)
    assert current_record(plan, store)["inputs"] == digest
    assert inputs_digest(replace(plan, overrides=(*plan.overrides, "sigma=2.0"))) != digest
    templates = make_notebooks_dir(tmp_path / "templates")
    copied = replace(plan, templates=tuple(templates / t.name for t in plan.templates))
    before = inputs_digest(copied)
    edited = templates / plan.templates[0].name
    edited.write_bytes(edited.read_bytes() + b" ")
    assert inputs_digest(copied) != before
    sweeps = plan.root / "book/sweeps"
    sweeps_existed = sweeps.exists()
    claims = pd.read_parquet(plan.out_dir / "published/claims.parquet")
    try:
        (sweeps / "broken-seed").mkdir(parents=True)
        (sweeps / "broken-seed/replication.parquet").write_bytes(b"not a table")
        assert inputs_digest(plan) == digest      # unreadable: the summary chapter skips it too
        for config, changes in (("another-config", False), (plan.config.name, True)):
            folder = sweeps / f"{config}-seed"
            folder.mkdir(parents=True)
            replication_table(claims, config).to_parquet(folder / "replication.parquet")
            assert (inputs_digest(plan) != digest) is changes, config
            assert (current_record(plan, store) is None) is changes, config
    finally:
        for config in ("another-config", plan.config.name, "broken"):
            shutil.rmtree(sweeps / f"{config}-seed", ignore_errors=True)
        if not sweeps_existed:
            sweeps.rmdir()
    for path, changed in ((plan.chapter_dir / plan.templates[-1].name, None),
                          (plan.chapter_dir / "run.json", b'{"finished_at": "another run"}')):
        kept = path.read_bytes()
        try:
            path.unlink() if changed is None else path.write_bytes(changed)
            assert current_record(plan, store) is None, path.name
        finally:
            path.write_bytes(kept)
    records = [plan.out_dir / "published/run.json", plan.chapter_dir / "run.json"]
    kept = [path.read_bytes() for path in records]
    for malformed in (b"[]", b'{"notebooks": 3, "stages": {}}', b'{"stages": ["train"]}'):
        try:
            for path in records:
                path.write_bytes(malformed)
            assert current_record(plan, store) is None, malformed
        finally:
            for path, data in zip(records, kept):
                path.write_bytes(data)
    assert current_record(plan, store)["inputs"] == digest


@pytest.mark.slow
def test_book_builds_without_warnings_and_shows_figures(book):
    root, run = book["root"], f"book/runs/{book['chapter'].name}"
    staged = root / "book/runs/.staging-killed"   # a run stopped by a full disk mid-notebook
    staged.mkdir()
    (staged / "01_train.ipynb").write_text('{"cells": [')
    generate_toc(root)
    html = build_book(root)
    pages = {"book/intro": 0, "book/methods": 0, "book/reproduce": 0, f"{run}/index": 0,
             f"{run}/01_train": 3, f"{run}/02_score": 3, f"{run}/04_unlearn": 4,
             f"{run}/05_loss_barriers": 3, f"{run}/06_summary": 0, f"{run}/07_predict": 4}
    for page, figures in pages.items():
        text = (html / f"{page}.html").read_text()
        assert text.count("<img") >= figures, page
    for name in NOTEBOOKS:
        text = (html / f"{run}/{Path(name).stem}.html").read_text()
        assert "Provenance" in text and "What we found" in text, name
        assert "# Parameters" not in text and "out_dir =" not in text, name
        assert "Show code cell source" in text, name
        assert "pasted-text" in text, name    # the closing paragraph's glued numbers
    intro = (html / "book/intro.html").read_text()
    assert "Langevin" in intro and "supported" in (html / f"{run}/06_summary.html").read_text()
    # the front page: the headline figure, and every verdict linking to its claim in the run's
    # summary
    assert "headline.png" in intro and (html / "_images").is_dir()
    table = pd.read_parquet(root / "runs/tiny/published/claims.parquet")
    claims_table = intro[intro.index("The claims of the study"):]
    claims_table = claims_table[:claims_table.index("</table>")]
    links = re.findall(rf'href="runs/{book["chapter"].name}/06_summary.html#(claim-[^"]+)"',
                       claims_table)
    assert sorted(links) == sorted(claim_anchor(i) for i in table["id"])
    assert "Measured:" in (html / f"{run}/07_predict.html").read_text()
    for page in pages:      # a number a run lacks gets a sentence saying why, never "n/a"
        assert "n/a" not in prose_of((html / f"{page}.html").read_text()), page


def prose_of(page: str) -> str:
    """The text of an HTML page outside its tables, code, scripts and styles."""
    for tag in ("table", "script", "style", "pre", "details"):
        page = re.sub(rf"<{tag}\b.*?</{tag}>", " ", page, flags=re.S)
    return re.sub(r"<[^>]+>", " ", page)


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
    overrides = tiny_without("name") + ["name=broken"]
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
    overrides = tiny_without("data_root") + ["dataset=cifar10", f"data_root={tmp_path / 'empty'}"]
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
                   (Path("t/02_score.ipynb"), Path("t/01_train.ipynb"), Path("t/04_unlearn.ipynb")))
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
    with pytest.warns(ChapterWarning, match="book/runs/orphan is left out .*no run.json"):
        assert (generate_toc(root)).read_text().startswith("# Generated")


BROKEN_CHAPTERS = {"truncated": b'{"plan": {"config_source": "digits-q', "binary": b"\xff\xfe\x00",
                   "list": b"[]", "null-out": None}
BROKEN_RUNS = {"truncated-record": b'{"config": {"na', "no-tables": b'{"config": {}, "tables": []}'}


def test_chapters_and_runs_that_cannot_be_shown_are_named_never_dropped(tmp_path, capsys):
    """A chapter whose run.json is truncated, binary, a list or has out_dir null, and a run
    whose published run.json is truncated or lists no tables: `punl book` warns of each in one
    line naming it, and the front page lists each with why."""
    root = make_book_root(tmp_path)
    good = RunPlan("digits-quick", (), root / "runs/x", root / "book/runs/x", ())
    for name, content in {**BROKEN_CHAPTERS, **BROKEN_RUNS}.items():
        folder = root / "book/runs" / name
        folder.mkdir(parents=True)
        (folder / "index.md").write_text(f"# {name}\n")
        plan = {**good.to_dict(), "out_dir": str(root / "runs" / name),
                "chapter_dir": str(folder)}
        if name in BROKEN_RUNS:
            (root / "runs" / name / "published").mkdir(parents=True)
            (root / "runs" / name / "published/run.json").write_bytes(content)
            content = json.dumps({"plan": plan}).encode()
        elif content is None:
            content = json.dumps({"plan": {**plan, "out_dir": None}}).encode()
        (folder / "run.json").write_bytes(content)
    assert main(["book", "--root", str(root), "--no-build"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    for name in BROKEN_CHAPTERS:
        assert sum(f"book/runs/{name} is left out of the table of contents" in line
                   for line in err) == 1, (name, err)
    for name in BROKEN_RUNS:
        assert sum(f"book/runs/{name} is left out of the front page" in line
                   for line in err) == 1, (name, err)
    assert all(line.startswith("punl: warning: ") for line in err), err
    landing = (root / "book/generated/landing.md").read_text()
    assert "Not shown, because they cannot be read" in landing
    for name in {**BROKEN_CHAPTERS, **BROKEN_RUNS}:
        assert f"`book/runs/{name}`" in landing, name
    listed = [c["file"] for part in toc_data(root)["parts"] for c in part["chapters"]]
    assert not any(f"runs/{name}/" in f for f in listed for name in BROKEN_CHAPTERS)


def fake_result(name: str, verdicts: list[str], **fields) -> RunResult:
    """What :func:`punl.publish.landing.run_results` gives of one run, as far as the claims table goes
    (``fields`` give the rest; no headline is drawn from it)."""
    claims = pd.DataFrame({"claim": ["1. a", "2. steps grow like a*log(b*P + 1)"][:len(verdicts)],
                           "verdict": verdicts, "fragile": [False, True][:len(verdicts)]})
    return RunResult(**{"name": name, "index": f"book/runs/{name}/index", "config": {},
                        "n_train": 0, "wall_time_s": None, "replication": None,
                        "doc": f"book/runs/{name}/06_summary", "claims": claims, "budget": 0,
                        "method": "", "score": "", "headline": None, **fields})


def test_landing_puts_every_runs_claims_side_by_side():
    text = claims_side_by_side([fake_result("a", ["supported", "not supported"]),
                                fake_result("b", ["inconclusive"])])
    lines = text.strip().splitlines()
    assert lines[0] == ("| claim | {doc}`a </book/runs/a/index>` | "
                        "{doc}`b </book/runs/b/index>` |")
    assert lines[2] == ("| 1. a | {doc}`supported </book/runs/a/06_summary>` | "
                        "{doc}`inconclusive </book/runs/b/06_summary>` |")
    assert lines[3] == ("| 2. steps grow like $a \\log(bP + 1)$ | "
                        "{doc}`not supported, fragile </book/runs/a/06_summary>` | — |")
    assert "No run is in the book yet" in landing_text([], None)


def test_a_run_without_a_summary_chapter_links_its_verdicts_to_its_index():
    result = fake_result("a", ["supported"], doc="book/runs/a/index")
    result.claims["id"] = ["1"]
    assert "{doc}`supported </book/runs/a/index>`" in claims_side_by_side([result])


def test_each_verdict_links_to_its_claim_in_the_summary():
    """With claim ids (every claims table punl writes has them), a verdict links to its
    claim's block in the run's summary page, not to the top of the page."""
    result = fake_result("a b", ["supported", "inconclusive"])
    result.claims["id"] = ["1", "5 (finetune)"]
    lines = claims_side_by_side([result]).strip().splitlines()
    # relative to the front page, book/intro
    assert ('<a class="verdict" href="runs/a%20b/06_summary.html#claim-1">supported</a>'
            in lines[2])
    assert ('href="runs/a%20b/06_summary.html#claim-5-finetune">inconclusive, fragile</a>'
            in lines[3])


def test_landing_without_runs_is_written_and_says_so(tmp_path):
    root = make_book_root(tmp_path)
    page = write_landing(root)
    assert page == root / "book/generated/landing.md"
    assert "No run is in the book yet" in page.read_text()
    assert "generated/landing.md" in (root / "book/intro.md").read_text()


def test_the_front_page_says_what_each_run_ran():
    from punl.publish.landing import landing_text, run_sentence
    config = {"dataset": "digits", "label_noise": 0.1, "model": "mlp", "width": 64, "runs": 16,
              "sigma": 0.5, "clip": 15.0, "epochs": 10.0, "point_models": 1024,
              "forget_probability": 0.1, "retrain_seeds": 16, "unlearn_steps": 400,
              "primary_method": "sgld"}
    result = fake_result("a", ["supported"], config=config, n_train=1257, wall_time_s=123.0)
    sentence = run_sentence(result)
    for part in ("1,257 training images of scikit-learn's 8x8 handwritten digits",
                 "10% of their labels flipped", "an MLP of width 64", "16 runs of noisy SGD",
                 "1,024 models", "about 102 unlearned", "16 unlearned against 16 retrained",
                 "$K = 400$", "2.05 min"):
        assert part in sentence, part
    no_points = run_sentence(replace(result, config={**config, "point_models": 0}))
    assert "per point" not in no_points and "per group" in no_points
    assert f"- {sentence}" in landing_text([result], None)
    assert "reused" not in sentence
    assert "stages computed by an earlier run and reused" in run_sentence(
        replace(result, stages_reused=True))


def test_a_run_that_reused_every_stage_is_told_apart():
    from punl.publish.landing import _all_reused
    assert _all_reused({"stages": {"train": "reused", "score": "reused", "unlearn": "reused"}})
    assert not _all_reused({"stages": {"train": "computed", "score": "reused"}})
    assert not _all_reused({"stages": {}}) and not _all_reused({})


def test_markup_in_a_users_values_never_reaches_the_page_live(tmp_path):
    """A --set value holding HTML, script and backticks: every place the chapter and the
    provenance box print it escapes the markup and keeps the code span closed."""
    from punl.publish.book import chapter_title, provenance_box
    from punl.publish.markdown import md_cell, md_code
    from punl.publish.plan import RunPlan
    overrides = [f"data_root={MARKUP}"]
    plan = RunPlan.make("digits-quick", overrides, tmp_path / "out", tmp_path / "book")
    box = provenance_box(plan, {"train": "0123456789ab"}, None)
    title = chapter_title(plan.name, {"data_root": MARKUP})
    cell = md_cell(MARKUP)
    for text in (title, cell):
        assert "<img" not in text and "<script" not in text and "&lt;img" in text
    code = md_code(overrides[0])
    assert code.startswith("```") and code.endswith("```") and "``c``" in code
    assert code in box                     # the override sits inside one closed code span
    assert md_code("plain") == "`plain`" and md_code("`x`") == "`` `x` ``"


def test_the_front_figure_is_the_first_per_point_study_and_groups_only_across_runs():
    from punl.publish.landing import front_figures
    plain, pointed = fake_result("a", ["supported"]), fake_result("b", ["supported"], points="P")
    assert front_figures([plain, pointed]) == (pointed, True)
    assert front_figures([pointed]) == (pointed, False)
    assert front_figures([plain]) == (None, True)
    assert front_figures([]) == (None, False)


def test_the_front_page_gives_the_two_commands_with_their_measured_times():
    from punl.publish.landing import commands_text, duration_text, read_timings
    assert duration_text(228) == "3 min 48 s" and duration_text(45.4) == "45 s"
    timings = pd.DataFrame({"command": ["make book", "make test-all"], "seconds": [228, 1688],
                            "what": ["installed", "from a clean clone"],
                            "measured": ["2026-12-03", "2026-12-04"]})
    text = commands_text(timings)
    lines = text[text.index("```bash"):].splitlines()
    assert lines[1].startswith("make book ") and lines[1].endswith(", 3 min 48 s")
    assert lines[2].startswith("make test-all ") and lines[2].endswith(", 28 min 8 s")
    assert "`make test-all`: from a clean clone (2026-12-04)" in text
    bare = commands_text(None)
    assert "make book" in bare and "make test-all" in bare and " min " not in bare
    assert read_timings(REPO) is not None      # the repository's own, which the README quotes
