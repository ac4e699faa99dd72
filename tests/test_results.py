"""The measured results the README reports: each row of its digits-quick and Fashion-MNIST
tables says what the kept claims table of that run says (verdict, power and every number)."""
import json
import re

import pandas as pd
import pytest

from bookutil import REPO
from punl.analysis.claims import INCONCLUSIVE, NOT_SUPPORTED, SUPPORTED
from punl.analysis.findings import verdict_text
from punl.analysis.measures import percent

#: Each kept run's folder under results/, with the heading of its README section.
KEPT_RUNS = {"digits-quick": "## What the quick configuration finds",
             "fashion-mnist": "### Real images: Fashion-MNIST"}


def readme_rows(heading: str) -> dict[str, list[str]]:
    """The cells of the first table under ``heading``, by the claim id that starts each row."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    section = re.split(r"\n\n##", section[len(heading):])[0]
    rows = re.findall(r"^\| (\d+b?)\. [^|]+\|(.+)\|$", section, re.M)
    return {claim: [c.strip() for c in cells.split("|")] for claim, cells in rows}


@pytest.fixture(scope="module", params=list(KEPT_RUNS))
def kept(request):
    """(the README heading of the run, its kept claims table by claim id, its run.json)."""
    folder = REPO / "results" / request.param
    table = pd.read_csv(folder / "claims.csv", dtype={"id": str})
    table["id"] = table["id"].str.split().str[0]          # "5 (finetune)" is row 5
    return (KEPT_RUNS[request.param], table.set_index("id"),
            json.loads((folder / "run.json").read_text()))


def numbers(text: str) -> list[str]:
    """Every number written in ``text`` (thousands separators and signs kept)."""
    return re.findall(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", text)


def test_every_claim_of_the_kept_table_is_a_row(kept):
    heading, table, _ = kept
    assert set(readme_rows(heading)) == set(table.index)


def test_each_rows_verdict_and_power_are_the_tables(kept):
    heading, table, _ = kept
    for claim, (measured, verdict, power) in readme_rows(heading).items():
        row = table.loc[claim]
        assert verdict.startswith(verdict_text(row.verdict, bool(row.fragile))), claim
        assert power == percent(row.power), claim


def test_each_number_a_row_states_is_in_the_table(kept):
    """Every number of the measured column is one the table's row writes (its value or
    interval text, or its number as a percentage), or the run's point count where its
    configuration sets one."""
    heading, table, record = kept
    for claim, (measured, _, _) in readme_rows(heading).items():
        row = table.loc[claim]
        written = set(numbers(f"{row.value} {row.interval} {percent(row.number)}"))
        n_train = record["config"]["n_train"]
        written |= {f"{n_train:,}"} if n_train else set()
        for number in numbers(measured):
            assert number in written, (claim, number, sorted(written))


#: Each kept replication over seeds (a ``punl sweep CONFIG --grid seed=...``: its chapter's
#: replication table and every point's claims, under results/<sweep>/) with the heading of its
#: README section.
KEPT_REPLICATIONS = {"digits-quick-seed": "### digits-quick over seeds",
                     "fashion-mnist-seed": "### Fashion-MNIST over seeds"}

VERDICTS = (SUPPORTED, NOT_SUPPORTED, INCONCLUSIVE)


@pytest.fixture(scope="module", params=list(KEPT_REPLICATIONS))
def replicated(request):
    """(the README heading, the kept replication table, every point's claims, each point's
    first run)."""
    folder = REPO / "results" / request.param
    table = pd.read_csv(folder / "replication.csv", dtype={"id": str})
    claims = pd.read_csv(folder / "claims.csv", dtype={"id": str})
    return KEPT_REPLICATIONS[request.param], table, claims, pd.read_csv(folder / "sweep.csv")


def test_the_kept_replication_is_the_packages_count_of_the_points_claims(replicated):
    """The replication table is what :func:`punl.commands.sweep.replication_table` makes of the
    kept claims of the sweep's points (one run per seed, each seed once)."""
    from punl.commands.sweep import replication_table
    _, table, claims, points = replicated
    assert claims.groupby("id").seed.apply(lambda s: s.is_unique and len(s) > 1).all()
    assert (points.status == "ran").all() and set(points.seed) == set(claims.seed)
    again = replication_table(claims, table.config.iloc[0])
    pd.testing.assert_frame_equal(again, table, check_dtype=False, rtol=1e-9)


