"""Tables for reading: what a chapter shows when it shows a table.

:func:`table` turns a data frame into a :class:`ReadingTable`: numbers rounded to a few
significant digits (:func:`punl.analysis.measures.fmt`) and right-aligned, headers in words
(:data:`HEADERS`, else the column name with its underscores as spaces), at most
:data:`MAX_ROWS` rows in the page. A longer table shows its first rows, and the whole table sits
one click below them (a ``<details>`` element) with a CSV download that carries every row at
full precision, so nothing a reader may want is lost and the page stays short. The book's
stylesheet pads the cells and lets a table wider than the column scroll inside its own box
instead of widening the page.
"""
from __future__ import annotations

import base64
import hashlib
import html
from dataclasses import dataclass

import pandas as pd

#: Headers in words for the columns whose names are not words.
HEADERS = {
    "spearman": "Spearman ρ", "spearman_p": "p (Spearman)",
    "log_a": "log law: a", "log_b": "log law: b", "log_likelihood_log": "log law: log-likelihood",
    "line_slope": "line: slope", "log_likelihood_line": "line: log-likelihood",
    "log_log_slope": "slope of log A on log P", "slope_low": "slope, 95% low",
    "slope_high": "slope, 95% high", "shared_rate_p": "p (shared rate)",
    "low": "95% low", "high": "95% high",
    "acc_p_over": "attack accuracy, P ranks higher",
    "acc_baseline_over": "attack accuracy, baseline ranks higher",
    "steps_p_over": "steps, P ranks higher", "steps_baseline_over": "steps, baseline ranks higher",
    "steps_spearman": "steps: Spearman ρ", "steps_coverage": "steps: 90% coverage",
    "steps_mae": "steps: mean absolute error", "steps_spearman_p": "steps: p (Spearman)",
    "amplitude_spearman": "amplitude: Spearman ρ", "amplitude_coverage": "amplitude: 90% coverage",
    "p_given_baseline": "partial ρ given the baseline", "mae": "mean absolute error",
    "n": "count", "std": "standard deviation", "25%": "25th percentile",
    "50%": "median", "75%": "75th percentile", "test_acc": "test accuracy",
    "train_acc": "training accuracy",
}
#: The most rows a table shows in the page; the rest are one click away.
MAX_ROWS = 12


def header(name) -> str:
    """A column or index name in words: :data:`HEADERS`, else underscores as spaces."""
    if not isinstance(name, str):
        return name
    return HEADERS.get(name, name.replace("_", " "))


def _numeric(frame: pd.DataFrame) -> list:
    return [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])
            and not pd.api.types.is_bool_dtype(frame[c])]


@dataclass(frozen=True)
class ReadingTable:
    """A table as a chapter shows it (built by :func:`table`); Jupyter renders it through
    :meth:`_repr_html_`."""

    frame: pd.DataFrame      # every row, headers already in words
    digits: int
    index: bool
    max_rows: int
    name: str                # the CSV file's name, without ``.csv``

    def _styled_html(self, frame: pd.DataFrame) -> str:
        from ..analysis.measures import fmt
        if not self.index:
            frame = frame.reset_index(drop=True)       # the Styler needs unique row labels
        numeric = _numeric(frame)
        # the HTML ids from the table's name and content, not at random: a page is the same
        # whenever its notebook runs
        uuid = hashlib.sha1(f"{self.name}\n{frame.to_csv()}".encode()).hexdigest()[:10]
        styled = (frame.style.set_uuid(uuid)
                  .format(lambda v: fmt(v, self.digits), subset=numeric)
                  .set_properties(subset=numeric, **{"text-align": "right",
                                                     "white-space": "nowrap"}))
        if self.index:
            styled = styled.format_index(lambda v: fmt(v, self.digits))
        else:
            styled = styled.hide(axis="index")
        cells = max(frame.size, 1) * 2               # every cell shown: never cut by the Styler
        with pd.option_context("styler.render.max_elements", max(cells, 262_144)):
            return styled.to_html()

    def csv_link(self) -> str:
        """A link that downloads every row at full precision, with no server behind it."""
        data = base64.b64encode(self.frame.to_csv(index=self.index).encode()).decode()
        return (f'<a class="table-csv" download="{html.escape(self.name)}.csv" '
                f'href="data:text/csv;charset=utf-8;base64,{data}">the whole table as CSV</a>')

    def to_html(self) -> str:
        rows = len(self.frame)
        if rows <= self.max_rows:
            body = self._styled_html(self.frame)
        else:
            body = (self._styled_html(self.frame.head(self.max_rows))
                    + f"<details><summary>The first {self.max_rows} of {rows:,} rows; all of "
                      f"them</summary>{self._styled_html(self.frame)}</details>"
                    + f"<p class=\"table-more\">Or {self.csv_link()}.</p>")
        return f'<div class="reading-table">{body}</div>'

    def _repr_html_(self) -> str:
        return self.to_html()


def table(frame: pd.DataFrame, digits: int = 3, index: bool = False, *,
          max_rows: int = MAX_ROWS, csv_name: str = "table", index_in_words: bool = False,
          **names: str) -> ReadingTable:
    """``frame`` for reading: numbers to ``digits`` significant digits, the index hidden unless
    ``index``, columns renamed by ``names`` (``steps_to_unlearn="steps to unlearn"``) and every
    other header put in words by :func:`header` (the index's labels too where
    ``index_in_words``: a table whose rows are quantities); at most ``max_rows`` rows in the
    page, the whole table one click away (``csv_name`` names its CSV file)."""
    if max_rows < 1:
        raise ValueError(f"max_rows: at least 1 row must show, got {max_rows}")
    frame = frame.rename(columns=names).rename(columns=header)
    if index_in_words:
        frame = frame.rename(index=header)
    repeated = sorted({str(c) for c in frame.columns if list(frame.columns).count(c) > 1})
    if repeated:
        raise ValueError(f"names: two columns would both be headed {', '.join(repeated)}; "
                         "rename one of them")
    frame = frame.rename_axis(index=[header(n) for n in frame.index.names],
                              columns=[header(n) for n in frame.columns.names])
    return ReadingTable(frame, digits, index, max_rows, csv_name)
