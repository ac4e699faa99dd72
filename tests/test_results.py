"""The measured results the README reports for runs outside `make book`: each row of its
Fashion-MNIST table says what the kept claims table says (verdict, power and every number)."""
import json
import re

import pandas as pd
import pytest

from bookutil import REPO
from punl.analysis.findings import verdict_text
from punl.analysis.measures import percent

KEPT = REPO / "results" / "fashion-mnist"


def readme_rows(heading: str) -> dict[str, list[str]]:
    """The cells of the first table under ``heading``, by the claim id that starts each row."""
    text = (REPO / "README.md").read_text()
    section = text[text.index(heading):]
    rows = re.findall(r"^\| (\d+b?)\. [^|]+\|(.+)\|$", section.split("\n\n###")[0], re.M)
    return {claim: [c.strip() for c in cells.split("|")] for claim, cells in rows}


@pytest.fixture(scope="module")
def kept():
    table = pd.read_csv(KEPT / "claims.csv", dtype={"id": str})
    table["id"] = table["id"].str.split().str[0]          # "5 (finetune)" is row 5
    return table.set_index("id")


def numbers(text: str) -> list[str]:
    """Every number written in ``text`` (thousands separators and signs kept)."""
    return re.findall(r"-?\d[\d,]*\.?\d*(?:e-?\d+)?", text)


def test_every_claim_of_the_kept_table_is_a_row(kept):
    assert set(readme_rows("### Real images: Fashion-MNIST")) == set(kept.index)


def test_each_rows_verdict_and_power_are_the_tables(kept):
    for claim, (measured, verdict, power) in readme_rows(
            "### Real images: Fashion-MNIST").items():
        row = kept.loc[claim]
        assert verdict.startswith(verdict_text(row.verdict, bool(row.fragile))), claim
        assert power == percent(row.power), claim


def test_each_number_a_row_states_is_in_the_table(kept):
    """Every number of the measured column is one the table's row writes (its value or
    interval text, or its number as a percentage), or the run's point count."""
    config = json.loads((KEPT / "run.json").read_text())["config"]
    for claim, (measured, _, _) in readme_rows("### Real images: Fashion-MNIST").items():
        row = kept.loc[claim]
        written = set(numbers(f"{row.value} {row.interval} {percent(row.number)}"))
        written |= {f"{config['n_train']:,}"}
        for number in numbers(measured):
            assert number in written, (claim, number, sorted(written))


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