def test_each_replication_row_states_the_kept_counts_numbers_and_power(replicated):
    """Each README row: the verdict counts (in the book's order: supported, not supported,
    inconclusive) and fragile count, the number's median [min, max] and the median power of
    that claim in the kept table; the table's heading names the seeds."""
    from punl.analysis.measures import fmt
    heading, table, _, _ = replicated
    table = table.assign(id=table["id"].str.split().str[0]).set_index("id")
    rows = readme_rows(heading)
    assert set(rows) == set(table.index)
    section = (REPO / "README.md").read_text().split(heading)[1]
    header = re.search(r"^\|.*\|$", section, re.M).group(0)
    assert f"| verdicts over {table.runs.iloc[0]} seeds |" in header
    for claim, (verdicts, number, power) in rows.items():
        row = table.loc[claim]
        stated = [(v, int(n)) for v, n in
                  re.findall(r"(not supported|supported|inconclusive) (\d+)", verdicts)]
        assert stated == [(v, int(row[v])) for v in VERDICTS if row[v]], claim
        fragile = re.search(r"\(fragile in (\d+)\)", verdicts)
        assert (int(fragile.group(1)) if fragile else 0) == row.fragile, claim
        stated = re.search(r"(\S+) \[(\S+), (\S+)\]", number)
        assert stated and list(stated.groups()) == [fmt(row[f"number_{s}"])
                                                    for s in ("median", "min", "max")], claim
        assert power == percent(row.power_median), claim


def test_the_readmes_set_up_times_are_the_kept_timings():
    """The README's times of its two set-up commands are the ones in results/timings.csv (the
    front page quotes that file), written as ``3 min 48 s``."""
    from punl.publish.landing import duration_text, read_timings
    timings = read_timings(REPO).set_index("command")
    text = (REPO / "README.md").read_text()
    rows = {"make book": r"^\| `make book` \(the environment installed[^|]*\| \*\*([^*]+)\*\*",
            "make test-all": r"^\| `\.ci/run` from a clean clone[^|]*\| \*\*([^*]+)\*\*"}
    for command, pattern in rows.items():
        stated = re.search(pattern, text, re.M)
        assert stated, command
        assert stated.group(1) == duration_text(float(timings.loc[command, "seconds"])), command


def test_the_readmes_forecast_table_is_the_kept_comparison():
    """Each row of the README's table of ``punl plan`` against measured stage times states the
    predicted and measured times and the ratios that results/plan.csv (written by ``python -m
    benchmarks plan --record``) holds for that configuration."""
    from punl.publish.landing import duration_text
    kept = pd.read_csv(REPO / "results/plan.csv").set_index(["config", "stage"])
    text = (REPO / "README.md").read_text()
    section = text[text.index("**The forecast against measured runs.**"):]
    rows = re.findall(r"^\| `([\w-]+)` \|(.+)\|$", section.split("\n\n")[1], re.M)
    assert {name for name, _ in rows} == set(kept.index.get_level_values("config"))
    for name, cells in rows:
        cells = [c.strip() for c in cells.split("|")]
        total = kept.loc[(name, "all four")]
        assert cells[1] == duration_text(total["predicted (s)"]), name
        assert cells[2] == duration_text(total["measured (s)"]), name
        ratios = [f"{kept.loc[(name, s), 'ratio']:.2f}" if kept.loc[(name, s), "measured (s)"]
                  >= 1 else "-" for s in ("all four", "pointwise", "unlearn", "train")]
        assert cells[3:7] == ratios, name
