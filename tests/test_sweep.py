"""Sweeps: grid parsing, validation before anything runs, local and dask execution."""
import pandas as pd
import pytest
import torch

from punl.publish.book import build_book, generate_toc
from punl.core.config import ConfigError
from punl.commands.sweep import SWEEP_CLAIMS, grid_points, parse_grid, run_sweep

from test_book import FIRST_TWO, TINY, make_book_root, make_notebooks_dir

BASE = [o for o in TINY if not o.startswith("name=")]


def test_parse_grid_reads_yaml_values():
    grid = parse_grid(["label_noise=0,0.1", "orders=[2,8],[4]", "n_train=null,200"])
    assert grid == {"label_noise": [0, 0.1], "orders": [[2, 8], [4]], "n_train": [None, 200]}


def test_parse_grid_rejects_unknown_keys_listing_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key\(s\) \['sigmaa'\].*valid keys:.*sigma"):
        parse_grid(["sigmaa=1,2"])
    with pytest.raises(ConfigError, match="key=v1,v2"):
        parse_grid(["sigma"])


def test_grid_points_are_the_cartesian_product_with_names():
    points = grid_points("q", {"sigma": [0.5, 1], "dataset": ["digits", "synthetic"]})
    assert [p["point"] for p in points] == [
        "q-sigma-0.5-dataset-digits", "q-sigma-0.5-dataset-synthetic",
        "q-sigma-1-dataset-digits", "q-sigma-1-dataset-synthetic"]
    assert points[0]["overrides"] == ["sigma=0.5", "dataset=digits",
                                      "name=q-sigma-0.5-dataset-digits"]


def test_bad_value_stops_the_sweep_before_anything_runs(tmp_path):
    with pytest.raises(ConfigError, match="sigma"):
        run_sweep("digits-quick", {"sigma": [1.0, -1.0]}, out_root=tmp_path / "out",
                  book_root=tmp_path, progress=False)
    with pytest.raises(ConfigError, match="valid keys"):
        run_sweep("digits-quick", {"nope": [1]}, out_root=tmp_path / "out", book_root=tmp_path)
    assert not (tmp_path / "out").exists() and not (tmp_path / "book").exists()


@pytest.mark.slow
def test_local_sweep_writes_table_and_a_chapter_that_builds(tmp_path):
    root = make_book_root(tmp_path / "root")
    table = run_sweep("digits-quick", {"label_noise": [0.0, 0.1]}, workers=2, overrides=BASE,
                      out_root=tmp_path / "out", name="noise", book_root=root, progress=False,
                      notebooks_dir=make_notebooks_dir(tmp_path / "templates", FIRST_TWO))
    assert list(table.status) == ["ran", "ran"], table.error.tolist()
    assert list(table.retries) == [0, 0]
    assert (tmp_path / "out/sweep.parquet").exists()
    assert pd.read_parquet(tmp_path / "out/sweep.parquet").point.tolist() == table.point.tolist()
    chapter = root / "book/sweeps/noise"
    assert (chapter / "sweep.png").exists() and "sweep.png" in (chapter / "index.md").read_text()
    claims = pd.read_parquet(chapter / SWEEP_CLAIMS)
    assert set(claims.point) == set(table.point) and claims.label_noise.nunique() == 2
    assert claims.groupby("point").id.apply(lambda ids: ids.is_unique).all()
    assert (claims.value.str.len() > 0).all() and claims.neighbours.notna().all()
    generate_toc(root)
    html = build_book(root) / "book/sweeps/noise/index.html"
    assert "<img" in html.read_text()


@pytest.mark.slow
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_dask_sweep_reports_a_broken_point_and_finishes_the_other(tmp_path):
    """The device is checked where the points run: a cuda point fails on a worker without a
    GPU and is reported; the other point runs."""
    from distributed import LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=":0") as cluster:
        table = run_sweep("digits-quick", {"device": ["cpu", "cuda"]},
                          scheduler=cluster.scheduler_address, overrides=BASE,
                          out_root=tmp_path / "out", name="data", book_root=tmp_path,
                          progress=False, notebooks_dir=make_notebooks_dir(tmp_path / "nb", FIRST_TWO))
    status = dict(zip(table.device, table.status))
    assert status == {"cpu": "ran", "cuda": "failed"}
    error = table.set_index("device").error["cuda"]
    assert "ConfigError" in error and "device" in error
    assert (tmp_path / "out/digits-quick-device-cpu/published/scores.parquet").exists()
    assert "failed" in (tmp_path / "book/sweeps/data/index.md").read_text()


def test_verdict_grid_names_its_columns_by_the_swept_value():
    from punl.commands.sweep import verdict_grid
    claims = pd.DataFrame({"claim": ["1. a", "1. a", "2. b"], "sigma": [0.5, 1.0, 0.5],
                           "verdict": ["supported", "inconclusive", "not supported"],
                           "fragile": [False, True, False]})
    grid = verdict_grid(claims, "sigma")
    assert list(grid.columns) == ["sigma = 0.5", "sigma = 1"]
    assert grid.loc["1. a", "sigma = 1"] == "inconclusive, fragile"
    by_point = verdict_grid(claims.rename(columns={"sigma": "point"}).assign(
        point=["p1", "p2", "p1"]), "point")
    assert list(by_point.columns) == ["p1", "p2"]


