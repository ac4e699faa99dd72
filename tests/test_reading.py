"""Tables for reading: rounded, headers in words, long tables cut in the page with every row one
click away, at full precision."""
import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pandas as pd
import pytest

from punl.publish.reading import HEADERS, MAX_ROWS, header, table


class Cells(HTMLParser):
    """The text of every header and body cell of an HTML fragment, and its links."""

    def __init__(self):
        super().__init__()
        self.headers, self.cells, self.links, self._in = [], [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag in ("th", "td"):
            self._in = (tag, attrs.get("class", ""))
            (self.headers if tag == "th" else self.cells).append("")
        if tag == "a":
            self.links.append(attrs)

    def handle_endtag(self, tag):
        if tag in ("th", "td"):
            self._in = None

    def handle_data(self, data):
        if self._in:
            (self.headers if self._in[0] == "th" else self.cells)[-1] += data


def cells(html: str) -> Cells:
    parser = Cells()
    parser.feed(html)
    return parser


def test_numbers_are_rounded_and_renamed_columns_appear_once():
    frame = pd.DataFrame({"group": ["q0", "q1"], "accuracy": [0.84912, 0.0724],
                          "steps": [170, 400], "flag": [True, False]})
    html = table(frame, steps_to="x").to_html()
    assert "0.849" in html and "0.84912" not in html and "0.0724" in html
    assert ">170<" in html and ">True<" in html
    assert table(frame, accuracy="attack accuracy").to_html().count("attack accuracy") == 1


def test_headers_are_words():
    frame = pd.DataFrame({"spearman_p": [0.01], "log_likelihood_line": [-3.2],
                          "steps_to_unlearn": [12]}).rename_axis("score_name")
    found = cells(table(frame, index=True).to_html())
    shown = [h.strip() for h in found.headers if h.strip()]
    assert "p (Spearman)" in shown and "line: log-likelihood" in shown
    assert "steps to unlearn" in shown and "score name" in shown
    assert not [h for h in shown if "_" in h]
    assert header("steps_mae") == HEADERS["steps_mae"] and header(3) == 3


def test_rows_that_are_quantities_are_put_in_words_only_when_asked():
    frame = pd.DataFrame({"sgd": [0.5, 12.0]}, index=["spearman", "log_a"])
    asked = cells(table(frame, index=True, index_in_words=True).to_html()).headers
    assert "Spearman ρ" in asked and "log law: a" in asked
    assert "log_a" in cells(table(frame, index=True).to_html()).headers


def test_columns_of_a_pivot_are_put_in_words_at_every_level():
    frame = pd.DataFrame({"score": ["a", "a", "b"], "requests": ["all", "top", "all"],
                          "steps_mae": [1.0, 2.0, 3.0]})
    pivot = frame.pivot_table(index="score", columns="requests", values=["steps_mae"])
    shown = [h.strip() for h in cells(table(pivot, index=True).to_html()).headers]
    assert "steps: mean absolute error" in shown and "all" in shown and "top" in shown


def test_a_long_table_shows_its_first_rows_and_keeps_every_row_one_click_away():
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"group": [f"q{i}" for i in range(31)], "value": rng.random(31)})
    html = table(frame, csv_name="groups").to_html()
    page, details = html.split("<details>")
    assert len(cells(page).cells) == 2 * MAX_ROWS           # two columns of the first rows
    assert "The first 12 of 31 rows" in details
    assert len(cells(details.split("</details>")[0]).cells) == 2 * 31
    link = next(a for a in cells(html).links if a.get("class") == "table-csv")
    assert link["download"] == "groups.csv"
    data = re.fullmatch(r"data:text/csv;charset=utf-8;base64,(.+)", link["href"]).group(1)
    back = pd.read_csv(io.BytesIO(base64.b64decode(data)))
    assert list(back.group) == list(frame.group)
    # a float's shortest repr reads back to the same double on any platform (IEEE 754)
    np.testing.assert_allclose(back.value, frame.value, rtol=1e-15)


def test_a_short_table_has_no_fold():
    html = table(pd.DataFrame({"a": range(MAX_ROWS)})).to_html()
    assert "<details>" not in html and "table-csv" not in html
    assert html.startswith('<div class="reading-table">')


def test_max_rows_below_one_is_refused_by_name():
    with pytest.raises(ValueError, match="max_rows"):
        table(pd.DataFrame({"a": [1]}), max_rows=0)


def test_repeated_row_labels_are_shown_and_clashing_headers_refused():
    frame = pd.concat([pd.DataFrame({"a": [1.5]}), pd.DataFrame({"a": [2.5]})])   # labels 0, 0
    assert len(cells(table(frame).to_html()).cells) == 2
    with pytest.raises(ValueError, match="names: two columns would both be headed count"):
        table(pd.DataFrame({"n": [1], "count": [2]}))


def test_a_large_table_keeps_every_row_in_its_fold():
    """More cells than the Styler renders by default (``styler.render.max_elements``, lowered
    here so that the table stays small): every row is still in the fold."""
    frame = pd.DataFrame({"v": np.arange(3_000) % 7})
    with pd.option_context("styler.render.max_elements", 1_000):
        html = table(frame).to_html()
    assert html.split("<details>")[1].count("<td") == 3_000