def test_replication_counts_each_verdict_over_seeds_and_the_front_page_reads_it(tmp_path):
    from punl.publish.landing import REPLICATION, replication_for, replication_note
    from punl.commands.sweep import replication_table, replication_text
    claims = pd.DataFrame({
        "id": ["1"] * 3 + ["2"] * 3, "claim": ["1. a"] * 3 + ["2. b"] * 3, "measure": "m",
        "number": [0.8, 0.9, 0.7, 1.0, -2.0, 3.0],
        "verdict": ["supported", "supported", "inconclusive", "not supported", "supported",
                    "supported"],
        "power": [0.9, 0.95, 0.7, 0.5, 0.6, 0.7], "fragile": [False, True, False] * 2,
        "point": ["s0", "s1", "s2"] * 2, "seed": [0, 1, 2] * 2})
    table = replication_table(claims, "digits-quick")
    one = table.set_index("claim").loc["1. a"]
    assert (one.runs, one.supported, one.inconclusive, one["not supported"], one.fragile) == \
        (3, 2, 1, 0, 1)
    assert (one.number_min, one.number_median, one.number_max) == pytest.approx((0.7, 0.8, 0.9))
    assert one.power_median == pytest.approx(0.9)
    text = replication_text(table)
    assert "- 1: supported 2 of 3, inconclusive 1 of 3 (fragile in 1)" in text
    folder = tmp_path / "book" / "sweeps" / "seeds"
    folder.mkdir(parents=True)
    table.to_parquet(folder / REPLICATION, index=False)
    found = replication_for(tmp_path, "digits-quick")
    assert len(found) == 2 and replication_for(tmp_path, "other") is None
    assert replication_note(found, "2. b") == "; over 3 seeds: supported 2, not supported 1"
    one_seed = replication_table(claims[claims.seed == 0], "digits-quick")
    assert replication_note(one_seed, "1. a") == "; over 1 seed: supported 1"


def test_a_point_started_twice_in_one_sweep_counts_a_retry(tmp_path, monkeypatch):
    """A worker lost mid-point makes the scheduler start the point again: the second start
    reads the first from the point's attempts file, so the table records one retry and the
    point as ``ran`` although the lost attempt left every stage complete; a later sweep (another
    invocation) starting it once records none."""
    from punl.commands import sweep
    every_stage_reused = {"stages": {"train": "reused", "score": "reused", "unlearn": "reused"}}
    monkeypatch.setattr(sweep, "run_config", lambda *a, **k: every_stage_reused)
    point = tmp_path / "point"
    assert sweep.record_attempt(point, "first-sweep") == 1      # the lost worker's start
    again = sweep.run_point("digits-quick", [], str(point), str(tmp_path / "nb"),
                            invocation="first-sweep")
    assert again["retries"] == 1 and again["status"] == "ran"
    later = sweep.run_point("digits-quick", [], str(point), str(tmp_path / "nb"),
                            invocation="second-sweep")
    assert later["retries"] == 0 and later["status"] == "reused"
    assert not point.exists()          # the point's own folder holds only what a run writes
    lines = (tmp_path / sweep.ATTEMPTS / "point.jsonl").read_text().splitlines()
    assert len(lines) == 3 and all('"host"' in line for line in lines)


def test_an_up_to_date_point_is_reused_unless_rerun(tmp_path, monkeypatch):
    """A point whose run is up to date counts as ``reused`` (its record still says how its
    stages were made); ``rerun`` reaches the run."""
    from punl.commands import sweep
    calls = []

    def up_to_date(*args, rerun=False, **kwargs):
        calls.append(rerun)
        return {"stages": {"train": "computed", "score": "computed"}, "up_to_date": not rerun}

    monkeypatch.setattr(sweep, "run_config", up_to_date)
    kept = sweep.run_point("digits-quick", [], str(tmp_path / "p"), str(tmp_path / "nb"))
    again = sweep.run_point("digits-quick", [], str(tmp_path / "p"), str(tmp_path / "nb"),
                            rerun=True)
    assert (kept["status"], again["status"], calls) == ("reused", "ran", [False, True])


def test_progress_within_a_point_counts_its_complete_stages(tmp_path):
    from punl.commands.sweep import point_progress
    from punl.core.store import COMPLETE
    assert point_progress(tmp_path, 4) == 0
    for stage in ("train-abc", "score-def"):
        (tmp_path / "artifacts" / stage).mkdir(parents=True)
        (tmp_path / "artifacts" / stage / COMPLETE).write_text("{}")
    (tmp_path / "artifacts" / "pointwise-ghi").mkdir()        # started, not complete
    assert point_progress(tmp_path, 4) == pytest.approx(2 / 5)
